"""Explicit quantization as TensorRT reads it: Q/DQ scales, zero points, axes and placement.

Sources: onnx-tensorrt 10.1-GA onnxOpImporters.cpp QuantDequantLinearHelper -- "Scale coefficients must
all be positive" (line ~1404), zero points "must be all zeros" (~1491), per-axis scales assumed to be
weights ("Activations-quantization does not support per-axis quantization", ~1530); TensorRT 10.3
NvInfer.h IQuantizeLayer/IDequantizeLayer: "Per-channel quantization is supported only for weight inputs",
"For strongly typed networks, input data type must match the scale data type". A scale below FP16's
smallest normal number (6.1e-5) is accepted by TensorRT but is a calibration failure: vitdeploy refuses it.
"""
from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import onnx

from vitdeploy.deploy.lint.core import Finding, GraphIndex, dtype_name, node_label

QDQ = ("QuantizeLinear", "DequantizeLinear")
# Ops whose input 1 is the weight TensorRT's explicit quantization fuses a per-channel DQ into.
WEIGHT_INPUT = {"MatMul": 1, "Gemm": 1, "Conv": 1, "ConvTranspose": 1}
LAYOUT = {"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Gather", "Slice", "Expand", "Cast", "Identity"}
NORMAL_MIN = {onnx.TensorProto.FLOAT16: float(np.finfo(np.float16).tiny), onnx.TensorProto.FLOAT: float(np.finfo(np.float32).tiny),
              onnx.TensorProto.BFLOAT16: float(np.finfo(np.float32).tiny)}


def scale_problem(values: np.ndarray, dtype: int) -> str | None:
    """Why a Q/DQ scale is unusable (zero, negative, not finite, subnormal in its type), or None."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        return "is empty"
    if not np.all(np.isfinite(v)):
        return "is not finite"
    if np.any(v <= 0):
        return f"is {v[v <= 0][0]:.3g} (scales must be positive)"
    tiny = NORMAL_MIN.get(dtype, NORMAL_MIN[onnx.TensorProto.FLOAT])
    if np.any(v < tiny):
        low = float(v.min())
        return f"is {low:.3g}, a subnormal {dtype_name(dtype)} number (< {tiny:.3g}): it clips at +-{127 * low:.3g}"
    return None


def check_qdq(ix: GraphIndex) -> tuple[list[Finding], dict]:
    out: list[Finding] = []
    for i, n in enumerate(ix.nodes):
        if n.op_type not in QDQ or n.domain not in ("", "ai.onnx"):
            continue
        name = node_label(n, i)
        tensor = n.input[0]
        scale_name = n.input[1] if len(n.input) > 1 else ""
        scale = ix.const(scale_name)
        if scale is None:
            out.append(Finding("warning", "qdq-scale", f"scale {scale_name} of {tensor} is not a constant: TensorRT "
                               "fuses Q/DQ only with build-time scales", "store the scale as an initializer", name, n.op_type))
        else:
            why = scale_problem(scale, ix.dtype(scale_name) or onnx.TensorProto.FLOAT)
            weight = n.op_type == "DequantizeLinear" and ix.is_const(tensor)
            if why and weight and "subnormal" in why:  # a nearly-zero weight channel: precision, not clipping
                out.append(Finding("warning", "qdq-scale", f"the per-channel scale of weight {tensor} {why}",
                                   "keep that layer FP16 (--int8-exclude) if its accuracy matters", name, n.op_type))
            elif why:
                out.append(Finding("error", "qdq-scale", f"the scale of tensor {tensor} {why}",
                                   "recalibrate (--calib-method minmax or percentile) or keep its consumer FP16 "
                                   "(--int8-exclude)", name, n.op_type))
        if len(n.input) > 2 and n.input[2]:
            zp = ix.const(n.input[2])
            if zp is None:
                out.append(Finding("error", "qdq-zero-point", f"the zero point of {tensor} is not a constant",
                                   "store a zero initializer", name, n.op_type))
            elif np.any(np.asarray(zp) != 0):
                out.append(Finding("error", "qdq-zero-point", f"the zero point of {tensor} is not 0: TensorRT quantizes "
                                   "symmetrically only", "quantize symmetrically (zero point 0)", name, n.op_type))
        per_channel = scale is not None and np.asarray(scale).size > 1
        if per_channel:
            if n.op_type == "QuantizeLinear" or not ix.is_const(tensor):
                out.append(Finding("error", "qdq-per-channel", f"per-channel quantization of activation {tensor}: "
                                   "TensorRT quantizes activations per tensor only", "use one scale for the tensor",
                                   name, n.op_type))
            else:
                for c in ix.users(n.output[0]):
                    slots = [k for k, t in enumerate(c.input) if t == n.output[0]]
                    if c.op_type in QDQ or all(WEIGHT_INPUT.get(c.op_type) == k for k in slots):
                        continue
                    out.append(Finding(
                        "error", "qdq-per-channel", f"per-channel DQ of constant {tensor} feeds input {slots[0]} of "
                        f"{c.op_type} {c.name}, which is not a weight input (NvInfer.h: per-channel only for weights)",
                        "dequantize it per tensor, or keep that operand in FP16", name, n.op_type))
        if n.op_type == "QuantizeLinear":
            in_t, sc_t = ix.types.get(tensor), ix.dtype(scale_name)
            if (ix.opset or 0) >= 19 and in_t in NORMAL_MIN and sc_t in NORMAL_MIN and in_t != sc_t:
                out.append(Finding("error", "qdq-type", f"{tensor} is {dtype_name(in_t)} but its scale is "
                                   f"{dtype_name(sc_t)}: strongly typed networks need them equal",
                                   "store the scale in the input's type", name, n.op_type))
            bad = [c for c in ix.users(n.output[0]) if c.op_type != "DequantizeLinear"]
            if bad:
                out.append(Finding("error", "qdq-pair", f"QuantizeLinear output feeds {bad[0].op_type} {bad[0].name}: "
                                   "TensorRT's explicit quantization needs each Q followed by a DQ",
                                   "insert a DequantizeLinear", name, n.op_type))
        else:
            between = [c for c in ix.users(n.output[0]) if c.op_type in LAYOUT]
            if between:
                out.append(Finding("warning", "qdq-placement", f"DequantizeLinear output reaches its consumer through "
                                   f"{between[0].op_type} {between[0].name}", "put the DQ directly before the op "
                                   "that consumes it", name, n.op_type))
    return out, qdq_counts(ix)


def qdq_counts(ix: GraphIndex) -> dict:
    """Per consumer op type: how many nodes read a DQ output, and the Q and DQ nodes feeding them."""
    nodes: Counter = Counter()
    dq: dict[str, set] = defaultdict(set)
    q: dict[str, set] = defaultdict(set)
    for n in ix.nodes:
        if n.op_type in QDQ:
            continue
        fed = [t for t in n.input if t and (p := ix.producer.get(t)) is not None and p.op_type == "DequantizeLinear"]
        if not fed:
            continue
        nodes[n.op_type] += 1
        for t in fed:
            d = ix.producer[t]
            dq[n.op_type].add(d.name or t)
            src = ix.producer.get(d.input[0])
            if src is not None and src.op_type == "QuantizeLinear":
                q[n.op_type].add(src.name or d.input[0])
    return {op: {"nodes": nodes[op], "quantize": len(q[op]), "dequantize": len(dq[op])} for op in sorted(nodes)}

