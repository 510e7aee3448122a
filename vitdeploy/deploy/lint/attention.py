"""Attention blocks, and whether each is in the form TensorRT fuses into one attention kernel.

TensorRT's "Fused Attention" documentation describes the pattern
``MatMul(Q, Kᵀ) -> [additive or boolean mask] -> Softmax -> MatMul(·, V)`` with "Q or K multiplied with
the attention scale (or both with its square root) before going into the first batched matrix multiply",
Q/K/V of shape [B, heads, S, head_size], the mask broadcastable to [B, heads, S_q, S_kv]. The 10.x
developer guide's MHA restrictions (quoted in NVIDIA/TensorRT#4167) add: the inputs of both BMMs FP16 (or
INT8 with Q/DQ before BMM1, after the Softmax and after BMM2), head size 16..256 and a multiple of 8.
Whether the builder then fuses is visible only in the engine: `trtexec --profilingVerbosity=detailed
--exportLayerInfo=...` lists an mha/fmha kernel per fused block. This module only reads the graph.
"""
from __future__ import annotations

import onnx

from vitdeploy.deploy.lint import tables as T
from vitdeploy.deploy.lint.core import Finding, GraphIndex, node_label
from vitdeploy.plugins.registry import is_plugin_node

# Between BMM1 and the Softmax: what may sit there (Cast: precision; Add: bias/mask), and what blocks the pattern.
_PASS = {"Cast", "Add", "Mul", "Div", "Reshape", "Where", "Sub", "Identity", "Squeeze", "Unsqueeze", "Transpose"}
# Data movement from the Q/K projections to BMM1 (where a scale may sit).
_LAYOUT = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Slice", "Gather", "Split", "Cast", "Identity", "Flatten"}


def _is_scalar_const(ix: GraphIndex, name: str) -> bool:
    v = ix.const(name)
    return v is not None and v.size == 1


def _scale_on_operand(ix: GraphIndex, t: str) -> bool:
    """A Mul/Div by a constant scalar on the way up from a BMM1 operand through layout ops."""
    seen = 0
    while seen < 12:
        p = ix.producer.get(t)
        if p is None:
            return False
        if p.op_type in ("Mul", "Div") and len(p.input) == 2:
            if _is_scalar_const(ix, p.input[1]) or (p.op_type == "Mul" and _is_scalar_const(ix, p.input[0])):
                return True
            return False
        if p.op_type not in _LAYOUT:
            return False
        t = p.input[0]
        seen += 1
    return False


def _dq_fed(ix: GraphIndex, t: str) -> bool:
    p = ix.producer.get(t)
    while p is not None and p.op_type in ("Cast", "Identity"):
        p = ix.producer.get(p.input[0])
    return p is not None and p.op_type == "DequantizeLinear"


def analyse(ix: GraphIndex) -> tuple[list[dict], list[Finding]]:
    """One record per attention block (Softmax between two activation x activation MatMuls, an ONNX
    Attention node, or a plugin), and a finding for each plain block not in the fusible form."""
    blocks: list[dict] = []
    findings: list[Finding] = []
    for i, n in enumerate(ix.nodes):
        if is_plugin_node(n):  # vitdeploy's and stock attention plugins
            blocks.append({"block": len(blocks), "node": node_label(n, i), "form": f"plugin {n.op_type}"})
        elif n.op_type == "Attention" and n.domain in ("", "ai.onnx"):
            blocks.append({"block": len(blocks), "node": node_label(n, i), "form": "onnx Attention"})
        elif n.op_type == "Softmax" and n.domain in ("", "ai.onnx"):
            rec = _softmax_block(ix, n, i)
            if rec is None:
                continue
            rec["block"] = len(blocks)
            blocks.append(rec)
            findings.extend(_findings(rec))
    fp32 = [b for b in blocks if b.get("softmax_casts") and b.get("softmax_precision") == "fp32"]
    if fp32:  # one line for all of them, not one per block
        findings.append(Finding(
            "note", "attention-form", f"{len(fp32)} attention block(s) run the Softmax in FP32 between Casts "
            "(TensorRT's fused attention accumulates in FP32 itself)", "check the engine's layer info for an "
            "mha/fmha kernel per block; keep FP32 only where measured accuracy needs it", fp32[0]["softmax"], "Softmax"))
    return blocks, findings


def _softmax_block(ix: GraphIndex, sm: onnx.NodeProto, index: int) -> dict | None:
    # upstream: Softmax <- (Cast/Add/scale/Reshape ...) <- BMM1 with two activation operands
    between: list[onnx.NodeProto] = []
    t = sm.input[0]
    bmm1 = None
    for _ in range(16):
        p = ix.producer.get(t)
        if p is None:
            return None
        if p.op_type == "MatMul":
            if all(not ix.is_const(x) for x in p.input[:2]):
                bmm1 = p
            break
        if p.op_type not in _PASS:
            return None
        between.append(p)
        data = [x for x in p.input if x and not ix.is_const(x)]
        if p.op_type in ("Add", "Where") and len(data) > 1:
            data = data[:1]  # follow the logits; a computed mask is reported below
        if not data:
            return None
        t = data[0]
    if bmm1 is None:
        return None
    # downstream: Softmax -> (Cast) -> BMM2 reading the probabilities as its first operand
    t = sm.output[0]
    after: list[onnx.NodeProto] = []
    bmm2 = None
    for _ in range(4):
        users = ix.users(t)
        if len(users) != 1:
            break
        u = users[0]
        if u.op_type == "MatMul" and u.input[0] == t and not ix.is_const(u.input[1]):
            bmm2 = u
            break
        if u.op_type not in ("Cast", "QuantizeLinear", "DequantizeLinear", "Identity"):
            break
        after.append(u)
        t = u.output[0]
    if bmm2 is None:
        return None
    reasons: list[str] = []
    scale_before = any(_scale_on_operand(ix, x) for x in bmm1.input[:2])
    scale_after = [b for b in between if b.op_type in ("Mul", "Div") and any(_is_scalar_const(ix, x) for x in b.input)]
    reshapes = [b for b in between if b.op_type in ("Reshape", "Squeeze", "Unsqueeze", "Transpose")]
    adds = [b for b in between if b.op_type in ("Add", "Sub", "Where")]
    bias = None
    computed_mask = False
    for a in adds:
        consts = [x for x in a.input if ix.is_const(x)]
        if consts:
            shape = ix.shapes.get(consts[0])
            bias = {"node": a.name, "shape": shape, "rank": len(shape) if shape is not None else None}
        else:
            computed_mask = True
    if scale_after:
        reasons.append("the scale is applied after MatMul(q, kᵀ)")
    if reshapes:
        reasons.append(f"{reshapes[0].op_type} between MatMul(q, kᵀ) and Softmax")
    if bias is not None and bias["rank"] is not None and bias["rank"] > 4:
        reasons.append(f"{bias['rank']}-D additive bias")
    others = [b for b in between if b not in scale_after and b not in reshapes and b not in adds and b.op_type != "Cast"]
    if others:
        reasons.append(f"{others[0].op_type} between MatMul(q, kᵀ) and Softmax")
    quantized = [x for x in (*bmm1.input[:2], bmm2.input[1]) if _dq_fed(ix, x)] + \
        [u.name for u in after if u.op_type == "QuantizeLinear"]
    if quantized:
        reasons.append("Q/DQ on the attention BMMs or the Softmax output")
    sm_type = ix.types.get(sm.input[0])
    precision = {onnx.TensorProto.FLOAT16: "fp16", onnx.TensorProto.FLOAT: "fp32",
                 onnx.TensorProto.BFLOAT16: "bf16"}.get(sm_type, "?")
    casts = any(b.op_type == "Cast" for b in between) and any(u.op_type == "Cast" for u in after)
    q_shape = ix.shapes.get(bmm1.input[0])
    head = q_shape[-1] if q_shape and isinstance(q_shape[-1], int) else None
    lo, hi, mult = T.MHA_HEAD_SIZE
    rec = {
        "softmax": node_label(sm, index), "bmm1": bmm1.name, "bmm2": bmm2.name,
        "form": "not fusible" if reasons else "fusible",
        "scale": "before BMM1" if scale_before else ("after BMM1" if scale_after else "none (folded or 1)"),
        "bias": bias, "computed_mask": computed_mask, "softmax_precision": precision, "softmax_casts": casts,
        "quantized": bool(quantized), "head_size": head, "reasons": reasons,
    }
    if head is not None and not (lo <= head <= hi and head % mult == 0):
        rec["head_size_note"] = f"head size {head} is outside TensorRT's FP16 MHA range ({lo}..{hi}, multiple of {mult})"
    return rec


def _findings(rec: dict) -> list[Finding]:
    out = []
    if rec["form"] == "not fusible":
        fixes = []
        if any("scale" in r for r in rec["reasons"]):
            fixes.append("multiply q (or k) by the scale before MatMul(q, kᵀ)")
        if any("between" in r or "-D additive" in r for r in rec["reasons"]):
            fixes.append("add the bias as one 4-D constant broadcast over the batch, with nothing else between "
                         "MatMul and Softmax")
        if rec["quantized"]:
            fixes.append("keep both attention BMMs and the Softmax in FP16 (vitdeploy's INT8 recipe does), or place "
                         "Q/DQ before BMM1, after the Softmax and after BMM2 for INT8 MHA")
        out.append(Finding("warning", "attention-form", f"attention block {rec['block']}: {'; '.join(rec['reasons'])}: "
                           "TensorRT's fused attention kernel cannot match it", "; ".join(fixes) or "see TensorRT's "
                           "Fused Attention documentation", rec["softmax"], "Softmax"))
    if rec.get("head_size_note"):
        out.append(Finding("note", "attention-form", f"attention block {rec['block']}: {rec['head_size_note']}",
                           "nothing to fix in the graph; expect unfused attention kernels", rec["softmax"], "Softmax"))
    if rec["computed_mask"]:
        out.append(Finding("note", "attention-form", f"attention block {rec['block']}: the mask is computed at run "
                           "time", "fold it to a constant if it depends on no input", rec["softmax"], "Softmax"))
    return out

