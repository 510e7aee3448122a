"""`attention_scale`: move an attention's scale from the logits onto q, the form TensorRT's fused attention matches.

What is matched (by structure):

    Softmax( MatMul(q, kᵀ) · s )      or      Softmax( MatMul(q, kᵀ) / s )

with q and kᵀ activations (not weights), s a constant scalar, and the MatMul's output read only by that
Mul/Div (timm's ConViT MHSA blocks, `attn = (q @ k.transpose(-2, -1)) * self.scale`, and any exporter
that writes the scale after the first batched MatMul). Emitted: ``MatMul(q · s, kᵀ)`` (``q / s``), the
same value up to rounding, so nothing sits between ``MatMul(q, kᵀ)`` and the Softmax. TensorRT's "Fused
Attention" documentation requires exactly that: "Q or K multiplied with the attention scale ... before going
into the first Batched Matrix Multiply". One mode serves both `plugin` and `native`; the verify-then-replace
driver compares every replacement with the subgraph it replaces.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from vitdeploy.deploy.rewrite.driver import Candidate, Emission, RewritePass
from vitdeploy.deploy.rewrite.graph import const_nodes, const_value


def _activation(t: gs.Tensor) -> bool:
    return isinstance(t, gs.Variable) and const_value(t) is None


class AttentionScalePass(RewritePass):
    name = "attention_scale"
    description = "attention scale after MatMul(q, kᵀ) -> on q before it (TensorRT's fused-attention form)"
    modes = ("plugin", "native")

    def find(self, graph: gs.Graph):
        cands = []
        for sm in graph.nodes:
            if sm.op != "Softmax":
                continue
            scaled = sm.inputs[0]
            op = scaled.inputs[0] if scaled.inputs else None
            if op is None or op.op not in ("Mul", "Div") or len(op.inputs) != 2 or len(scaled.outputs) != 1:
                continue
            order = [(0, 1), (1, 0)] if op.op == "Mul" else [(0, 1)]
            for i, j in order:
                logits, s = op.inputs[i], op.inputs[j]
                mm = logits.inputs[0] if isinstance(logits, gs.Variable) and logits.inputs else None
                value = const_value(s)
                if mm is None or mm.op != "MatMul" or value is None or value.size != 1 or len(logits.outputs) != 1:
                    continue
                if not all(_activation(x) for x in mm.inputs[:2]):
                    continue  # a Linear, not q·kᵀ
                nodes = [*const_nodes(s), mm, op]  # a Constant node's output: part of the subgraph
                cands.append(Candidate(f"scale of {sm.name or scaled.name}", nodes, list(mm.inputs[:2]), [scaled],
                                       {"op": op.op, "scale": value.reshape(())}))
                break
        return cands, []

    def emit(self, graph: gs.Graph, cand: Candidate, mode: str) -> Emission:
        q, kt = cand.inputs
        p = cand.params
        tag = f"{cand.outputs[0].name}__qscale"
        s = gs.Constant(f"{tag}/scale", np.asarray(p["scale"]))
        qs = gs.Variable(f"{tag}/q", dtype=q.dtype)
        out = gs.Variable(f"{tag}/logits", dtype=cand.outputs[0].dtype)
        nodes = [gs.Node(p["op"], f"{tag}/{p['op']}", {}, [q, s], [qs]),
                 gs.Node("MatMul", f"{tag}/MatMul", {}, [qs, kt], [out])]
        return Emission(nodes, [out])
