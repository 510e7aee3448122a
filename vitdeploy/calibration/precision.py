"""FP16 as explicit ONNX: casts written into the graph, because TensorRT 10/11 is strongly typed.

The conversion itself is ONNX Runtime's `convert_float_to_float16`; this module
chooses what stays in FP32 and makes vitdeploy's plugin nodes FP16, which the
converter cannot do alone: ONNX shape inference does not know custom ops, so
their outputs carry no type and the converter would leave them untyped (and a
blocked consumer would get no Cast). We declare their float outputs first, let
the converter flip them to FP16 with everything else, then check the result.
"""
from __future__ import annotations

from collections import Counter

import onnx
from onnx import TensorProto, helper

from vitdeploy.errors import VitdeployError
from vitdeploy.onnxgraph import tensor_types, toposort
from vitdeploy.plugins.registry import OP_TYPES, is_plugin_node, lookup

# Ops whose accumulation loses too much in FP16: normalisations (the variance over up to tens of thousands
# of elements: LayerNorm, and GroupNorm, which exporters write as InstanceNormalization), plus the pieces
# of a LayerNorm an exporter decomposed. Softmax runs in FP16: TensorRT's fused attention kernels
# accumulate in FP32 themselves, its FP16 fused MHA needs FP16 around both BMMs, and on the digits models
# FP16 Softmax changes no prediction and no logit by more than FP32 Softmax did
# (benchmarks/results/digits_int8_recipe.json). Pass fp32_ops to keep it FP32.
DEFAULT_FP32_OPS: tuple[str, ...] = ("LayerNormalization", "GroupNormalization", "InstanceNormalization",
                                     "ReduceMean", "Pow")
# Plugin nodes vitdeploy writes (the registry's op types); they run in FP16 (their kernels and TensorRT
# plugins support it).
PLUGIN_OPS: frozenset[str] = OP_TYPES
FLOATS = (TensorProto.FLOAT, TensorProto.FLOAT16)
is_plugin = is_plugin_node


def _plugin_float_outputs(node: onnx.NodeProto) -> list[str]:
    """Names of a plugin node's float outputs, from its spec (the registry row says where it lives)."""
    import importlib

    row = lookup(node)
    spec = getattr(importlib.import_module(row.module("spec")), row.spec)
    return [o for o, ts in zip(node.output, spec.outputs) if o and ts.kind == "float"]


def declare_plugin_outputs(model: onnx.ModelProto, dtype: int) -> None:
    known = {vi.name for vi in list(model.graph.value_info) + list(model.graph.output)}
    for node in model.graph.node:
        if is_plugin(node):
            for name in _plugin_float_outputs(node):
                if name not in known:
                    model.graph.value_info.append(helper.make_tensor_value_info(name, dtype, None))


def node_precision(model: onnx.ModelProto) -> dict[str, str]:
    """node name -> "fp16" | "fp32" | "other", from the types of its float outputs (then inputs)."""
    types = tensor_types(model)
    out = {}
    for i, node in enumerate(model.graph.node):
        outs = [types.get(t) for t in node.output if t]
        if outs and all(t is not None and t not in FLOATS for t in outs):
            ts = []  # e.g. Shape: reads a float tensor, computes nothing in float
        else:
            ts = [t for t in outs + [types.get(t) for t in node.input if t] if t in FLOATS]
        key = node.name or f"{node.op_type}_{i}"
        out[key] = "other" if not ts else ("fp16" if ts[0] == TensorProto.FLOAT16 else "fp32")
    return out


def precision_summary(model: onnx.ModelProto) -> dict:
    """Which op types compute in FP16 / FP32, how many Casts, and the I/O types."""
    prec = node_precision(model)
    fp16, fp32 = Counter(), Counter()
    casts = 0
    for i, node in enumerate(model.graph.node):
        if node.op_type == "Cast":
            casts += 1
            continue
        p = prec[node.name or f"{node.op_type}_{i}"]
        if p == "fp16":
            fp16[node.op_type] += 1
        elif p == "fp32":
            fp32[node.op_type] += 1
    name = {TensorProto.FLOAT: "float32", TensorProto.FLOAT16: "float16"}
    io = {vi.name: name.get(vi.type.tensor_type.elem_type, str(vi.type.tensor_type.elem_type))
          for vi in list(model.graph.input) + list(model.graph.output)}
    return {
        "fp16_ops": dict(sorted(fp16.items())),
        "fp32_ops": dict(sorted(fp32.items())),
        "casts": casts,
        "io": io,
        "plugins_fp16": sum(1 for n in model.graph.node if is_plugin(n) and prec.get(n.name) == "fp16"),
    }


def convert_fp16(model: onnx.ModelProto, keep_io_fp32: bool = True, fp32_ops=DEFAULT_FP32_OPS,
                 fp32_nodes=()) -> tuple[onnx.ModelProto, dict]:
    """The FP16 graph and a summary of what runs in which precision.

    `fp32_ops` (op types) and `fp32_nodes` (node names) stay FP32 with Casts around
    them; plugin nodes are always FP16; graph inputs/outputs stay FP32 unless
    `keep_io_fp32=False`.
    """
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    if any(vi.type.tensor_type.elem_type == TensorProto.FLOAT16 for vi in model.graph.input):
        raise VitdeployError("the model already has FP16 inputs", "convert the FP32 model instead")
    from vitdeploy.onnxgraph import strip_stale_value_info

    blocked = set(fp32_ops) - PLUGIN_OPS
    m = onnx.ModelProto.FromString(model.SerializeToString())
    # The exporter's value_info for initializers survives into the converter, which then types an FP32
    # initializer FP16 (onnx.checker full_check fails) and adds a no-op Cast: drop it first.
    strip_stale_value_info(m)
    declare_plugin_outputs(m, TensorProto.FLOAT)
    try:
        out = convert_float_to_float16(
            m,
            keep_io_types=keep_io_fp32,
            op_block_list=sorted(set(DEFAULT_OP_BLOCK_LIST) | blocked),
            node_block_list=list(fp32_nodes),
        )
    except Exception as e:
        raise VitdeployError(f"FP16 conversion failed: {str(e).splitlines()[0][:200]}", "check the model with onnx.checker") from None
    toposort(out)
    _check_plugins_fp16(out)
    _check_consistent(out)
    return out, precision_summary(out)


def _check_plugins_fp16(model: onnx.ModelProto) -> None:
    types = tensor_types(model)
    for node in model.graph.node:
        if not is_plugin(node):
            continue
        bad = [t for t in node.input if t and types.get(t) == TensorProto.FLOAT]
        bad += [t for t in _plugin_float_outputs(node) if types.get(t) != TensorProto.FLOAT16]
        if bad:
            raise VitdeployError(
                f"plugin node {node.name or node.op_type} would not be FP16 (tensor {bad[0]})",
                "report this graph: the FP16 conversion left a plugin tensor in FP32",
            )


def _check_consistent(model: onnx.ModelProto) -> None:
    """Every standard node must see one float type: a mix means a missing Cast."""
    types = tensor_types(model)
    for node in model.graph.node:
        if node.op_type in ("Cast", "CastLike") or is_plugin(node):
            continue
        if node.op_type in ("LayerNormalization", "Resize", "GroupNormalization", "DequantizeLinear", "QuantizeLinear"):
            ins = node.input[:1]  # scale/bias/roi inputs may legally differ or are checked by ORT itself
        else:
            ins = node.input
        kinds = {types[t] for t in ins if t in types and types[t] in FLOATS}
        if len(kinds) > 1:
            raise VitdeployError(
                f"FP16 conversion left node {node.name or node.op_type} ({node.op_type}) with mixed FP16/FP32 inputs",
                "add its op type to the FP32 list or report the model",
            )
