"""What every vitdeploy plugin shares: its spec, how its node looks in ONNX, and its ORT face.

A plugin has one spec (name, inputs, outputs, attributes) and several faces:
the PyTorch reference (the truth), an ONNX Runtime CPU custom op that runs
the reference so rewritten graphs can be verified on the CPU, a Triton
kernel, and a `tensorrt.plugin` registration. The spec is the contract all
faces are tested against.

ONNX node convention (what TensorRT's ONNX parser expects for plugins):
op_type = plugin name, attributes `plugin_namespace` and `plugin_version`,
node domain = the namespace (declared in the model's opset imports).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

NAMESPACE = "vitdeploy"
_ATTR_TYPES = (int, float, str)


@dataclass(frozen=True)
class ListAttr:
    """An INTS / FLOATS attribute: `length` values of `item` (None: any length, at least one).

    ONNX stores it as a list; TensorRT's ONNX parser hands it to the plugin as an INT32 /
    FLOAT32 array field (`numpy.typing.NDArray` annotations in the `tensorrt.plugin` face);
    onnxruntime-extensions' Python ops take no list attributes, so `vitdeploy.onnxrt` passes it
    as a comma-separated string (`ort_attribute`). A scalar (a graph written before the
    attribute became a list) reads as that value repeated `length` times.
    """

    item: type
    length: int | None = None

    def coerce(self, name: str, v: Any) -> tuple:
        """The attribute's values as a tuple of `item`, from a list, an array, a scalar or a string."""
        if isinstance(v, bytes):
            v = v.decode()
        if isinstance(v, str):
            parts = [float(x) for x in v.split(",") if x.strip()]
            v = parts[0] if len(parts) == 1 else parts
        vals = [v] * (self.length or 1) if np.ndim(v) == 0 else np.asarray(v).reshape(-1).tolist()
        if not vals or (self.length is not None and len(vals) != self.length):
            raise ValueError(f"{name} must have {self.length or 'at least 1'} values, got {v!r}")
        if self.item is int and any(int(x) != x for x in vals):
            raise ValueError(f"{name} must hold integers, got {v!r}")
        return tuple(self.item(x) for x in vals)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    kind: str = "float"  # float (FP32 or FP16, the plugin follows its input) | int32 | int64
    doc: str = ""


@dataclass(frozen=True)
class PluginSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    attrs: Mapping[str, type | ListAttr] = field(default_factory=dict)
    version: str = "1"
    namespace: str = NAMESPACE
    doc: str = ""
    # Values `read_attrs` assumes for attributes a node lacks (graphs written before they existed).
    # Only the CPU faces read them: TensorRT's `tensorrt.plugin` has no attribute defaults, so the
    # rewrite always writes every attribute.
    defaults: Mapping[str, Any] = field(default_factory=dict)

    @property
    def plugin_id(self) -> str:
        """The id `tensorrt.plugin.register` takes: "namespace::name"."""
        return f"{self.namespace}::{self.name}"

    @property
    def domain(self) -> str:
        return self.namespace

    def node_attrs(self, **values: Any) -> dict:
        """Validated node attributes (every one written, defaults included: TensorRT's `tensorrt.plugin`
        has no defaults) plus the plugin_namespace/plugin_version TensorRT reads."""
        values = {**{k: v for k, v in self.defaults.items() if k not in values}, **values}
        missing = set(self.attrs) - set(values)
        extra = set(values) - set(self.attrs)
        if missing or extra:
            raise ValueError(f"{self.name}: missing attrs {sorted(missing)}, unknown attrs {sorted(extra)}")
        out: dict[str, Any] = {}
        for k, typ in self.attrs.items():
            v = values[k]
            if isinstance(typ, ListAttr):
                item = typ.coerce(f"{self.name}.{k}", v)
                v = [int(x) for x in item] if typ.item is int else [float(x) for x in item]
            elif typ is int:
                if int(v) != v:
                    raise ValueError(f"{self.name}.{k} must be an integer, got {v!r}")
                v = int(v)
            elif typ is float:
                v = float(v)
            else:
                v = str(v)
            out[k] = v
        out["plugin_namespace"] = self.namespace
        out["plugin_version"] = self.version
        return out

    def read_attrs(self, attrs: Mapping[str, Any]) -> dict:
        """The spec's attributes from a node's attribute dict (bytes decoded, plugin_* dropped)."""
        out = {}
        for k, typ in self.attrs.items():
            if k not in attrs and k in self.defaults:
                out[k] = self.defaults[k]
                continue
            v = attrs[k]
            if isinstance(typ, ListAttr):
                out[k] = typ.coerce(f"{self.name}.{k}", v)
                continue
            if isinstance(v, bytes):
                v = v.decode()
            out[k] = typ(v)
        return out

    def ort_attribute(self, attr):
        """An ONNX AttributeProto as the onnxruntime-extensions op receives it (lists as strings)."""
        import onnx

        typ = self.attrs.get(attr.name)
        if not isinstance(typ, ListAttr):
            return attr
        vals = onnx.helper.get_attribute_value(attr)
        vals = [vals] if np.ndim(vals) == 0 else list(vals)
        return onnx.helper.make_attribute(attr.name, ",".join(repr(typ.item(v)) for v in vals))

    def matches(self, op_type: str, domain: str | None = None) -> bool:
        return op_type == self.name and (domain in (None, "", self.domain, ORT_PYOP_DOMAIN))


# onnxruntime-extensions serves Python custom ops from this fixed domain, and only for
# FP32/integer tensors; `vitdeploy.onnxrt` moves plugin nodes there and casts FP16 around them.
ORT_PYOP_DOMAIN = "ai.onnx.contrib"

_ORT_REGISTERED: dict[str, PluginSpec] = {}
# Python ops onnxruntime-extensions held when vitdeploy sealed its registry (None: not sealed).
# Why sealing matters, and how a new face registers: the docstring of `vitdeploy.plugins`.
_ORT_SEALED_AT: int | None = None


def _pyop_count() -> int:
    """How many Python ops onnxruntime-extensions has registered in this process (any library's)."""
    from onnxruntime_extensions import Opdef

    # Opdef.create (onnxruntime_extensions/_ocos.py) keeps one entry per add_custom_op call; a
    # version without that private table makes this 0, which only turns the foreign-op check off.
    return len(getattr(Opdef, "_odlist", ()))


def ort_sealed() -> bool:
    return _ORT_SEALED_AT is not None


def seal_ort_ops() -> None:
    """No more vitdeploy ops may be registered: a session is about to hold pointers into the op vector.

    Calling it again accepts ops others registered since (safe only while no plugin session is open)."""
    global _ORT_SEALED_AT
    _ORT_SEALED_AT = _pyop_count()


def ort_ops_added_since_seal() -> int:
    """Python ops registered (by anyone) after the seal; each may have invalidated open sessions."""
    return 0 if _ORT_SEALED_AT is None else _pyop_count() - _ORT_SEALED_AT


def register_ort_op(spec: PluginSpec, compute: Callable[..., Any]) -> None:
    """Register `compute(*numpy_inputs, **attrs) -> numpy | tuple` as the plugin's ORT CPU op.

    `compute` receives FP32 float inputs and the spec's attributes; it must return FP32.
    Only from an ORT face module its registry row declares (`vitdeploy/plugins/registry.py`), so that
    `register_ort_faces()` registers it before the first session; once sealed this raises.
    """
    if spec.name in _ORT_REGISTERED:
        return
    if _ORT_SEALED_AT is not None:
        raise RuntimeError(
            f"ORT op {spec.name} registered after an ONNX Runtime session loaded onnxruntime-extensions; "
            "registering now could reallocate the op table under that session and crash the process. "
            "Give its op type a row in vitdeploy/plugins/registry.py so it is registered before the first session."
        )
    from onnxruntime_extensions import PyCustomOpDef, onnx_op

    dt = {"float": PyCustomOpDef.dt_float, "int32": PyCustomOpDef.dt_int32, "int64": PyCustomOpDef.dt_int64}
    at = {int: PyCustomOpDef.dt_int64, float: PyCustomOpDef.dt_float, str: PyCustomOpDef.dt_string}
    attrs = {k: PyCustomOpDef.dt_string if isinstance(t, ListAttr) else at[t] for k, t in spec.attrs.items()}
    attrs.update(plugin_namespace=PyCustomOpDef.dt_string, plugin_version=PyCustomOpDef.dt_string)

    def body(*arrays, **kw):
        kw.pop("plugin_namespace", None)
        kw.pop("plugin_version", None)
        res = compute(*arrays, **kw)
        if isinstance(res, tuple):
            return tuple(np.ascontiguousarray(r) for r in res)
        return np.ascontiguousarray(res)

    onnx_op(
        op_type=spec.name,
        inputs=[dt[t.kind] for t in spec.inputs],
        outputs=[dt[t.kind] for t in spec.outputs],
        attrs=attrs,
    )(body)
    _ORT_REGISTERED[spec.name] = spec


def ort_registered() -> dict[str, PluginSpec]:
    return dict(_ORT_REGISTERED)


def triton_ptx(fn, signature: Mapping[str, str], constexprs: Mapping[str, Any], arch: int, num_warps: int = 4, num_stages: int = 2,
               aligned: tuple[str, ...] = ()):
    """Compile a @triton.jit kernel ahead of time to PTX for sm_`arch`, without a GPU.

    Returns (kernel_name, ptx_text, metadata). Used by the `aot_impl` TensorRT faces and the
    AOT tests (sm_87 Jetson Orin, sm_90 Hopper). The PTX ISA is pinned to
    `ptx_target.pinned_isa(arch)` (the lowest the architecture accepts) instead of Triton's
    default, its bundled ptxas's, so older drivers can JIT it; Triton still assembles the PTX
    with its ptxas, which rejects any instruction the pinned ISA lacks. `aligned` names pointer
    arguments the caller guarantees 16-byte aligned (TensorRT's plugin I/O buffers are): the JIT
    infers that from the actual pointers, AOT must be told, else every load/store is scalar.
    """
    import triton
    from triton.backends.compiler import GPUTarget

    from vitdeploy.plugins.ptx_target import pinned_isa

    names = list(signature)
    attrs = {(names.index(a),): [["tt.divisibility", 16]] for a in aligned}
    src = triton.compiler.ASTSource(fn=fn, signature=dict(signature), constexprs=dict(constexprs), attrs=attrs or None)
    target = GPUTarget("cuda", arch, 32)
    options = {"num_warps": num_warps, "num_stages": num_stages, "ptx_version": pinned_isa(arch)}
    compiled = triton.compile(src, target=target, options=options)
    return compiled.metadata.name, compiled.asm["ptx"], compiled.metadata


# --- PTX helpers for the TensorRT AOT faces ------------------------------------------------------


def _entry_span(ptx: str, name: str) -> tuple[int, int]:
    start = ptx.index(f".entry {name}(")
    open_ = ptx.index("(", start)
    return open_ + 1, ptx.index(")", open_)


def entry_params(ptx: str, name: str) -> list[str]:
    """PTX types of the entry's parameters, e.g. ['.u64', '.u32']."""
    a, b = _entry_span(ptx, name)
    return [p.split()[1] for p in ptx[a:b].split(",") if p.strip()]


def strip_unused_scratch_params(ptx: str, name: str, keep: int) -> str:
    """Drop entry parameters after the first `keep` (the kernel's own arguments) if the body never reads them.

    Triton appends hidden pointers (global scratch, profile scratch) to every kernel; TensorRT's
    AOT launcher passes exactly: tensor inputs, extra scalars, outputs. A kernel that needs no
    scratch never reads them, so removing them makes the entry match what TensorRT passes.
    """
    a, b = _entry_span(ptx, name)
    params = [p.strip() for p in ptx[a:b].split(",") if p.strip()]
    if len(params) <= keep:
        return ptx
    body = ptx[b:]
    for p in params[keep:]:
        pname = p.split()[-1]
        if pname in body:
            raise ValueError(f"kernel {name} reads hidden parameter {pname}; cannot drop it")
    kept = ",\n".join("\t" + p for p in params[:keep])
    return ptx[:a] + "\n" + kept + "\n" + ptx[b:]


def ptxas_path() -> str | None:
    """Triton's bundled ptxas (lets CPU-only tests assemble PTX), or None."""
    import os

    try:
        from triton.backends.nvidia.compiler import get_ptxas

        p = get_ptxas(90).path
    except Exception:
        return None
    return p if p and os.path.isfile(p) else None


def target_arch(plugin: str) -> int:
    """SM version the TensorRT faces compile PTX for now (see `ptx_target.resolve`).

    Inside an engine build it is the build GPU's (or portable sm_80 for --hardware-compat
    ampere_plus); `VITDEPLOY_PTX_ARCH` (e.g. 87) lets CPU-only code compile and inspect PTX for
    a GPU it does not have. It does not build a plan for that GPU: a TensorRT plan is built and
    timed on, and tied to, the GPU that builds it (a Jetson plan is built on the Jetson).
    """
    from vitdeploy.plugins.ptx_target import resolve

    return resolve(plugin).arch


def finish_for_tensorrt(plugin: str, name: str, ptx: str, meta, *, inputs: int, extras: int, outputs: int = 1):
    """(name, PTX, metadata) as a TensorRT AOT face returns it: Triton's unused scratch parameters
    dropped, then checked against what TensorRT's launcher does (parameter list, block size, no more
    than 48 KiB of shared memory, pinned ISA, portability) and recorded for the manifest.

    Raises ValueError naming the problem: inside TensorRT's build that fails the build at once,
    where a wrong kernel would otherwise fail at launch, on some GPU, later.
    """
    from vitdeploy.plugins import ptx as ptxinfo
    from vitdeploy.plugins import ptx_target

    ptx = strip_unused_scratch_params(ptx, name, keep=inputs + extras + outputs)
    info = ptxinfo.parse(ptx, name)
    target = ptx_target.active() or ptx_target.PtxTarget(info.arch, ptx_target.pinned_isa(info.arch))
    bad = ptxinfo.problems(info, abi=ptxinfo.tensorrt_abi(inputs, extras, outputs), block=meta.num_warps * 32,
                           shared=meta.shared, max_isa=target.isa, portable=target.portable)
    if info.arch != target.arch:
        bad.append(f"compiled for sm_{info.arch}, the engine is built for {target.name}")
    if bad:
        raise ValueError(f"{plugin} kernel {name} ({info.target}): " + "; ".join(bad))
    ptx_target.record(plugin, target, info.isa, info.target, meta.shared + info.static_shared)
    return name, ptx, meta


def run_plugin_network(feeds: dict, add_layer, out_shape, what: str):
    """Build a one-plugin TensorRT network over `feeds` (name -> torch tensor), run it, return the output.

    `add_layer(network, itensors)` adds the plugin layer. The `trt`-marked tests use this to
    compare each plugin's TensorRT face with its reference; TensorRT is imported here, not above.
    """
    import tensorrt as trt
    import torch

    from vitdeploy.tensorrt_session import logger as process_logger

    logger = process_logger()
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    itensors = [network.add_input(n, trt.int32 if t.dtype == torch.int32 else trt.float32, tuple(t.shape))
                for n, t in feeds.items()]
    layer = add_layer(network, itensors)
    network.mark_output(layer.get_output(0))
    blob = builder.build_serialized_network(network, builder.create_builder_config())
    if blob is None:
        raise RuntimeError(f"TensorRT could not build the {what} test network")
    engine = trt.Runtime(logger).deserialize_cuda_engine(blob)
    context = engine.create_execution_context()
    dev = {n: t.contiguous().cuda() for n, t in feeds.items()}
    out = torch.empty(*out_shape, device="cuda")
    for name, t in dev.items():
        context.set_tensor_address(name, t.data_ptr())
    context.set_tensor_address(layer.get_output(0).name, out.data_ptr())
    stream = torch.cuda.current_stream()
    if not context.execute_async_v3(stream.cuda_stream):
        raise RuntimeError("TensorRT execution failed")
    stream.synchronize()
    return out


# --- registering a TensorRT face --------------------------------------------------------------------

_REGISTRATIONS: dict[str, tuple[object, BaseException | None]] = {}


def register_once(spec: PluginSpec, define: Callable[[], None]) -> None:
    """Run a face's `tensorrt.plugin` decorators (`define`) once per imported `tensorrt.plugin`.

    The plugin is marked before decorating: `@trtp.register` defines the op at once, so a
    failure in a later decorator would otherwise make the next call fail with "already has a
    definition" and hide the real error. Here a retry re-raises the first error instead.
    """
    import tensorrt.plugin as trtp

    state = _REGISTRATIONS.get(spec.plugin_id)
    if state is not None and state[0] is trtp.op:
        if state[1] is None:
            return
        raise RuntimeError(f"registering {spec.plugin_id} with tensorrt.plugin failed earlier in this process: "
                           f"{type(state[1]).__name__}: {state[1]}") from state[1]
    _REGISTRATIONS[spec.plugin_id] = (trtp.op, None)
    try:
        define()
    except Exception as e:
        _REGISTRATIONS[spec.plugin_id] = (trtp.op, e)
        raise
