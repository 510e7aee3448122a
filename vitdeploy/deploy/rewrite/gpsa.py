"""`gpsa`: ConViT's gated positional self-attention -> one `GatedPositionalAttention` node.

What is matched (by structure, whatever exporter wrote it):

    MatMul(A, V) -> Transpose -> Reshape                       (heads merged, [B, N, C])
    A = Add(Mul(1 - g, Softmax(content)), GP)                  [ / ReduceSum(A, -1) ]
    content = MatMul(q, kᵀ) * scale  (or / 1/scale)
    GP = Mul(g, Softmax(pos_proj(rel_indices)))  -- or a constant, when the exporter folded it

where q and k are layout ops (Reshape/Transpose/Gather/Split/...) of one tensor (timm's qk
Linear), V of another (the v Linear), and GP and 1 - g depend on no input at all except
through Shape ops. That last condition is what makes the positional branch (relative
indices built with ScatterElements/ScatterND and Pow, pos_proj, softmax) and the gate
(sigmoid) constants: the pass evaluates them once with ONNX Runtime and folds them into the
replacement, so none of that subgraph remains. The gate comes from the content weight
(g = 1 - c), P = GP / g; every row of GP must sum to g, which is exactly the condition
under which timm's renormalisation is a no-op.

Modes:
- plugin: GatedPositionalAttention(qk, v, P [heads, N, N], g [heads]).
- native (TensorRT 10.3, no plugins): plain ONNX with the positional branch folded:
  (1-g)·softmax((q·scale) kᵀ)·V + (g·P)·V. timm's renormalisation is dropped in both modes:
  each blended row already sums to 1 (proved in tests/test_gpsa_plugin.py); the
  verify-then-replace check compares against the original graph, division included.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from vitdeploy.deploy.rewrite.driver import Candidate, Emission, RewritePass
from vitdeploy.deploy.rewrite.graph import SHAPE_OPS, match_each, producer, through
from vitdeploy.deploy.rewrite.probe import activations
from vitdeploy.errors import VitdeployError
from vitdeploy.plugins.gated_positional_attention.spec import SPEC

# Ops that only move or select data; q, k and V reach their Linear through these.
LAYOUT_OPS = {"Reshape", "Transpose", "Gather", "Squeeze", "Unsqueeze", "Split", "Slice", "Identity", "Flatten"}


def _only_consumer(t: gs.Tensor, op: str) -> gs.Node | None:
    users = list(t.outputs)
    return users[0] if len(users) == 1 and users[0].op == op else None


@dataclass
class Upstream:
    """Everything a set of tensors is computed from, stopping at `boundary` tensors and at Shape ops."""

    nodes: list[gs.Node]
    shape_sources: list[gs.Variable]  # tensors read only for their shape
    data_sources: list[gs.Variable]  # non-constant tensors read for their values (outside the boundary)


def _upstream(roots: list[gs.Tensor], boundary: set[str] = frozenset()) -> Upstream:
    nodes: dict[int, gs.Node] = {}
    shape_src: dict[str, gs.Variable] = {}
    data_src: dict[str, gs.Variable] = {}
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        t = stack.pop()
        if isinstance(t, gs.Constant) or not t.name or t.name in seen:
            continue
        seen.add(t.name)
        if t.name in boundary:
            continue
        node = producer(t)
        if node is None:
            data_src[t.name] = t
            continue
        if id(node) in nodes:
            continue
        nodes[id(node)] = node
        if node.op in SHAPE_OPS:
            shape_src.setdefault(node.inputs[0].name, node.inputs[0])
            continue
        stack.extend(node.inputs)
    # A tensor whose shape is read may also be computed inside the subgraph: then it is not an input.
    external = [t for t in shape_src.values() if t.name not in data_src and id(producer(t)) not in nodes]
    return Upstream(list(nodes.values()), external, list(data_src.values()))


def _softmax_term(t: gs.Tensor) -> tuple[gs.Tensor, gs.Node] | None:
    """Mul(coef, Softmax(x)) in either operand order -> (coef, softmax node)."""
    mul = producer(t)
    if mul is None or mul.op != "Mul" or len(mul.inputs) != 2:
        return None
    for i in (0, 1):
        sm = producer(mul.inputs[i])
        if sm is not None and sm.op == "Softmax" and sm.attrs.get("axis", -1) in (-1, 3):
            return mul.inputs[1 - i], sm
    return None


def _renormalised(add_out: gs.Tensor) -> gs.Tensor:
    """timm's `attn /= attn.sum(-1, keepdim)`: return the Div output if present, else the blend itself."""
    for user in add_out.outputs:
        if user.op == "Div" and user.inputs[0] is add_out:
            den = producer(user.inputs[1])
            if den is not None and den.op == "Unsqueeze":
                den = producer(den.inputs[0])
            if den is not None and den.op == "ReduceSum" and den.inputs[0] is add_out:
                return user.outputs[0]
    return add_out


def _scaled_scores(sm: gs.Node) -> tuple[gs.Node, gs.Tensor, bool] | None:
    """Softmax input = MatMul(q, kᵀ) * s  or  / s  -> (MatMul, s tensor, is_division)."""
    op = producer(sm.inputs[0])
    if op is None or op.op not in ("Mul", "Div") or len(op.inputs) != 2:
        return None
    for i, j in [(0, 1)] if op.op == "Div" else [(0, 1), (1, 0)]:
        mm = producer(op.inputs[i])
        if mm is not None and mm.op == "MatMul":
            return mm, op.inputs[j], op.op == "Div"
    return None


@dataclass
class _Match:
    name: str
    out: gs.Tensor
    qk: gs.Tensor
    v: gs.Tensor
    positional: gs.Tensor  # g·P: Mul(g, softmax(pos_proj(...))), or already folded to a constant
    coef_content: gs.Tensor  # 1 - g
    scale: gs.Tensor
    scale_divides: bool


class GpsaPass(RewritePass):
    name = "gpsa"
    description = "ConViT gated positional self-attention -> GatedPositionalAttention (positional branch folded)"
    modes = ("plugin", "native")

    # ------------------------------------------------------------------ find

    def _match(self, add: gs.Node) -> tuple[_Match | None, str | None]:
        if len(add.inputs) != 2:
            return None, None
        # One addend is (1 - g)·softmax(q kᵀ·scale), which reads the input; the other, g·P, must not.
        terms = [_softmax_term(t) for t in add.inputs]
        content = [i for i, term in enumerate(terms) if term and _upstream([term[1].inputs[0]]).data_sources]
        if len(content) != 1:
            return None, None
        ci = content[0]
        coef_content, content_sm = terms[ci]
        positional = add.inputs[1 - ci]
        where = f"blend {add.name or add.outputs[0].name}"
        if _upstream([positional]).data_sources:
            return None, None  # two input-dependent attentions: not a GPSA blend
        if _upstream([coef_content]).data_sources:
            return None, f"{where}: gate depends on the input, not folded"
        scores = _scaled_scores(content_sm)
        if scores is None:
            return None, f"{where}: content attention is not softmax(MatMul(q, k^T) * scale)"
        mm, scale, divides = scores
        qk = through(mm.inputs[0], LAYOUT_OPS)[0]
        if through(mm.inputs[1], LAYOUT_OPS)[0] is not qk:
            return None, f"{where}: q and k do not come from one qk projection"
        attn = _renormalised(add.outputs[0])
        pv = _only_consumer(attn, "MatMul")
        if pv is None or pv.inputs[0] is not attn:
            return None, f"{where}: attention is not applied to V by one MatMul"
        v = through(pv.inputs[1], LAYOUT_OPS)[0]
        tr = _only_consumer(pv.outputs[0], "Transpose")
        rs = _only_consumer(tr.outputs[0], "Reshape") if tr is not None else None
        if rs is None or list(tr.attrs.get("perm", [])) != [0, 2, 1, 3]:
            return None, f"{where}: heads are not merged by Transpose(0, 2, 1, 3) + Reshape"
        if v is qk:
            return None, f"{where}: q, k and v share one projection (not timm GPSA)"
        m = _Match(where, rs.outputs[0], qk, v, positional, coef_content, scale, divides)
        return m, None

    def find(self, graph: gs.Graph):
        notes: list[str] = []
        matches: list[_Match] = match_each([n for n in graph.nodes if n.op == "Add"], self._match, notes)
        if not matches:
            return [], notes
        try:
            values = self._probe(graph, matches)
        except VitdeployError as e:  # e.g. a symbolic image size: P [heads, N, N] needs a fixed N
            return [], [*notes, f"{len(matches)} GPSA blend(s) found but not folded: {e.message}"]
        order = {id(n): i for i, n in enumerate(graph.nodes)}
        cands = []
        for k, m in enumerate(matches):
            name = f"GPSA layer {k} ({m.name})"
            up = _upstream([m.out], boundary={m.qk.name, m.v.name})
            if up.data_sources:
                notes.append(f"{name}: reads {[t.name for t in up.data_sources][:3]} besides qk and v; not rewritten")
                continue
            params, why = self._constants(m, values)
            if why:
                notes.append(f"{name}: {why}; not rewritten")
                continue
            extra = [t for t in up.shape_sources if t.name not in (m.qk.name, m.v.name)]
            nodes = sorted(up.nodes, key=lambda n: order.get(id(n), 0))
            cands.append(Candidate(name, nodes, [m.qk, m.v, *extra], [m.out], params))
        return cands, notes

    @staticmethod
    def _probe(graph: gs.Graph, matches: list[_Match]) -> dict[str, np.ndarray]:
        """One ORT run of the graph for the constant-like tensors (and qk/v for their shapes)."""
        return activations(graph.copy(), [t for m in matches for t in (m.qk, m.v, m.positional, m.coef_content, m.scale)],
                           batch=2)

    @staticmethod
    def _constants(m: _Match, values: dict[str, np.ndarray]) -> tuple[dict, str | None]:
        def val(t):
            return np.asarray(t.values if isinstance(t, gs.Constant) else values[t.name])

        qk, v, gp = val(m.qk), val(m.v), val(m.positional)
        if qk.ndim != 3 or v.ndim != 3 or qk.shape[-1] != 2 * v.shape[-1]:
            return {}, f"qk {qk.shape} / v {v.shape} are not [B, N, 2C] / [B, N, C]"
        if gp.ndim == 4:
            if not np.array_equal(gp, np.broadcast_to(gp[:1], gp.shape)):
                return {}, "positional attention differs across the batch"
            gp = gp[0]
        heads, n = gp.shape[0], qk.shape[1]
        C = v.shape[-1]
        if gp.shape != (heads, n, n) or C % heads:
            return {}, f"positional attention {gp.shape} does not fit N={n}, C={C}"
        c1 = val(m.coef_content).astype(np.float64).reshape(-1)
        if c1.size not in (1, heads):
            return {}, "gate is not one value per head"
        g = np.broadcast_to(1.0 - c1, (heads,)).copy()
        if np.any(g < -1e-6) or np.any(g > 1 + 1e-6):
            return {}, "blend weights are not (1 - g, g) with g in [0, 1]"
        g = np.clip(g, 0.0, 1.0)
        gp = gp.astype(np.float64)
        # timm's renormalisation may be dropped only if every blended row sums to one: (1 - g) + Σ g·P = 1
        eps = float(np.finfo(qk.dtype).eps) if np.issubdtype(qk.dtype, np.floating) else 1e-7
        if not np.allclose(gp.sum(-1), g[:, None], atol=8 * eps * n, rtol=0):
            return {}, "blend weights are not (1 - g, g) with rows of P summing to one"
        safe = np.where(g > 0, g, 1.0)[:, None, None]
        pos = np.where(g[:, None, None] > 0, gp / safe, 1.0 / n)  # a head with g = 0 never reads P
        s = val(m.scale).astype(np.float64).reshape(-1)
        if s.size != 1:
            return {}, "attention scale is not a scalar"
        scale = 1.0 / s[0] if m.scale_divides else s[0]
        return {"pos": pos.astype(np.float32), "gate": g.astype(np.float32), "num_heads": int(heads),
                "scale": float(scale), "dim": int(C), "dtype": qk.dtype}, None

    # ------------------------------------------------------------------ emit

    def extra_opsets(self, mode: str) -> dict[str, int]:
        return {SPEC.domain: 1} if mode == "plugin" else {}

    def emit(self, graph: gs.Graph, cand: Candidate, mode: str) -> Emission:
        p = cand.params
        qk, v = cand.inputs[0], cand.inputs[1]
        dt = p["dtype"]
        tag = "gpsa" + "".join(ch for ch in cand.name.split(" (")[0] if ch.isdigit())
        out = gs.Variable(f"{cand.outputs[0].name}__{tag}", dtype=cand.outputs[0].dtype)
        if mode == "plugin":
            pos = gs.Constant(f"{tag}/pos", p["pos"].astype(dt))
            gate = gs.Constant(f"{tag}/gate", p["gate"].astype(dt))
            node = gs.Node(SPEC.name, f"{tag}/GatedPositionalAttention",
                           SPEC.node_attrs(num_heads=p["num_heads"], scale=p["scale"]),
                           [qk, v, pos, gate], [out], domain=SPEC.domain)
            return Emission([node], [out])
        return Emission(self._native(tag, qk, v, out, p), [out])

    @staticmethod
    def _native(tag: str, qk, v, out, p) -> list[gs.Node]:
        """Plain ONNX: (1-g)·[softmax(q kᵀ·scale)·V] + (g·P)·V, with g·P and 1-g folded to constants.

        Distributing V over the blend keeps the content term the textbook
        Mul(q, scale)-MatMul-Softmax-MatMul chain TensorRT fuses into its own attention kernel; the
        positional term is one batched MatMul with a constant. Blending the N×N matrices
        first (as timm does) would put elementwise ops between Softmax and MatMul and block that fusion.
        """
        h, C, dt = p["num_heads"], p["dim"], p["dtype"]
        d = C // h
        g = p["gate"].astype(np.float64).reshape(1, h, 1, 1)
        nodes: list[gs.Node] = []

        def op(kind, inputs, **attrs):
            o = gs.Variable(f"{tag}/{kind.lower()}{len(nodes)}")
            nodes.append(gs.Node(kind, f"{tag}/{kind}_{len(nodes)}", attrs, inputs, [o]))
            return o

        def const(name, arr):
            return gs.Constant(f"{tag}/{name}", np.asarray(arr))

        qk5 = op("Transpose", [op("Reshape", [qk, const("qk_shape", np.array([0, 0, 2, h, d], np.int64))])], perm=[2, 0, 3, 1, 4])
        q = op("Gather", [qk5, const("i0", np.array(0, np.int64))], axis=0)
        kt = op("Transpose", [op("Gather", [qk5, const("i1", np.array(1, np.int64))], axis=0)], perm=[0, 1, 3, 2])
        vh = op("Transpose", [op("Reshape", [v, const("v_shape", np.array([0, 0, h, d], np.int64))])], perm=[0, 2, 1, 3])
        # The scale on q before MatMul(q, kᵀ), nothing between that MatMul and the Softmax: the form
        # TensorRT's fused attention matches (its docs: Q or K "multiplied with the attention scale ...
        # before going into the first Batched Matrix Multiply").
        scores = op("MatMul", [op("Mul", [q, const("scale", np.array(p["scale"], dt))]), kt])
        content = op("MatMul", [op("Softmax", [scores], axis=-1), vh])
        positional = op("MatMul", [const("gated_pos", (g * p["pos"][None].astype(np.float64)).astype(dt)), vh])
        blended = op("Add", [op("Mul", [content, const("one_minus_gate", (1.0 - g).astype(dt))]), positional])
        merged = op("Transpose", [blended], perm=[0, 2, 1, 3])
        nodes.append(gs.Node("Reshape", f"{tag}/Reshape_out", {}, [merged, const("out_shape", np.array([0, 0, C], np.int64))], [out]))
        return nodes
