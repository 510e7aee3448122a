"""Contract checks: a vitdeploy plugin node driven through TensorRT's real Python plugin layer.

No TensorRT can run here, but TensorRT's plugin layer (`tensorrt.plugin`, "QDP") is pure
Python and ships in the bindings wheel (`tensorrt-cu13-bindings==11.4.0.106`, a dev
dependency). `plugin_layer()` loads that real package as `tensorrt.plugin` over
`trt_standin` (the few compiled-core names it touches), and `drive()` takes one plugin node of
a rewritten ONNX graph through exactly the calls TensorRT makes:

  ONNX parser (onnx-tensorrt `FallbackPluginImporter` / `loadFields` / the V3Quick
  `createPlugin`): the face's `register()`; `get_creator(op_type, plugin_version,
  plugin_namespace)`; fields in the creator's `field_names` order from the node's attributes
  (ONNX INT -> INT32, FLOAT -> FLOAT32, STRING -> CHAR; absent ones skipped);
  `create_plugin(op_type, namespace, fields, BUILD, PREFER_AOT)` (vitdeploy's engine sets
  PREFER_AOT_PYTHON_PLUGINS).
  Builder (pyPlugin.cpp's IPluginV3QuickAOTBuild trampolines): `get_output_data_types`,
  `get_output_shapes` (symbolic batch), `get_supported_format_combinations`,
  `configure_plugin` with the combination matching the strongly typed network's types,
  `get_valid_tactics`, then per tactic `set_tactic`, `get_launch_params` (the face's
  `aot_impl`) and `get_kernel`.

`problems()` then checks what came back against TensorRT's AOT launcher (`vitdeploy.plugins.ptx`).
These are contract checks with TensorRT's plugin layer: they build no engine and prove nothing
about libnvinfer itself (see docs/architecture.md, "What is proven where").

A plugin takes part by being in `vitdeploy.plugins.TRT_FACES` with a face module that exposes
`SPEC` and `register()`; graphs for it are added in `vitdeploy.plugins.contract_graphs`.
"""
from __future__ import annotations

import collections
import contextlib
import importlib
import importlib.machinery
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from vitdeploy.errors import VitdeployError

BINDINGS = "tensorrt-cu13-bindings==11.4.0.106"


def plugin_layer_dir() -> Path:
    """tensorrt_bindings/plugin of the installed bindings wheel (found without importing its .so)."""
    spec = importlib.util.find_spec("tensorrt_bindings")
    if spec is None or not spec.submodule_search_locations:
        raise VitdeployError("TensorRT's Python plugin layer is not installed (the contract checks need it)",
                             f"pip install '{BINDINGS}' (part of vitdeploy's dev extra)")
    path = Path(list(spec.submodule_search_locations)[0]) / "plugin"
    if not (path / "_lib.py").is_file():
        raise VitdeployError(f"{path} does not hold tensorrt.plugin's sources", f"reinstall {BINDINGS}")
    return path


@dataclass
class PluginLayer:
    trt: Any  # the stand-in `tensorrt` module
    trtp: Any  # TensorRT's real `tensorrt.plugin`


@contextlib.contextmanager
def plugin_layer() -> Iterator[PluginLayer]:
    """TensorRT's real `tensorrt.plugin` over the stand-in core, as `import tensorrt(.plugin)` sees it
    inside the block; whatever `tensorrt` was imported before is put back afterwards."""
    from vitdeploy.plugins import trt_standin

    layer_dir = plugin_layer_dir()
    saved = {k: v for k, v in sys.modules.items() if k == "tensorrt" or k.startswith("tensorrt.")}
    for k in saved:
        del sys.modules[k]
    trt = trt_standin.module()
    trt.__path__ = [str(layer_dir.parent)]  # `tensorrt.plugin` resolves to the wheel's plugin package
    # a real spec: code that probes importlib.util.find_spec("tensorrt") (torch._dynamo does) must not trip
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None, is_package=True)
    trt.__spec__.submodule_search_locations = list(trt.__path__)
    sys.modules["tensorrt"] = trt
    try:
        trtp = importlib.import_module("tensorrt.plugin")
        yield PluginLayer(trt, trtp)
    finally:
        for k in [k for k in sys.modules if k == "tensorrt" or k.startswith("tensorrt.")]:
            del sys.modules[k]
        sys.modules.update(saved)
        from vitdeploy.machine import tensorrt_version

        tensorrt_version.cache_clear()  # nothing may remember the stand-in as "TensorRT"


# --- plugin nodes of an ONNX graph -----------------------------------------------------------------


@dataclass
class TensorInfo:
    name: str
    elem_type: int  # onnx.TensorProto data type
    dims: tuple  # ints and symbolic names ("batch")
    constant: bool = False  # an initializer (TensorRT sees a constant tensor)


@dataclass
class PluginNode:
    """One distinct plugin node of a graph (nodes with equal attributes and input shapes collapse)."""

    op: str
    namespace: str
    version: str
    attrs: dict  # name -> onnx.AttributeProto (plugin_* included, as in the file)
    inputs: list[TensorInfo]
    outputs: list[str]
    graph: str = ""
    count: int = 1
    onnx_node: Any = None  # the NodeProto (first of its kind)
    constants: dict = field(default_factory=dict)  # initializer name -> numpy, for one-node runs

    def attr_values(self) -> dict:
        import onnx

        out = {}
        for k, a in self.attrs.items():
            v = onnx.helper.get_attribute_value(a)
            out[k] = v.decode() if isinstance(v, bytes) else v
        return out

    @property
    def key(self) -> str:
        vals = {k: v for k, v in self.attr_values().items() if not k.startswith("plugin_")}
        shapes = "/".join("x".join(map(str, t.dims)) for t in self.inputs)
        return f"{self.op}({', '.join(f'{k}={v:g}' if isinstance(v, float) else f'{k}={v}' for k, v in vals.items())}; {shapes})"


def plugin_nodes(model, ops: set[str] | None = None, graph: str = "") -> list[PluginNode]:
    """Distinct vitdeploy AOT plugin nodes of `model` (those in TRT_FACES), with input shapes from
    ONNX shape inference (symbolic batch kept as its dim_param)."""
    import onnx
    from onnx import numpy_helper

    from vitdeploy.plugins import TRT_FACES

    ops = set(TRT_FACES) if ops is None else ops
    wanted = [n for n in model.graph.node if n.op_type in ops]
    if not wanted:
        return []
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)}
    inits = {i.name: i for i in model.graph.initializer}
    out: dict[str, PluginNode] = {}
    for n in wanted:
        attrs = {a.name: a for a in n.attribute}
        tensors, consts = [], {}
        for name in n.input:
            if name in inits:
                init = inits[name]
                tensors.append(TensorInfo(name, init.data_type, tuple(init.dims), constant=True))
                consts[name] = numpy_helper.to_array(init)
            elif name in types:
                tt = types[name]
                dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim)
                if any(isinstance(d, str) for d in dims[1:]):
                    raise ValueError(f"{n.op_type} node {n.name}: input {name} {dims} is symbolic beyond the batch "
                                     "dimension (vitdeploy engines have one dynamic dimension, the batch)")
                tensors.append(TensorInfo(name, tt.elem_type, dims))
            else:
                raise ValueError(f"{n.op_type} node {n.name}: no shape for input {name} (constant node or unknown op?)")
        pn = PluginNode(n.op_type, _attr_str(attrs.get("plugin_namespace"), ""), _attr_str(attrs.get("plugin_version"), "1"),
                        attrs, tensors, list(n.output), graph, 1, n, consts)
        if pn.key in out:
            out[pn.key].count += 1
        else:
            out[pn.key] = pn
    return list(out.values())


def _attr_str(a, default: str) -> str:
    if a is None:
        return default
    return a.s.decode() if isinstance(a.s, bytes) else str(a.s)


# --- the parser + builder sequence -----------------------------------------------------------------


@dataclass
class Launch:
    """What TensorRT got for one tactic: the kernel and its launch, as expressions and as read back."""

    tactic: int
    kernel_name: str
    ptx: str
    grid: tuple  # IDimensionExpr x, y, z
    block: tuple  # IDimensionExpr x, y, z
    shared: Any  # IDimensionExpr
    extras: list  # ISymExpr (type, dtype, expr)

    def evaluate(self, batch: int) -> dict:
        """Concrete launch at batch `batch` (the graphs' only symbolic dimension); used by reports and
        the CUDA-driver launcher, never by a contract assertion."""
        symbols = collections.defaultdict(lambda: batch)
        return {"grid": tuple(e.evaluate(symbols) for e in self.grid), "block": tuple(e.evaluate(symbols) for e in self.block),
                "shared": self.shared.evaluate(symbols), "extra": [x.expr.evaluate(symbols) for x in self.extras]}


@dataclass
class ContractResult:
    node: PluginNode
    precision: str  # "fp32" | "fp16"
    input_types: list
    output_types: list
    output_shapes: list  # DimsExprs per output
    combinations: list  # [(types, formats)] TensorRT was offered
    chosen: tuple  # the combination configured
    tactics: list[int]
    launches: list[Launch]
    fields: list  # (name, PluginFieldType, data) passed to create_plugin
    skipped_fields: list[str]
    plugin: Any = None

    def output_dims(self, batch: int) -> list[tuple[int, ...]]:
        """get_output_shapes' expressions read back at batch `batch`."""
        symbols = collections.defaultdict(lambda: batch)
        return [tuple(e.evaluate(symbols) for e in de) for de in self.output_shapes]


def _float_kind(spec, i: int, is_input: bool) -> str:
    specs = spec.inputs if is_input else spec.outputs
    return specs[i].kind if i < len(specs) else "float"


def _onnx_to_trt(trt, elem_type: int):
    from onnx import TensorProto

    return {TensorProto.FLOAT: trt.DataType.FLOAT, TensorProto.FLOAT16: trt.DataType.HALF, TensorProto.INT32: trt.DataType.INT32,
            TensorProto.INT64: trt.DataType.INT64, TensorProto.INT8: trt.DataType.INT8, TensorProto.BOOL: trt.DataType.BOOL,
            TensorProto.BFLOAT16: trt.DataType.BF16}[elem_type]


def load_fields(trt, creator, attrs: dict) -> tuple[list, list[str]]:
    """onnx-tensorrt `loadFields`: one PluginField per creator field name found among the node's attributes."""
    from onnx import AttributeProto

    fields, skipped = [], []
    for f in creator.field_names:
        a = attrs.get(f.name)
        if a is None:
            skipped.append(f.name)  # the parser warns and leaves it to the creator's default
            continue
        if a.type == AttributeProto.FLOAT:
            fields.append(trt.PluginField(f.name, np.array([a.f], dtype=np.float32), trt.PluginFieldType.FLOAT32))
        elif a.type == AttributeProto.INT:
            fields.append(trt.PluginField(f.name, np.array([a.i]).astype(np.int32), trt.PluginFieldType.INT32))
        elif a.type == AttributeProto.STRING:
            fields.append(trt.PluginField(f.name, a.s, trt.PluginFieldType.CHAR))
        elif a.type == AttributeProto.FLOATS:
            fields.append(trt.PluginField(f.name, np.array(a.floats, dtype=np.float32), trt.PluginFieldType.FLOAT32))
        elif a.type == AttributeProto.INTS:
            fields.append(trt.PluginField(f.name, np.array(a.ints).astype(np.int32), trt.PluginFieldType.INT32))
        else:
            raise ValueError(f"attribute {f.name}: ONNX attribute type {a.type} is not supported as a plugin field")
    return fields, skipped


def drive(layer: PluginLayer, node: PluginNode, precision: str, *, batch: tuple[int, int, int] = (1, 2, 4),
          only: int | None = None) -> ContractResult:
    """Take `node` through the parser and builder calls (module docstring) at FP32 or FP16 I/O.

    `batch` is the optimization profile's (min, opt, max) for the symbolic batch dimension (ONNX
    shape inference may name it differently per tensor, e.g. "batch" and "unk__0": all are the batch).
    `only`: take just the first `only` valid tactics through get_launch_params (TensorRT takes all).
    Raises with TensorRT's or the face's error where a step fails, as the build would.
    """
    from vitdeploy.plugins import TRT_FACES
    from vitdeploy.plugins.trt_standin import IExprBuilder, KernelLaunchParams, SymExprs

    trt = layer.trt
    face = importlib.import_module(TRT_FACES[node.op])
    spec = face.SPEC
    face.register()

    creator = trt.get_plugin_registry().get_creator(node.op, node.version, node.namespace)
    if creator is None:
        raise LookupError(f"Plugin not found, are the plugin name, version, and namespace correct? "
                          f"({node.op}, version {node.version!r}, namespace {node.namespace!r})")
    fields, skipped = load_fields(trt, creator, node.attrs)
    plugin = creator.create_plugin(node.op, node.namespace, trt.PluginFieldCollection(fields), trt.TensorRTPhase.BUILD,
                                   trt.QuickPluginCreationRequest.PREFER_AOT)
    if not isinstance(plugin, trt.IPluginV3QuickAOTBuild):
        raise TypeError(f"{node.op}: the creator made a {type(plugin).__name__}, not an AOT plugin")

    float_t = {"fp32": trt.DataType.FLOAT, "fp16": trt.DataType.HALF}[precision]
    in_types = [float_t if _float_kind(spec, i, True) == "float" else _onnx_to_trt(trt, t.elem_type)
                for i, t in enumerate(node.inputs)]
    ranks = [len(t.dims) for t in node.inputs]
    out_types = list(plugin.get_output_data_types(in_types, ranks))

    builder = IExprBuilder()
    sym_names = sorted({d for t in node.inputs for d in t.dims if isinstance(d, str)})
    in_exprs = []
    for t in node.inputs:
        de = trt.DimsExprs(len(t.dims))
        for j, d in enumerate(t.dims):
            de[j] = builder.symbol(d) if isinstance(d, str) else builder.constant(d)
        in_exprs.append(de)
    out_exprs = plugin.get_output_shapes(in_exprs, [], builder)

    def dyn(types, exprs):
        descs = []
        for ty, de in zip(types, exprs):
            d = trt.DynamicPluginTensorDesc()
            d.desc.type, d.desc.format = ty, trt.TensorFormat.LINEAR
            d.desc.dims = trt.Dims([-1 if not e.is_constant() else e.get_constant_value() for e in de])
            for attr, b in zip(("min", "opt", "max"), batch):
                setattr(d, attr, trt.Dims([e.evaluate({s: b for s in sym_names}) for e in de]))
            descs.append(d)
        return descs

    in_out = dyn(in_types, in_exprs) + dyn(out_types, out_exprs)
    n_in = len(node.inputs)
    flat = plugin.get_supported_format_combinations(in_out, n_in)
    n_io = len(in_out)
    if len(flat) % n_io:
        raise ValueError(f"{len(flat)} supported descriptors are not a multiple of {n_io} I/O")
    combos = [(tuple(d.type for d in flat[k:k + n_io]), tuple(d.format for d in flat[k:k + n_io]))
              for k in range(0, len(flat), n_io)]
    want = (tuple(in_types + out_types), (trt.TensorFormat.LINEAR,) * n_io)
    if want not in combos:
        raise ValueError(f"{node.op}: no supported format combination for the network's types "
                         f"{[t.name for t in want[0]]} (offered {[[t.name for t in c[0]] for c in combos]})")
    for d, ty in zip(in_out, want[0]):
        d.desc.type = ty
    plugin.configure_plugin(in_out[:n_in], in_out[n_in:])
    tactics = list(plugin.get_valid_tactics())

    launches = []
    for tactic in (tactics or [0])[:only]:
        plugin.set_tactic(tactic)
        params, extras = KernelLaunchParams(), SymExprs()
        plugin.get_launch_params(in_exprs, in_out, n_in, params, extras, builder)
        descs = [d.desc for d in in_out]
        name, ptx = plugin.get_kernel(descs[:n_in], descs[n_in:])
        launches.append(Launch(tactic, name.decode() if isinstance(name, bytes) else name,
                               ptx.decode() if isinstance(ptx, bytes) else ptx,
                               (params.grid_x.expr, params.grid_y.expr, params.grid_z.expr),
                               (params.block_x.expr, params.block_y.expr, params.block_z.expr),
                               params.shared_mem.expr, [extras[i] for i in range(len(extras))]))
    return ContractResult(node, precision, in_types, out_types, list(out_exprs), combos, want, tactics, launches,
                          [(f.name, f.type, f.data.copy()) for f in fields], skipped, plugin)


def problems(result: ContractResult, layer: PluginLayer, *, max_isa: int, portable: bool = False) -> list[str]:
    """What TensorRT's AOT launch or the driver would reject in `result`; [] when the contract holds."""
    from vitdeploy.plugins import ptx as ptxinfo

    trt = layer.trt
    bad = []
    n_in, n_out = len(result.node.inputs), len(result.output_types)
    if not result.tactics:
        bad.append("the plugin advertises no tactics")
    for la in result.launches:
        where = f"tactic {la.tactic}"
        consts = [e for e in (*la.block, la.shared) if not e.is_constant()]
        if consts:
            bad.append(f"{where}: block size and shared memory must be build-time constants")
            continue
        dtypes = [x.dtype for x in la.extras]
        if any(dt != trt.PluginArgDataType.INT32 for dt in dtypes):
            bad.append(f"{where}: extra arguments {dtypes} are not all INT32")
        try:
            info = ptxinfo.parse(la.ptx, la.kernel_name)
        except ValueError as e:
            bad.append(f"{where}: {e}")
            continue
        block = tuple(e.get_constant_value() for e in la.block)
        if info.reqntid is not None and tuple(info.reqntid) + (1,) * (3 - len(info.reqntid)) != block:
            bad.append(f"{where}: .reqntid {info.reqntid} but the launch block is {block}")
        for p in ptxinfo.problems(info, abi=ptxinfo.tensorrt_abi(n_in, len(la.extras), n_out), block=None,
                                  shared=la.shared.get_constant_value(), max_isa=max_isa, portable=portable):
            bad.append(f"{where}: {p}")
    return bad


def one_node_model(node: PluginNode, batch: int):
    """A model holding only `node` (constant inputs as initializers, the rest as inputs at `batch`),
    for the ONNX Runtime reference: the ONNX-level truth of the node's output shape."""
    import onnx
    from onnx import helper, numpy_helper

    inputs, inits = [], []
    for t in node.inputs:
        if t.constant:
            inits.append(numpy_helper.from_array(node.constants[t.name], t.name))
        else:
            dims = [batch if isinstance(d, str) else d for d in t.dims]
            inputs.append(helper.make_tensor_value_info(t.name, t.elem_type, dims))
    elem = next(t.elem_type for t in node.inputs if t.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16))
    outs = [helper.make_tensor_value_info(o, elem, None) for o in node.outputs]  # the plugins' float outputs
    graph = helper.make_graph([node.onnx_node], f"{node.op}_contract", inputs, outs, inits)
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid(node.onnx_node.domain or "ai.onnx", 1)]
    return helper.make_model(graph, opset_imports=opsets)


def reference_output_shapes(node: PluginNode, batch: int, seed: int = 0) -> list[tuple[int, ...]]:
    """Output shapes of `node` computed by its ONNX Runtime face (the PyTorch reference) at `batch`."""
    from vitdeploy.onnxrt import session

    model = one_node_model(node, batch)
    rng = np.random.default_rng(seed)
    feeds = {}
    for t in node.inputs:
        if t.constant:
            continue
        if np.dtype({1: np.float32, 10: np.float16, 6: np.int32, 7: np.int64}[t.elem_type]).kind != "f":
            raise ValueError(f"{node.op}: integer input {t.name} is not a constant; no reference run for it")
        shape = [batch if isinstance(d, str) else d for d in t.dims]
        dtype = {1: np.float32, 10: np.float16, 6: np.int32, 7: np.int64}[t.elem_type]
        feeds[t.name] = rng.standard_normal(shape).astype(dtype) if np.dtype(dtype).kind == "f" else np.zeros(shape, dtype)
    return [tuple(o.shape) for o in session(model).run(None, feeds)]


def synthetic_node(op: str, attrs: dict, inputs: list[tuple], graph: str = "") -> PluginNode:
    """A plugin node built from attributes and input descriptions instead of an export:
    `inputs` = [(name, onnx elem type, dims, constant array or None)], "batch" for the batch dim.

    The GPU launcher check uses it for full-size shapes (no multi-minute export on a lent GPU);
    the contract tests prove the attributes equal those of the real rewritten graphs.
    """
    from onnx import helper

    from vitdeploy.plugins import TRT_FACES

    spec = importlib.import_module(TRT_FACES[op]).SPEC
    node_attrs = spec.node_attrs(**attrs)
    node = helper.make_node(op, [i[0] for i in inputs], [f"{op}_out"], domain=spec.domain, **node_attrs)
    tensors, consts = [], {}
    for name, elem, dims, value in inputs:
        tensors.append(TensorInfo(name, elem, tuple(dims), constant=value is not None))
        if value is not None:
            consts[name] = value
    amap = {a.name: a for a in node.attribute}
    return PluginNode(op, spec.namespace, spec.version, amap, tensors, list(node.output), graph, 1, node, consts)
