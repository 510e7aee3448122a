"""No block passed over in silence: every Softmax (and ONNX Attention node) the passes leave in a graph,
named by its node, with what it is and why it stays.

A pass that looked at a node and left it says why (`RewritePass.verdicts`: node name -> (kind, cause));
the last pass to speak about a node is the one the census quotes. A node no pass explained is classified
here by structure alone:

  rewritten  a pass's own native emission: the block, rewritten as plain attention in TensorRT's fusible form;
  global     attention a pass recognised and leaves to TensorRT's own fused attention (one window over the
             whole map, keys/values from another tensor, ...);
  declined   windowed or local attention a pass recognised and could not replace, with the cause;
  attention  a Softmax weighting values (Softmax(f(q·kᵀ)) · v) that no pass claims: left as plain ONNX
             for TensorRT's fused attention;
  other      a Softmax that is not attention-shaped (a classifier head, a gate, a blend).
"""
from __future__ import annotations

import onnx

KINDS = ("rewritten", "global", "declined", "attention", "other")
_LOGIT_OPS = {"Add", "Sub", "Mul", "Div", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Cast", "Where", "Transpose"}


def node_name(n: onnx.NodeProto, index: int) -> str:
    return n.name or (n.output[0] if n.output and n.output[0] else f"{n.op_type}#{index}")


def _attention_shaped(model: onnx.ModelProto, sm: onnx.NodeProto) -> bool:
    """Softmax -> MatMul(probs, ·), with logits from a MatMul through elementwise and view ops."""
    producer = {o: n for n in model.graph.node for o in n.output}
    users = [n for n in model.graph.node if sm.output[0] in n.input]
    if len(users) != 1 or users[0].op_type != "MatMul" or users[0].input[0] != sm.output[0]:
        return False
    t = sm.input[0]
    for _ in range(12):
        p = producer.get(t)
        if p is None:
            return False
        if p.op_type == "MatMul":
            return True
        if p.op_type not in _LOGIT_OPS:
            return False
        t = p.input[0]
    return False


def attention_census(model: onnx.ModelProto, verdicts: dict[str, tuple[str, str]]) -> list[dict]:
    """[{"node", "op", "kind", "why"[, "pass"]}] for every Softmax / Attention node of `model`, in graph order."""
    out = []
    for i, n in enumerate(model.graph.node):
        if n.op_type not in ("Softmax", "Attention") or n.domain not in ("", "ai.onnx"):
            continue
        name = node_name(n, i)
        if name in verdicts:
            kind, why, by = verdicts[name]
            out.append({"node": name, "op": n.op_type, "kind": kind, "why": why, "pass": by})
        elif n.op_type == "Attention" or _attention_shaped(model, n):
            out.append({"node": name, "op": n.op_type, "kind": "attention",
                        "why": "attention no pass rewrites: left as plain ONNX for TensorRT's fused attention"})
        else:
            out.append({"node": name, "op": n.op_type, "kind": "other",
                        "why": "not attention-shaped (the Softmax does not weight values)"})
    return out


def summary(census: list[dict]) -> str:
    """'12 Softmax nodes left: 4 global attention, 1 declined, ...' ('' when none)."""
    if not census:
        return ""
    counts = {k: sum(c["kind"] == k for c in census) for k in KINDS}
    words = {"rewritten": "rewritten (native)", "global": "global attention", "declined": "declined",
             "attention": "other attention", "other": "not attention"}
    parts = [f"{counts[k]} {words[k]}" for k in KINDS if counts[k]]
    return f"{len(census)} Softmax/Attention node{'s' if len(census) != 1 else ''} left: {', '.join(parts)}"


def lines(census: list[dict], width: int = 160) -> list[str]:
    """What a console shows of the census: the summary, then the nodes by kind -- every node named; those
    left for a cause (declined, unclaimed attention) one per line with it."""
    if not census:
        return []
    out = [summary(census)]
    for kind, label in (("global", "global attention, left to TensorRT's fused attention"),
                        ("rewritten", "rewritten as plain attention (native)"), ("other", "not attention")):
        names = [c["node"] for c in census if c["kind"] == kind]
        if names:
            out.append(f"  {label}: {', '.join(names)}"[:width])
    for c in census:
        if c["kind"] in ("declined", "attention"):
            out.append(f"  {c['kind']} {c['node']}: {c['why']}")
    return out
