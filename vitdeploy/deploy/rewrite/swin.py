"""`swin`: windowed attention, wherever it is -> one `WindowAttention` (or `WindowAttentionRelPos`) node, or
plain folded ONNX.

Named after the first family it served; it matches by structure whatever model, exporter (dynamo,
TorchScript) or implementation wrote the block -- Swin V1/V2 (timm, torchvision, Hugging Face), SAM's and
MobileSAM's windowed blocks, TinyViT, MaxViT's block and grid attention, Twins' locally-grouped attention,
Hiera's mask units:

    x ──layout──▶ [LayerNorm] ──▶ Linear(s) ──layout/scale/[max-pool]──▶ q, k, v
    logits = MatMul(q, kᵀ) [·s] (+ constant terms) [+ a term computed from q]     (or one ONNX Attention node)
    MatMul(Softmax(logits), v) ──layout──▶ Linear ──layout──▶ y

"layout" = ops that only move data (Reshape/Transpose/Slice/Concat/Pad/Gather/...): roll, pad, window or grid
partition, the q/k/v split, reverse, crop, roll back. q, k and v may come from one Linear or several on the
same tokens, split type-first ([3, heads, hd]: timm Swin, SAM, Twins, Hiera) or head-first ([heads, 3·hd]:
TinyViT, MaxViT-rw); windows may be folded into the batch ([B·nW, heads, N, N]), kept as an axis ([B, nW,
heads, N, N]: Twins; [B, heads, nW, N, N]: Hiera) or folded with the heads ([B·nW·heads, N, N]: SAM). None of
that is read off the graph: everything is *measured* with ONNX Runtime on the block alone (`_measure`):

- tokens: x filled with its own element codes is pushed through; each row reaching the qkv Linear names one
  token of x (or zero padding), which also says which axis of x holds the channels (NHWC or NCHW);
- the split: the Linears' outputs are overridden by row codes, then by channel codes: every element of q, k
  and v then names its qkv row (so its token, window and, with pooled queries, the rows pooled) and its qkv
  column (so its head, and the column permutation that makes the plugin's type-first layout);
- the output: the attention output overridden by (lead, slot, dim) codes, the proj output by row and channel
  codes, give where every query's result lands in y (crop, reverse, roll back) and which proj input column
  holds which (head, dim);
- the layout: `window_layout.find_layout` names the one partition (window with shift, padding, pad-first;
  grid; mask units with query pooling) producing exactly those slots and output positions;
- the logits: q·kᵀ forced to 0 leaves the additive terms (bias [+ shift mask], whose mask value is measured:
  timm -100, Hugging Face's Swinv2 -200); qkv forced to ones gives the per-head scale. A term computed from
  q (SAM's decomposed relative position) is measured by unit queries and must be exactly
  q·R_h[Δy] + q·R_w[Δx] (`window_layout.fit_decomposed`), else it is named and declined.

A block whose one window is the whole map in its own order is global attention: with no bias, or with a
bias computed from q (SAM's global blocks), it is left to TensorRT's fused attention and named; with a
constant relative-position bias (a Swin, MaxViT or TinyViT stage whose map equals its window) it is
replaced like its windowed neighbours. Every Softmax the pass looks at and leaves is named, with its cause,
in the report's notes.

The Linears and a LayerNorm between the partition and the qkv Linear (TinyViT) are per token, so they commute
with the data movement: the plugin gets qkv in original token order ([B, H*W, 3C], type-first) and its output
goes straight into the proj MatMul (with its rows permuted to the plugin's head order).

Modes:
- plugin: [Transpose] -> Reshape -> [LayerNorm] -> MatMul(Wqkv)+b -> WindowAttention[RelPos] -> MatMul(Wproj)+b
  -> Reshape [-> Transpose].
- native (TensorRT 10.3 / JetPack 6, no plugins): one constant Gather for roll+pad+partition, 4-D
  MatMul/Softmax attention with ONE constant additive bias (relative-position bias + mask) or SAM's
  decomposed bias computed from q by two batched MatMuls, one constant Gather for reverse+crop+roll back.
  No Shape ops: every Reshape is constant. V2 adds the q/k normalisation, Hiera a ReduceMax over pooled queries.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from vitdeploy.deploy.rewrite.driver import Candidate, Emission, RewritePass
from vitdeploy.deploy.rewrite.emit import Emitter, taken_names
from vitdeploy.deploy.rewrite.graph import Walker, const_value, producer
from vitdeploy.deploy.rewrite.probe import activations, probe
from vitdeploy.deploy.rewrite.window_layout import (  # noqa: F401  (window_order, shift_mask: part of the API)
    MASK_VALUE, WindowLayout, candidate_maps, find_layout, fit_decomposed, output_positions, pooled_query_rows,
    region_mismatch, shift_mask, slot_tokens, split_bias_and_mask, window_order)

# Ops that only move or select data (the roll/pad/partition/reverse/crop of a windowed block).
LAYOUT_OPS = frozenset({"Reshape", "Transpose", "Slice", "Concat", "Pad", "Squeeze", "Unsqueeze", "Gather",
                        "Identity", "Split", "Flatten"})
SCALE_OPS = frozenset({"Mul", "Div"})  # passed only with one activation input (a scale, not a product)
# Between the qkv Linear and q/k/v: layout plus a scalar scale on q (and on k for SDPA exports); on q also
# Hiera's query pooling (a ReduceMax over a reshaped axis).
QKV_OPS = LAYOUT_OPS | SCALE_OPS
Q_OPS = QKV_OPS | {"ReduceMax"}
# Between q·kᵀ and the Softmax: additive terms, view changes and a scale.
LOGIT_OPS = frozenset({"Add", "Reshape", "Identity", "Mul", "Div", "Squeeze", "Unsqueeze"})
# What F.normalize(x, dim=-1) exports to, besides the Div: the L2 norm over the last axis, clamped.
NORM_OPS = frozenset({"ReduceL2", "ReduceSum", "ReduceSumSquare", "Sqrt", "Pow", "Mul", "Clip", "Max", "Expand",
                      "Abs", "Reshape", "Unsqueeze", "Identity", "Cast"})
# A logit term computed from q (SAM's get_decomposed_rel_pos_bias: einsums with gathered tables, broadcast add).
BIAS_OPS = LAYOUT_OPS | {"Einsum", "MatMul", "Add", "Mul", "Expand", "Cast"}
NATIVE_NORM_EPS = 2.0 ** -14  # native clamp of ‖q‖, ‖k‖: F.normalize uses 1e-12, which FP16 flushes to 0 (0/0 on zero rows)


# ----------------------------------------------------------------------------- structure


def _value(t) -> np.ndarray:
    return t if isinstance(t, np.ndarray) else const_value(t)


@dataclass
class Linear:
    """out = MatMul(input, w) [+ b], w constant [C_in, C_out]; `w_t`/`b_t` the tensors, to reuse initializers."""

    out: gs.Variable
    input: gs.Variable
    w: np.ndarray
    b: np.ndarray | None
    w_t: gs.Tensor | None = None
    b_t: gs.Tensor | None = None


@dataclass
class Core:
    """The structural match around one Softmax (or opset-23 Attention node), before anything is measured."""

    name: str  # the Softmax's (or Attention node's) node name: what the report calls the block
    x: gs.Variable
    y: gs.Variable
    w_in: gs.Variable  # data input of the qkv Linear(s)
    w_tok: gs.Variable  # where tokens are decoded: w_in, or the input of a LayerNorm right above it
    ln: gs.Node | None  # that LayerNorm (TinyViT normalises after the partition), re-emitted on x
    linears: list[Linear]  # the q/k/v projections (one fused, or several on the same tokens)
    q: gs.Tensor  # the attention operands as measured: q [.., Nq, hd] (pre-normalisation for cosine)
    k: gs.Tensor  # kᵀ [.., hd, N] or k [.., N, hd]
    v: gs.Tensor
    qk: gs.Variable | None  # q·kᵀ (None for an ONNX Attention node)
    logits: gs.Variable | None  # Softmax input
    av: gs.Variable  # attention output, before heads are merged
    proj: Linear
    proj_in: gs.Variable
    cosine: bool = False  # Swin V2: q and k L2-normalised before q·kᵀ
    attention: gs.Node | None = None  # opset-23 Attention node holding q·kᵀ, the Softmax and ·v
    mask: gs.Tensor | None = None  # its additive mask input
    q_bias: gs.Tensor | None = None  # where a logit term computed from q leaves the q path (SAM)
    has_bias: bool = False  # the logits add a constant term (relative-position bias, mask), by structure
    views: tuple[str, ...] = ()  # 4-D reshapes between x and the qkv Linear: they name the map (H, W)

    @property
    def channels_in(self) -> int:
        return self.linears[0].w.shape[0]


class _Walker(Walker):
    """The windowed-attention match on top of the shared activation walker."""

    def linear(self, t: gs.Tensor) -> Linear | None:
        """t = MatMul(a, W) [+ b] with constant W [C_in, C_out], else None."""
        out, p, b_t = t, producer(t), None
        if p is not None and p.op == "Add" and len(self.data_inputs(p)) == 1:
            b_t = next(i for i in p.inputs if not self.is_dep(i))
            t = self.data_inputs(p)[0]
            p = producer(t)
        if p is None or p.op != "MatMul" or len(self.data_inputs(p)) != 1 or not self.is_dep(p.inputs[0]):
            return None
        w = const_value(p.inputs[1])
        b = None if b_t is None else const_value(b_t)
        if w is None or w.ndim != 2 or (b_t is not None and (b is None or b.size != w.shape[1])):
            return None
        return Linear(out, p.inputs[0], w, None if b is None else b.reshape(-1),
                      p.inputs[1] if isinstance(p.inputs[1], gs.Constant) else None,
                      b_t if isinstance(b_t, gs.Constant) else None)

    def l2_source(self, t: gs.Tensor) -> gs.Tensor | None:
        """x when t = Div(x, f(x)) with f made only of NORM_OPS and a reduction (F.normalize as
        exported: x / Expand(Clip(ReduceL2(x, -1), eps))), else None. That f really is the L2
        norm over the head dimension is then proven by the candidate's verification."""
        p = producer(t)
        if p is None or p.op != "Div" or len(p.inputs) != 2 or not all(self.is_dep(i) for i in p.inputs):
            return None
        x, d = p.inputs
        seen: set[int] = set()
        reduces = False
        stack = [d]
        while stack:
            u = stack.pop()
            if u is x or not self.is_dep(u):
                continue
            q = producer(u)
            if q is None or q.op not in NORM_OPS or len(seen) > 16:
                return None
            if id(q) not in seen:
                seen.add(id(q))
                reduces |= q.op.startswith("Reduce")
                stack.extend(self.data_inputs(q))
        return x if reduces else None

    def _unnormalized(self, t: gs.Tensor) -> tuple[gs.Tensor, bool]:
        """(the tensor before an L2 normalisation on t's path, True), or (t, False)."""
        front = self.up([t], QKV_OPS, one_input=SCALE_OPS)[0]
        if len(front) == 1:
            x = self.l2_source(front[0])
            if x is not None:
                return x, True
        return t, False

    def projections(self, q: gs.Tensor, k: gs.Tensor, v: gs.Tensor):
        """(Linears, q, k measured tensors, cosine, q-path tensors) or (None, why): the Linears q, k and v come
        from (through layout, scales and, on q, a max-pool), all on the same tokens."""
        (qn, q_norm), (kn, k_norm) = self._unnormalized(q), self._unnormalized(k)
        if q_norm != k_norm:
            return None, "q and k are not normalised alike (one-sided normalisation)"
        fronts, paths = [], []
        for t, ops in ((qn, Q_OPS), (kn, QKV_OPS), (v, QKV_OPS)):
            front, nodes = self.up([t], ops, one_input=SCALE_OPS | {"ReduceMax"})
            if len(front) != 1:
                return None, "q, k or v is assembled from several tensors"
            fronts.append(front[0])
            paths.append(nodes)
        lins: dict[int, Linear] = {}
        for f in fronts:
            if id(f) not in lins:
                lin = self.linear(f)
                if lin is None:
                    p = producer(f)
                    what = p.op if p is not None else "a graph input"
                    return None, f"q, k or v comes from {what}, not from a Linear (MatMul with a constant weight)"
                lins[id(f)] = lin
        inputs = {id(lin.input) for lin in lins.values()}
        if len(inputs) != 1:
            q_in = lins[id(fronts[0])].input
            if all(lins[id(f)].input is not q_in for f in fronts[1:]):
                return None, ("global attention with keys/values from another tensor than the queries (spatially "
                              "reduced or cross attention): left to TensorRT's fused attention")
            return None, ("global attention with q, k and v projected from different tensors (e.g. positional "
                          "embeddings added to q and k only, as DETR's): left to TensorRT's fused attention")
        on_path = [{id(t) for n in nodes for t in n.outputs} | {id(f)} for nodes, f in zip(paths, fronts)]
        kv_path = on_path[1] | on_path[2]
        q_path = (on_path[0] | {id(qn)}) - kv_path  # what only the query passes through
        return (list(lins.values()), qn, kn, q_norm, (q_path, kv_path)), None

    def logit_terms(self, softmax: gs.Node):
        """From the Softmax input up to q·kᵀ: (qk MatMul, the root of a term computed from activations or None,
        whether a constant term is added)."""
        t, extra, const = softmax.inputs[0], None, False
        while True:
            p = producer(t)
            if p is None:
                return None, None, const
            ins = self.data_inputs(p)
            if p.op == "MatMul" and len(ins) == 2:
                return p, extra, const
            const |= p.op == "Add" and len(ins) == 1
            if p.op == "Add" and len(ins) == 2 and extra is None:
                # one side leads to q·kᵀ through LOGIT_OPS, the other is a term computed at run time
                a, b = ins
                if self._reaches_qk(a):
                    t, extra = a, b
                elif self._reaches_qk(b):
                    t, extra = b, a
                else:
                    return None, None, const
                continue
            if p.op not in LOGIT_OPS or len(ins) != 1:
                return None, None, const
            t = ins[0]

    def _reaches_qk(self, t: gs.Tensor) -> bool:
        for _ in range(8):
            p = producer(t)
            if p is None:
                return False
            ins = self.data_inputs(p)
            if p.op == "MatMul" and len(ins) == 2:
                return True
            if p.op not in LOGIT_OPS or len(ins) != 1:
                return False
            t = ins[0]
        return False

    def bias_source(self, root: gs.Tensor, paths) -> tuple[gs.Tensor | None, str | None]:
        """Where a logit term computed at run time reads the query: the one q-path tensor the term's
        activations come from (through BIAS_OPS), else why it is not a term of q alone."""
        q_path, kv_path = paths
        sources: dict[int, gs.Tensor] = {}
        stack, seen = [root], set()
        while stack:
            t = stack.pop()
            if id(t) in seen or not self.is_dep(t):
                continue
            seen.add(id(t))
            if id(t) in q_path:
                sources[id(t)] = t
                continue
            if id(t) in kv_path:
                return None, "the additive logit term depends on the keys or values: not supported"
            p = producer(t)
            if p is None or p.op not in BIAS_OPS or len(seen) > 64:
                return None, "the additive logit term depends on activations other than the query: not supported"
            stack.extend(self.data_inputs(p))
        if len(sources) != 1:
            return None, "the additive logit term reads the query at several points: not supported"
        return next(iter(sources.values())), None

    def up_private(self, t: gs.Tensor, own: list[gs.Node]) -> tuple[list[gs.Tensor], list[gs.Node]]:
        """Up from t through layout ops, but not past a tensor something outside the block also reads (the
        residual stream): (frontier, layout nodes). Hiera's first block reads its tokens after Unroll, whose
        output the residual Add reads too; the block starts there, not at the map before Unroll."""
        stops: set[int] = set()
        while True:
            frontier: dict[int, gs.Tensor] = {}
            seen: dict[int, gs.Node] = {}
            crossed: list[gs.Tensor] = []
            stack = [t]
            while stack:
                u = stack.pop()
                p = producer(u)
                ins = self.data_inputs(p) if p is not None else []
                if id(u) in stops or p is None or p.op not in LAYOUT_OPS or not ins:
                    frontier[id(u)] = u
                    continue
                crossed.append(u)
                if id(p) not in seen:
                    seen[id(p)] = p
                    stack.extend(ins)
            inside = {id(n) for n in [*seen.values(), *own]}
            leaks = [u for u in crossed if id(u) not in stops
                     and any(id(c) not in inside for c in self.data_consumers(u))]
            if not leaks:
                return list(frontier.values()), list(seen.values())
            stops.update(id(u) for u in leaks)

    def match(self, softmax: gs.Node) -> tuple[Core | None, str | None]:
        """The structural match around one Softmax: (Core, None) or (None, why it is not windowed attention)."""
        if int(softmax.attrs.get("axis", -1)) not in (-1, len(softmax.inputs[0].shape or [0] * 4) - 1):
            return None, "not attention-shaped: the Softmax is not over the last axis"
        probs = softmax.outputs[0]
        users = self.data_consumers(probs)
        if len(users) == 1 and users[0].op == "MatMul" and users[0].inputs[1] is probs:
            return None, "the Softmax output is the second MatMul operand (v @ attnᵀ, channels-first attention): not supported"
        if len(users) != 1 or users[0].op != "MatMul" or users[0].inputs[0] is not probs:
            return None, "not attention-shaped: the Softmax output is not multiplied by values"
        av = users[0]
        qk_node, extra, has_bias = self.logit_terms(softmax)
        if qk_node is None:
            return None, "not attention-shaped: the logits are not a product of two activations plus terms"
        proj_in, why = self.projections(qk_node.inputs[0], qk_node.inputs[1], av.inputs[1])
        if proj_in is None:
            return None, why
        linears, q, k, cosine, q_path = proj_in
        q_bias = None
        if extra is not None:
            q_bias, why = self.bias_source(extra, q_path)
            if q_bias is None:
                return None, why
        core, why = self.finish(softmax.name, linears, av.outputs[0], q, k, av.inputs[1])
        if core is not None:
            core.qk, core.logits, core.cosine, core.q_bias = qk_node.outputs[0], softmax.inputs[0], cosine, q_bias
            core.has_bias = has_bias
        return core, why

    def match_attention(self, node: gs.Node) -> tuple[Core | None, str | None]:
        """The same block exported at opset 23 with SDPA: one ONNX `Attention` node, 4-D q/k/v, additive float
        mask (constant, or computed from q), no cache, not causal."""
        a = node.attrs
        if int(a.get("is_causal", 0)) or float(a.get("softcap", 0.0)) or int(a.get("qk_matmul_output_mode", 0)) \
                or "q_num_heads" in a or len([t for t in node.inputs[4:] if t.name]) \
                or any(o.outputs for o in node.outputs[1:]) or len(node.inputs) < 3:
            return None, "an Attention node with a cache, causal mask, softcap or 3-D inputs: not supported"
        proj_in, why = self.projections(node.inputs[0], node.inputs[1], node.inputs[2])
        if proj_in is None:
            return None, why
        linears, q, k, cosine, q_path = proj_in
        if cosine:  # cosine attention around an Attention node: not seen in any export
            return None, "cosine attention around an ONNX Attention node: not supported"
        mask = node.inputs[3] if len(node.inputs) > 3 and node.inputs[3].name else None
        q_bias = None
        if mask is not None and self.is_dep(mask):
            q_bias, why = self.bias_source(mask, q_path)
            if q_bias is None:
                return None, why
        core, why = self.finish(node.name, linears, node.outputs[0], q, k, node.inputs[2])
        if core is not None:
            core.attention, core.mask, core.q_bias = node, mask, q_bias
            core.has_bias = mask is not None and q_bias is None
        return core, why

    def finish(self, name, linears, av_out, q, k, v) -> tuple[Core | None, str | None]:
        """From the attention output: heads merged (layout) -> proj Linear -> layout -> y; from the qkv input:
        [LayerNorm] -> layout -> x."""
        t = av_out
        while True:
            cons = self.data_consumers(t)
            if len(cons) != 1:
                return None, "the attention output is used by several nodes before its projection"
            n = cons[0]
            if n.op == "MatMul" and n.inputs[0] is t:
                break
            if n.op not in LAYOUT_OPS or len(n.outputs) != 1:
                return None, f"the attention output goes through {n.op} before a Linear: no output projection"
            t = n.outputs[0]
        out = n.outputs[0]
        cons = self.data_consumers(out)
        if len(cons) == 1 and cons[0].op == "Add" and len(self.data_inputs(cons[0])) == 1:
            out = cons[0].outputs[0]
        proj = self.linear(out)
        if proj is None:
            return None, "the attention output is not projected by a Linear"
        ys, post = self.down(out, LAYOUT_OPS)
        if len(ys) != 1:
            return None, "the projected output is split into several tensors"
        w_in = linears[0].input
        w_tok, ln = w_in, None
        p = producer(w_in)
        if p is not None and p.op == "LayerNormalization" and int(p.attrs.get("axis", -1)) == -1 \
                and len(self.data_inputs(p)) == 1 and all(c.op == "MatMul" for c in self.data_consumers(w_in)) \
                and all(const_value(i) is not None for i in p.inputs[1:] if i.name):
            w_tok, ln = p.inputs[0], p  # TinyViT: LayerNorm after the partition, per token like the Linear
        own = [ln] if ln is not None else [c for c in self.data_consumers(w_in)]
        xs, pre = self.up_private(w_tok, own)
        if len(xs) != 1:
            return None, "the qkv input is assembled from several tensors"
        views = tuple(o.name for nd in pre if nd.op == "Reshape" for o in nd.outputs if o.name)
        return Core(name, xs[0], ys[0], w_in, w_tok, ln, linears, q, k, v, None, None, av_out, proj, t,
                    views=views), None


# ----------------------------------------------------------------------------- measurement


@dataclass
class Measured:
    """Everything the emission needs, measured from one block."""

    layout: WindowLayout
    heads: int
    head_dim: int
    scale: tuple[float, ...]  # per head
    w_qkv: np.ndarray  # [C_in, 3C], type-first columns
    b_qkv: np.ndarray | None
    pad_qkv: np.ndarray  # [3C]: the qkv of a padding token
    pad_in: np.ndarray | None  # [C_in]: what a padding token is at the qkv Linear's input (None: zeros)
    w_proj: np.ndarray  # rows in the plugin's (head, dim) order
    b_proj: np.ndarray | None
    x_channel_axis: int
    x_shape: tuple[int, ...]
    y_shape: tuple[int, ...]
    y_channel_axis: int
    rel_bias: np.ndarray | None = None  # [heads, N/q_stride, N]; None with decomposed tables
    rel_h: np.ndarray | None = None  # [heads, 2wh-1, hd]: SAM's decomposed relative position
    rel_w: np.ndarray | None = None
    cosine: bool = False
    mask_value: float = MASK_VALUE
    mask_diff: int = 0  # entries where the measured mask differs from timm's region-id mask
    bias_kind: str = "none"  # none | constant | decomposed
    opset: int = 18  # the graph's: what the native emission may use

    @property
    def channels(self) -> int:
        return self.heads * self.head_dim

    # the layout's attributes, read through (tests and reports ask the candidate's "layout")
    height = property(lambda self: self.layout.height)
    width = property(lambda self: self.layout.width)
    window = property(lambda self: self.layout.window)
    shift = property(lambda self: self.layout.shift)
    shifted = property(lambda self: self.layout.shifted)


class Declined(Exception):
    """A block the pass looked at and leaves: `kind` (global | windowed | other) and the cause."""

    def __init__(self, why: str, kind: str = "windowed"):
        super().__init__(why)
        self.why, self.kind = why, kind


def _codes_axis(values: np.ndarray, want: int) -> int | None:
    """The axis along which `values` (integer codes) step by one over `want` entries everywhere."""
    for ax in range(values.ndim):
        if values.shape[ax] != want:
            continue
        d = np.diff(values, axis=ax)
        if d.size and np.all(d == 1):
            return ax
    return None


def _decode_x(w_tok: np.ndarray, x_shape: tuple[int, ...], channels: int):
    """Rows of the probed qkv input (x filled with 1 + flat index) -> (token per row, -1 for padding; x's
    channel axis; tokens per image). None if a row is not one token's channels in order."""
    rows = np.rint(w_tok.reshape(-1, channels).astype(np.float64)).astype(np.int64)
    pad = np.all(rows == 0, axis=1)
    real = rows[~pad] - 1
    if real.size == 0 or real.min() < 0 or real.max() >= int(np.prod(x_shape)):
        return None
    idx = np.stack(np.unravel_index(real.reshape(-1), x_shape), axis=-1).reshape(len(real), channels, len(x_shape))
    axis = next((a for a in range(1, len(x_shape)) if x_shape[a] == channels
                 and np.all(idx[:, :, a] == np.arange(channels)[None])), None)
    if axis is None:
        return None
    others = [a for a in range(len(x_shape)) if a != axis]
    if not np.all(idx[:, :, others] == idx[:, :1, others]):
        return None
    spatial = [x_shape[a] for a in others[1:]]
    pos = idx[:, 0, others]
    tok = np.full(len(rows), -1, np.int64)
    tok[~pad] = pos[:, 0] * int(np.prod(spatial)) + np.ravel_multi_index(tuple(pos[:, 1:].T), spatial)
    return tok, axis, int(np.prod(spatial)), tuple(spatial)


def _row_code(shape) -> np.ndarray:
    """1 + row index, broadcast over the last axis (exact in FP32 for fewer than 2**24 rows)."""
    return (1 + np.arange(int(np.prod(shape[:-1])), dtype=np.float64)).reshape(*shape[:-1], 1).astype(np.float32)


def _ch_code(width: int, offset: int = 0) -> np.ndarray:
    return (1 + offset + np.arange(width, dtype=np.float64)).astype(np.float32)


def _ratio(coded: np.ndarray, ones: np.ndarray) -> np.ndarray | None:
    """Codes through a scaled path: coded / ones, rounded; None if not integers (the path mixes values)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = coded.astype(np.float64) / ones.astype(np.float64)
    if not np.all(np.isfinite(r)):
        return None
    out = np.rint(r)
    return out.astype(np.int64) if np.allclose(r, out, atol=1e-3) else None


def _orient(rows: np.ndarray, chans: np.ndarray):
    """(rows [lead, N], channels [lead, hd]) of an attention operand whose last two axes are [N, hd] or
    [hd, N] (kᵀ): the token axis is the one along which channels are constant. None if neither."""
    if rows.ndim < 2:
        return None
    for tok_axis in (-2, -1):
        ch_axis = -1 if tok_axis == -2 else -2
        if np.all(chans == np.take(chans, [0], axis=tok_axis)) and np.all(rows == np.take(rows, [0], axis=ch_axis)):
            r = np.take(rows, 0, axis=ch_axis)
            c = np.take(chans, 0, axis=tok_axis)
            return r.reshape(-1, r.shape[-1]), c.reshape(-1, c.shape[-1])
    return None


def _global_by_shape(core: Core, values) -> None:
    """Declined(global) without a probe when the shapes already say it: every token of the map is a key of
    every query and the logits add no constant term. Probing such a block would run it a dozen times --
    SAM ViT-B's global blocks hold [12, 4096, 4096] logits at 1024 px."""
    keys = core.logits.shape[-1] if core.logits is not None and core.logits.shape else None
    x = values[core.x.name]
    tokens = x.size // max(x.shape[0], 1) // core.channels_in
    if isinstance(keys, int) and keys == tokens and not core.has_bias:
        what = "a bias computed from the query" if core.q_bias is not None else "no bias"
        raise Declined(f"global attention over {tokens} tokens (one window holding the whole map, nothing moves; "
                       f"{what}): left to TensorRT's fused attention", kind="global")


def _measure(core: Core, nodes, extras, values, opset) -> Measured:
    """Probe the block (see the module docstring) and name its layout; raises Declined with the cause."""
    x_val = values[core.x.name]
    if x_val.dtype != np.float32:
        raise Declined(f"the block computes in {x_val.dtype}; run the rewrite before precision conversion")
    c_in = core.channels_in
    if x_val.size >= 2 ** 24:
        raise Declined("too large to probe exactly in FP32")
    real = {core.x.name: x_val, **{e.name: values[e.name] for e in extras}}
    codes = (1 + np.arange(x_val.size, dtype=np.float64)).astype(np.float32).reshape(x_val.shape)
    lin_names = [lin.out.name for lin in core.linears]
    first = probe(nodes, {**real, core.x.name: codes}, [
        ({}, [core.w_tok.name, core.w_in.name, core.av.name, core.proj.out.name, *core.views, *lin_names])], opset)[0]
    w_tok, w_in, av_val, proj_val = first[:4]
    view_vals, lin_vals = first[4:4 + len(core.views)], first[4 + len(core.views):]
    decoded = _decode_x(w_tok, x_val.shape, c_in)
    if decoded is None:
        raise Declined("the data movement before the qkv Linear mixes channels (not a token layout)")
    tok, x_axis, tokens, spatial = decoded
    pad_rows = np.nonzero(tok < 0)[0]
    pad_in = w_in.reshape(-1, c_in)[pad_rows[0]].astype(np.float32) if len(pad_rows) else None
    if pad_in is not None and not np.allclose(w_in.reshape(-1, c_in)[pad_rows], pad_in[None], atol=1e-5):
        raise Declined("padding tokens differ from one another at the qkv Linear")
    if pad_in is not None and not pad_in.any():
        pad_in = None
    av_shape, proj_shape = tuple(av_val.shape), tuple(proj_val.shape)
    if av_shape[-2] == tokens and not core.has_bias and pad_in is None and not (tok < 0).any():
        what = "a bias computed from the query" if core.q_bias is not None else "no bias"  # before a dozen more runs
        raise Declined(f"global attention over {tokens} tokens (one window holding the whole map, nothing moves; "
                       f"{what}): left to TensorRT's fused attention", kind="global")
    views = [tuple(int(d) for d in v.shape[1:3]) for v in view_vals
             if v.ndim == 4 and v.shape[3] == c_in and v.shape[1] * v.shape[2] == tokens]

    # q, k, v: row codes, negated row codes (pooled queries), channel codes, ones; logits; output codes
    offsets = np.cumsum([0] + [lin.w.shape[1] for lin in core.linears])
    rows = {n: _row_code(v.shape) for n, v in zip(lin_names, lin_vals)}
    chans = {n: _ch_code(v.shape[-1], int(o)) for n, v, o in zip(lin_names, lin_vals, offsets)}
    ones = {n: np.float32(1.0) for n in lin_names}
    operands = [core.q.name, core.k.name, core.v.name] + ([core.q_bias.name] if core.q_bias is not None else [])
    mask_const = None if core.mask is None else const_value(core.mask)
    bias_t = core.logits.name if core.attention is None else (
        core.mask.name if core.mask is not None and mask_const is None else None)
    zero_qk = {core.qk.name: 0.0} if core.qk is not None else {}
    proj_rows = _row_code(proj_shape)
    variants = [
        (rows, operands), ({n: -r for n, r in rows.items()}, [core.q.name]), (chans, operands),
        ({**ones}, operands + ([core.logits.name] if core.logits is not None else [])),
        ({**ones, **zero_qk}, [bias_t] if bias_t else []),
        (zero_qk, [bias_t] if bias_t else []),
        ({core.av.name: _row_code(av_shape[:-1]).reshape(*av_shape[:-2], 1, 1)}, [core.proj_in.name]),
        ({core.av.name: (1 + np.arange(av_shape[-2], dtype=np.float32)).reshape(-1, 1)}, [core.proj_in.name]),
        ({core.av.name: _ch_code(av_shape[-1])}, [core.proj_in.name]),
        ({core.proj.out.name: proj_rows}, [core.y.name]),
        ({core.proj.out.name: _ch_code(proj_shape[-1])}, [core.y.name]),
    ]
    got = probe(nodes, real, variants, opset)
    (r_ops, (r_neg,), c_ops, one_ops, bias_ones, bias_real, (o_lead,), (o_slot,), (o_dim,), (y_rows,), (y_ch,)) = got

    # q, k, v -> (rows, channels) per lead (one (image, window, head) each)
    dec = []
    for r, c, o in zip(r_ops[:3], c_ops[:3], one_ops[:3]):
        rr, cc = _ratio(r, o), _ratio(c, o)
        got_o = None if rr is None or cc is None else _orient(rr - 1, cc - 1)
        if got_o is None:
            raise Declined("q, k or v is not a per-token, per-head selection of the qkv Linear's output")
        dec.append(got_o)
    (q_rows, q_ch), (k_rows, k_ch), (v_rows, v_ch) = dec
    if not (len(q_rows) == len(k_rows) == len(v_rows)):
        raise Declined("q, k and v are not batched alike")
    # leads of the first image only (a static batch of B probes B images; the others must look the same)
    real_keys = np.where(tok[k_rows] >= 0, tok[k_rows], -1)
    lead_img = real_keys.max(axis=1) // tokens
    sel = np.nonzero(lead_img == 0)[0]
    if len(sel) * (int(lead_img.max()) + 1) != len(lead_img):
        raise Declined("windows of different images are interleaved")
    q_rows, q_ch, k_rows, k_ch, v_rows, v_ch = (a[sel] for a in (q_rows, q_ch, k_rows, k_ch, v_rows, v_ch))
    if not (np.array_equal(k_rows, v_rows) and np.array_equal(q_ch.shape, k_ch.shape)):
        raise Declined("keys and values of a window are different tokens")
    if v_ch.shape[-1] != q_ch.shape[-1]:
        raise Declined("value heads are wider than query heads: not supported")
    n, nq, hd = k_rows.shape[1], q_rows.shape[1], q_ch.shape[1]

    # heads (by their q channels) and windows (by their key tokens)
    head_of: dict[tuple, int] = {}
    for ch in q_ch:
        head_of.setdefault(tuple(ch), len(head_of))
    heads = len(head_of)
    order = sorted(head_of, key=lambda ch: ch[0])  # the plugin's head order: by q column
    head_idx = np.array([order.index(tuple(ch)) for ch in q_ch])
    for h in range(heads):
        of_h = head_idx == h
        if not (np.all(k_ch[of_h] == k_ch[of_h][0]) and np.all(v_ch[of_h] == v_ch[of_h][0])):
            raise Declined("the heads of q, k and v do not pair up")
    key_tok = tok[k_rows]
    win_of: dict[tuple, int] = {}
    for kt in key_tok:
        win_of.setdefault(tuple(kt), len(win_of))
    win_idx = np.array([win_of[tuple(kt)] for kt in key_tok])
    nw = len(win_of)
    if len(q_rows) != nw * heads or len({(w, h) for w, h in zip(win_idx, head_idx)}) != nw * heads:
        raise Declined("windows and heads do not pair up (each window once per head)")
    keys = np.array(list(win_of), dtype=np.int64)
    q_stride = n // nq
    if n % nq:
        raise Declined(f"{nq} queries for {n} keys per window")
    if q_stride == 1:
        if not np.array_equal(tok[q_rows], key_tok):
            raise Declined("queries and keys of a window are in different orders: not supported")
    else:  # Hiera's pooled queries: the max (and min) row of each query is that of its q_stride key slots
        hi, lo = pooled_query_rows(k_rows, q_stride)
        neg, ch0 = _ratio(r_neg, one_ops[0]), _ratio(c_ops[0], one_ops[0])
        mins = None if neg is None or ch0 is None else _orient(-neg - 1, ch0 - 1)
        if mins is None or not np.array_equal(q_rows, hi) or not np.array_equal(mins[0][sel], lo):
            raise Declined("the queries are pooled otherwise than Hiera's max over q_stride chunks of a window")

    # where each query's result lands in y, and which proj input column holds which (head, dim)
    lead_local = np.full(len(lead_img), -1, np.int64)
    lead_local[sel] = np.arange(len(sel))
    out_pos, proj_rows_perm, y_axis = _outputs(o_lead, o_slot, o_dim, y_rows, y_ch, core, win_idx, head_idx, heads,
                                               hd, nq, nw, lead_local)
    out_tokens = int((out_pos >= 0).sum())
    maps = candidate_maps(tokens, ([spatial] if len(spatial) == 2 else []) + views)
    found = find_layout(keys, out_pos, tokens, maps)
    if found is None:
        raise Declined(f"the token order is no window partition (roll, pad, partition), grid partition or mask-unit "
                       f"grouping ({nw} windows of {n} tokens, first {keys[0, :min(n, 6)].tolist()})")
    lay, perm = found
    if out_tokens != tokens // q_stride:
        raise Declined("the output does not cover the map")

    # scale and additive terms, per head (and window)
    scale, bias_kind, rel_bias, rel_h, rel_w, mask_value, mask_diff = _logit_terms(
        core, nodes, real, opset, got, lay, win_idx, head_idx, heads, hd, nw, nq, n, k_rows, q_ch, perm, sel)
    if core.has_bias and bias_kind == "none":
        bias_kind = "constant"  # a bias the block adds, zero in these weights (a fresh init), is still its bias
    if lay.is_global and bias_kind != "constant":
        what = "no bias" if bias_kind == "none" else "a bias computed from the query"
        raise Declined(f"global attention over {n} tokens (one window holding the whole map, nothing moves; "
                       f"{what}): left to TensorRT's fused attention", kind="global")

    # weights: type-first qkv columns, proj rows in the same (head, dim) order
    w_cat = np.concatenate([lin.w for lin in core.linears], axis=1)
    biases = [lin.b if lin.b is not None else np.zeros(lin.w.shape[1], np.float32) for lin in core.linears]
    has_b = any(lin.b is not None for lin in core.linears)
    cols = np.concatenate([np.concatenate([chs[head_idx == h][0] for h in range(heads)]) for chs in (q_ch, k_ch, v_ch)])
    w_qkv = w_cat[:, cols].astype(np.float32)
    b_qkv = np.concatenate(biases)[cols].astype(np.float32) if has_b else None
    pad_qkv = (pad_in.astype(np.float64) @ w_qkv if pad_in is not None else np.zeros(w_qkv.shape[1]))
    pad_qkv = (pad_qkv + (b_qkv if b_qkv is not None else 0.0)).astype(np.float32)
    w_proj = core.proj.w[proj_rows_perm].astype(np.float32)
    return Measured(lay, heads, hd, tuple(float(s) for s in scale), w_qkv, b_qkv, pad_qkv, pad_in, w_proj,
                    core.proj.b, x_axis, tuple(x_val.shape), tuple(values[core.y.name].shape), y_axis, rel_bias,
                    rel_h, rel_w, core.cosine, mask_value, mask_diff, bias_kind, opset)


def _outputs(o_lead, o_slot, o_dim, y_rows, y_ch, core, win_idx, head_idx, heads, hd, nq, nw, lead_local):
    """From the output probes: (out_pos [windows, N/q_stride]: y position of each query slot's result, -1 where
    cropped; the proj input column of each plugin (head, dim), in plugin order; y's channel axis)."""
    c_attn = o_lead.shape[-1]
    lead = np.rint(o_lead.reshape(-1, c_attn)).astype(np.int64) - 1
    slot = np.rint(o_slot.reshape(-1, c_attn)).astype(np.int64) - 1
    dim = np.rint(o_dim.reshape(-1, c_attn)).astype(np.int64) - 1
    if lead.min() < 0 or lead.max() >= len(lead_local) or slot.min() < 0 or slot.max() >= nq or dim.min() < 0 \
            or dim.max() >= hd or c_attn != heads * hd:
        raise Declined("the heads are not merged into the projection's input as they are computed")
    mine = np.all(lead_local[lead] >= 0, axis=1)  # rows of the first image
    lead, slot, dim = lead_local[lead[mine]], slot[mine], dim[mine]
    rows_mine = np.nonzero(mine)[0]
    col_head, col_dim = head_idx[lead], dim
    row_win = win_idx[lead]
    if not (np.all(col_head == col_head[:1]) and np.all(col_dim == col_dim[:1]) and np.all(row_win == row_win[:, :1])
            and np.all(slot == slot[:, :1])):
        raise Declined("the heads are not merged into the projection's input as they are computed")
    perm = np.full(heads * hd, -1, np.int64)
    perm[col_head[0] * hd + col_dim[0]] = np.arange(c_attn)
    if (perm < 0).any():
        raise Declined("the projection's input does not hold every (head, dim) once")
    c_out = core.proj.w.shape[1]
    y_axis = _codes_axis(np.rint(y_ch).astype(np.int64), c_out)
    if y_axis is None or y_axis == 0:
        raise Declined("the projected output's channels are moved after the projection")
    y_r = np.moveaxis(np.rint(y_rows).astype(np.int64), y_axis, -1).reshape(-1, c_out) - 1
    if not np.all(y_r == y_r[:, :1]):
        raise Declined("the projected output's rows are mixed after the projection")
    out_pos = np.full((nw, nq), -1, np.int64)
    local_row = np.full(len(mine), -1, np.int64)
    local_row[rows_mine] = np.arange(len(rows_mine))
    src_w, src_s = row_win[:, 0], slot[:, 0]
    for p, rho in enumerate(y_r[:, 0]):
        if rho < 0 or rho >= len(local_row) or local_row[rho] < 0:
            continue  # another image's row
        w, s = src_w[local_row[rho]], src_s[local_row[rho]]
        if out_pos[w, s] >= 0:
            raise Declined("one query's result is written to several output positions")
        out_pos[w, s] = p
    return out_pos, perm, y_axis


def _to_layout_order(a: np.ndarray, perm: np.ndarray | None) -> np.ndarray:
    """[..., N, N] logit terms in the measured slot order -> the layout's slot order (see find_layout)."""
    if perm is None:
        return a
    out = np.empty_like(a)
    out[..., perm[:, None], perm[None, :]] = a
    return out


def _logit_terms(core, nodes, real, opset, got, lay, win_idx, head_idx, heads, hd, nw, nq, n, k_rows, q_ch, perm, sel):
    """(per-head scale, bias kind, bias [heads, Nq, N] | None, rel_h, rel_w | None, mask value, mask diff)."""
    r_ops, _, c_ops, one_ops, bias_ones, bias_real = got[:6]
    leads = len(win_idx)
    lead_of = np.zeros((nw, heads), np.int64)
    lead_of[win_idx, head_idx] = np.arange(leads)
    if core.attention is None:
        logits_ones = one_ops[-1]  # fetched after the operands
        diff = (logits_ones.astype(np.float64) - bias_ones[0].astype(np.float64)).reshape(-1, nq * n)[sel]
        per_lead = diff[:, 0]
        if not np.allclose(diff, per_lead[:, None], rtol=1e-5, atol=1e-5):
            raise Declined("the logits are not scale * q·kᵀ + a term independent of k")
        per_head = np.array([per_lead[head_idx == h][0] for h in range(heads)])
        if not np.allclose(per_lead, per_head[head_idx], rtol=1e-5, atol=1e-6):
            raise Declined("the logit scale differs between windows of one head")
        scale = per_head if core.cosine else per_head / hd
        terms = bias_real[0].astype(np.float64).reshape(-1, nq, n)[sel]
    else:
        s_q, s_k = float(np.mean(one_ops[0])), float(np.mean(one_ops[1]))
        scale = np.full(heads, float(core.attention.attrs.get("scale", hd ** -0.5)) * s_q * s_k)
        mask = bias_real[0] if bias_real else (None if core.mask is None else const_value(core.mask))
        terms = np.zeros((leads, nq, n)) if mask is None else np.broadcast_to(
            mask.astype(np.float64), (*one_ops[0].shape[:-2], nq, n)).reshape(-1, nq, n)[sel]
    if core.q_bias is not None:  # a term computed from q: SAM's decomposed relative position, or nothing we serve
        if lay.q_stride > 1 or lay.shifted:
            raise Declined("a bias computed from the query together with pooled queries or a shift: not supported")
        rel_h, rel_w = _decomposed_tables(core, nodes, real, opset, got, lay, win_idx, lead_of, heads, hd, nw, nq, n,
                                          k_rows, q_ch, perm, sel)
        return scale, "decomposed", None, rel_h, rel_w, MASK_VALUE, 0
    a = _to_layout_order(terms[lead_of], perm).astype(np.float32)  # [nW, heads, Nq, N]
    cross = region_mismatch(lay.height, lay.width, lay.window, lay.shift) if lay.shifted else None
    rel, mask_value = split_bias_and_mask(a, cross)
    want = rel[None] + (mask_value * cross[:, None] if cross is not None else 0.0)
    mask_diff = int(np.sum(~np.isclose(a, want, atol=1e-3)))
    kind = "constant" if np.abs(rel).max(initial=0.0) > 1e-7 or lay.shifted else "none"
    return scale, kind, rel.astype(np.float32), None, None, mask_value, mask_diff


def _decomposed_tables(core, nodes, real, opset, got, lay, win_idx, lead_of, heads, hd, nw, nq, n, k_rows, q_ch, perm,
                       sel):
    """SAM's R_h, R_w [heads, 2w-1, hd]: the logits' response to unit queries e_c set where the term reads q
    (one channel per window and round, q·kᵀ forced to 0), fitted by `fit_decomposed`."""
    r_ops, _, c_ops, one_ops = got[:4]
    qb_rows, qb_ch = _ratio(r_ops[3], one_ops[3]), _ratio(c_ops[3], one_ops[3])
    s_b = one_ops[3].astype(np.float64)
    if qb_rows is None or qb_ch is None or not np.allclose(s_b, s_b.reshape(-1)[0]):
        raise Declined("the bias reads the query through something other than a selection of its values")
    qb_rows, qb_ch, s_b = qb_rows - 1, qb_ch - 1, float(s_b.reshape(-1)[0])
    row_win = np.full(int(k_rows.max()) + 1, -1, np.int64)
    row_win[k_rows] = win_idx[:, None]
    dim_of = {int(c): d for chs in q_ch for d, c in enumerate(chs)}  # q channel -> its dim within the head
    elem_dim = np.vectorize(lambda c: dim_of.get(int(c), -1))(qb_ch)
    inside = (qb_rows >= 0) & (qb_rows < len(row_win))
    elem_win = np.where(inside, row_win[np.clip(qb_rows, 0, len(row_win) - 1)], -1)  # -1: another image's rows
    if (elem_dim < 0).any():
        raise Declined("the bias reads something other than the query's own values")
    rounds = math.ceil(hd / nw)
    bias_t = core.logits.name if core.attention is None else core.mask.name
    zero_qk = {core.qk.name: 0.0} if core.qk is not None else {}
    variants = [({core.q_bias.name: np.zeros_like(qb_ch, dtype=np.float32), **zero_qk}, [bias_t])]
    for r in range(rounds):
        e = ((elem_win >= 0) & (elem_dim == elem_win + r * nw)).astype(np.float32)
        variants.append(({core.q_bias.name: e, **zero_qk}, [bias_t]))
    got2 = probe(nodes, real, variants, opset)
    shape = (-1, nq, n)
    b0 = got2[0][0].astype(np.float64).reshape(shape)[sel]
    resp = np.zeros((heads, hd, nq, n))
    for r in range(rounds):
        lg = got2[r + 1][0].astype(np.float64).reshape(shape)[sel] - b0
        for w in range(nw):
            c = w + r * nw
            if c < hd:
                resp[:, c] = _to_layout_order(lg[lead_of[w]], perm)
    if np.abs(b0).max() > 1e-4 * max(1.0, np.abs(resp).max()):
        raise Declined("a constant bias besides the one computed from the query: not supported")
    tables_h, tables_w = [], []
    for h in range(heads):
        rh, rw, resid = fit_decomposed(resp[h], lay.window)
        if resid > 1e-3:
            raise Declined("the bias depends on the query, and not as SAM's decomposed relative position "
                           f"(q·R_h[Δy] + q·R_w[Δx]; off by {resid:.2g} of its size): not supported")
        tables_h.append(rh * s_b)
        tables_w.append(rw * s_b)
    return np.stack(tables_h).astype(np.float32), np.stack(tables_w).astype(np.float32)


# ----------------------------------------------------------------------------- the pass


class SwinWindowAttentionPass(RewritePass):
    name = "swin"
    description = ("windowed attention (Swin, SAM, TinyViT, MaxViT, Twins, Hiera) -> WindowAttention[RelPos] plugin, "
                   "or plain ONNX with folded bias (native)")
    modes = ("plugin", "native")

    def extra_opsets(self, mode):
        return {"vitdeploy": 1} if mode == "plugin" else {}

    # -- find
    def find(self, graph):
        walker = _Walker(graph)
        notes: list[str] = []
        self.verdicts = {}  # node name -> (kind, why it stays), for the driver's census of Softmax nodes
        cores = []
        for n in list(graph.nodes):
            if n.op not in ("Softmax", "Attention"):
                continue
            core, why = walker.match(n) if n.op == "Softmax" else walker.match_attention(n)
            if core is None:
                kind = "other" if why.startswith("not attention-shaped") else \
                    "global" if why.startswith("global attention") else "declined"
                self._decline(notes, n.name, why, kind)
            else:
                cores.append(core)
        if not cores:
            return [], notes
        subgraphs = [walker.subgraph([c.x], c.y) for c in cores]
        try:
            values = activations(graph, [t for c, (_, ex) in zip(cores, subgraphs) for t in (c.x, c.y, *ex)], batch=1)
        except Exception as e:  # shapes cannot be measured: report, rewrite nothing
            for c in cores:
                self._decline(notes, c.name, "could not run the graph to measure the block: "
                              f"{str(e).splitlines()[0][:160]}")
            return [], notes
        cands: list[Candidate] = []
        stage, block, last_hw = 0, 0, None
        for core, (nodes, extras) in zip(cores, subgraphs):
            try:
                _global_by_shape(core, values)
                m = _measure(core, nodes, extras, values, graph.opset)
            except Declined as d:
                self._decline(notes, core.name, d.why, "global" if d.kind == "global" else "declined")
                continue
            except Exception as e:  # a probe that cannot run means the structure is not what we think
                self._decline(notes, core.name, f"probe failed ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
                continue
            hw = (m.layout.height, m.layout.width)
            if hw != last_hw:
                stage, block, last_hw = stage + 1, 0, hw
            block += 1
            name = f"stage {stage} block {block}"
            if m.mask_diff:
                notes.append(f"{name}: its additive mask differs from the region-id shift mask in "
                             f"{m.mask_diff} entries (kept only if the outputs still match)")
            cands.append(Candidate(name, nodes, [core.x, *extras], [core.y], dict(core=core, layout=m)))
        return cands, notes

    def _decline(self, notes: list[str], node: str, why: str, kind: str = "declined") -> None:
        self.verdicts[node] = (kind, why)
        if kind != "other":  # a Softmax that is no attention at all is the census's to name, not a refusal
            notes.append(f"attention at '{node}' not rewritten: {why}")

    # -- emit
    def emit(self, graph, cand, mode):
        core: Core = cand.params["core"]
        m: Measured = cand.params["layout"]
        lay = m.layout
        e = Emitter(cand.outputs[0].name + "__swin", taken_names(graph))
        t = core.x
        if m.x_channel_axis != len(m.x_shape) - 1:  # channels first (NCHW): channels last, then tokens
            rank = len(m.x_shape)
            t = e.op("Transpose", [t], {"perm": [a for a in range(rank) if a != m.x_channel_axis] + [m.x_channel_axis]})
        if len(m.x_shape) != 3 or m.x_channel_axis != 2 or m.x_shape[1] != lay.tokens:
            t = e.reshape(t, [0, lay.tokens, core.channels_in])
        if core.ln is not None:  # TinyViT's LayerNorm, per token: on the original order, before the Linear
            consts = [i if isinstance(i, gs.Constant) else e.const(const_value(i)) for i in core.ln.inputs[1:]]
            t = e.op("LayerNormalization", [t, *consts], dict(core.ln.attrs))
        if mode == "plugin":
            t = self._plugin(e, t, m)
        else:
            t = _native_attention(e, t, m)
        t = e.linear(t, m.w_proj, m.b_proj)
        y_shape, ax = m.y_shape, m.y_channel_axis
        if ax == len(y_shape) - 1:
            if len(y_shape) != 3 or y_shape[1] != lay.tokens // lay.q_stride:
                t = e.reshape(t, [0, *y_shape[1:]])
        else:  # channels first: channels-last shape, then move the channels back
            last = [d for a, d in enumerate(y_shape) if a != ax] + [y_shape[ax]]
            t = e.reshape(t, [0, *last[1:]])
            perm = list(range(len(y_shape) - 1))
            perm.insert(ax, len(y_shape) - 1)
            t = e.op("Transpose", [t], {"perm": perm})
        return Emission(e.nodes, [t])

    @staticmethod
    def _plugin(e: Emitter, t, m: Measured):
        lay = m.layout
        qkv = e.linear(t, m.w_qkv, m.b_qkv)
        attrs = dict(window_size=lay.window, shift_size=lay.shift, num_heads=m.heads, height=lay.height,
                     width=lay.width, scale=m.scale, cosine=int(m.cosine), mask_value=m.mask_value,
                     pad_first=int(lay.pad_first), partition=lay.partition, q_stride=lay.q_stride)
        if m.bias_kind == "decomposed":
            from vitdeploy.plugins.window_attention_relpos.spec import SPEC as RELPOS

            inputs = [qkv, e.const(m.rel_h), e.const(m.rel_w), e.const(m.pad_qkv)]
            return e.op(RELPOS.name, inputs, RELPOS.node_attrs(**attrs), domain=RELPOS.domain)
        from vitdeploy.plugins.window_attention.spec import SPEC

        bias = m.rel_bias if m.rel_bias is not None else np.zeros((m.heads, lay.queries_per_window,
                                                                   lay.tokens_per_window), np.float32)
        return e.op(SPEC.name, [qkv, e.const(bias), e.const(m.pad_qkv)], SPEC.node_attrs(**attrs), domain=SPEC.domain)


def _padded_rows(e: Emitter, t, pad_in: np.ndarray | None, tokens: int):
    """[B, L, C] -> [B, L+1, C] whose last row is a padding token: zeros (Pad), or, when the qkv input of a padding
    token is not zero (TinyViT's LN(0)), that row made from the data without Shape ops (row 0 * 0 + value)."""
    if pad_in is None:
        return e.op("Pad", [t, e.const(np.asarray([0, 0, 0, 0, 1, 0], np.int64))], {"mode": "constant"})
    first = e.op("Slice", [t, e.const(np.asarray([0], np.int64)), e.const(np.asarray([1], np.int64)),
                           e.const(np.asarray([1], np.int64))])
    row = e.op("Add", [e.op("Mul", [first, e.const(np.zeros((), np.float32))]), e.const(pad_in.astype(np.float32))])
    return e.op("Concat", [t, row], {"axis": 1})


def _native_attention(e: Emitter, t, m: Measured):
    """Plain ONNX for [B, H*W, C_in] tokens -> attention output [B, H*W/q_stride, C] before proj: a constant
    Gather (roll+pad+partition, or grid, or mask units), attention in the form TensorRT's fused attention
    matches -- MatMul(q·scale, kᵀ) -> Add(ONE 4-D constant, or SAM's bias computed from q) -> Softmax ->
    MatMul(·, v), nothing else between the two MatMuls -- and a constant Gather back (reverse+crop+roll back).

    Unshifted blocks attend over [B·nW, heads, N, hd] with the bias [1, heads, Nq, N]. Shifted blocks fold the
    windows into the head axis, [B, nW·heads, N, hd], so bias + shift mask is one constant [1, nW·heads, N, N]
    broadcast over the image batch: the same graph for a static and a dynamic batch, no B-fold tiled copy of the
    bias and no 5-D reshape between MatMul and Softmax. Hiera's pooled queries are a ReduceMax over q_stride
    chunks of each window's slots; SAM's decomposed bias is two batched MatMuls of q with the gathered tables.
    """
    lay = m.layout
    tokens = lay.tokens
    n, nq, heads, hd, c = lay.tokens_per_window, lay.queries_per_window, m.heads, m.head_dim, m.channels
    order = slot_tokens(lay).reshape(-1)
    nw = order.size // n
    if (order < 0).any():  # a padding token before the qkv Linear, exactly as timm pads
        t = _padded_rows(e, t, m.pad_in, tokens)
        order = np.where(order < 0, tokens, order)
    t = e.op("Gather", [t, e.const(order.astype(np.int64))], {"axis": 1})  # [B, nW*N, C_in]
    scale = np.asarray(m.scale, np.float32)  # one per head (Swin V2's learnt logit scale), usually all equal
    uniform = bool(np.all(scale == scale[0]))
    split = e.const(np.asarray([c, c, c], np.int64))
    if lay.shifted:
        qkv = e.reshape(e.linear(t, m.w_qkv, m.b_qkv), [-1, nw, n, 3 * c])  # [B, nW, N, 3C]
        q, k, v = e.op("Split", [qkv, split], {"axis": 3}, n_out=3)
        q, k, v = (e.reshape(x, [-1, nw, n, heads, hd]) for x in (q, k, v))

        def heads_of(x, perm, shape):  # [B, nW, N, heads, hd] -> [B, nW*heads, ...]
            return e.reshape(e.op("Transpose", [x], {"perm": perm}), shape)

        q = heads_of(q, [0, 1, 3, 2, 4], [-1, nw * heads, n, hd])
        v = heads_of(v, [0, 1, 3, 2, 4], [-1, nw * heads, n, hd])
        if m.cosine:  # Swin V2: q and k normalised over the head dimension, on [.., N, hd] (as timm writes it)
            q = _l2_normalize(e, q)
            k = e.op("Transpose", [_l2_normalize(e, heads_of(k, [0, 1, 3, 2, 4], [-1, nw * heads, n, hd]))],
                     {"perm": [0, 1, 3, 2]})
        else:
            k = heads_of(k, [0, 1, 3, 4, 2], [-1, nw * heads, hd, n])
        scale_c = e.const(scale[0] if uniform else np.tile(scale, nw).reshape(1, nw * heads, 1, 1))
        bias = m.rel_bias[None] + shift_mask(lay.height, lay.width, lay.window, lay.shift, m.mask_value)[:, None]
        bias = bias.reshape(1, nw * heads, n, n)  # [nW, heads, N, N] with windows outer, as the heads axis
        q_raw = None
    else:
        qkv = e.reshape(e.linear(t, m.w_qkv, m.b_qkv), [-1, n, 3 * c])  # [B*nW, N, 3C]
        q, k, v = e.op("Split", [qkv, split], {"axis": 2}, n_out=3)
        if lay.q_stride > 1:  # Hiera: query slot i = max over the key slots s*Nq + i
            pooled = e.reshape(q, [-1, lay.q_stride, nq, c])
            if m.opset >= 18:  # axes became an input in opset 18
                q = e.op("ReduceMax", [pooled, e.const(np.asarray([1], np.int64))], {"keepdims": 0})
            else:
                q = e.op("ReduceMax", [pooled], {"axes": [1], "keepdims": 0})
        q, k = e.reshape(q, [-1, nq, heads, hd]), e.reshape(k, [-1, n, heads, hd])
        q = e.op("Transpose", [q], {"perm": [0, 2, 1, 3]})
        q_raw = q
        if m.cosine:  # normalised on [.., N, hd], as timm writes it (the matcher measures the graph it emits)
            q = _l2_normalize(e, q)
            k = e.op("Transpose", [_l2_normalize(e, e.op("Transpose", [k], {"perm": [0, 2, 1, 3]}))],
                     {"perm": [0, 1, 3, 2]})
        else:
            k = e.op("Transpose", [k], {"perm": [0, 2, 3, 1]})
        v = e.op("Transpose", [e.reshape(v, [-1, n, heads, hd])], {"perm": [0, 2, 1, 3]})
        scale_c = e.const(scale[0] if uniform else scale.reshape(1, heads, 1, 1))
        bias = None if m.rel_bias is None or not np.any(m.rel_bias) else m.rel_bias[None]  # [1, heads, Nq, N]
    logits = e.op("MatMul", [e.op("Mul", [q, scale_c]), k])
    if m.bias_kind == "decomposed":
        logits = e.op("Add", [logits, _decomposed_bias(e, q_raw, m)])
    elif bias is not None:
        logits = e.op("Add", [logits, e.const(bias, np.float32)])
    out = e.op("MatMul", [e.op("Softmax", [logits], {"axis": -1}), v])
    if lay.shifted:  # [B, nW*heads, N, hd] -> [B, nW, N, heads, hd] -> [B, nW*N, C]
        out = e.op("Transpose", [e.reshape(out, [-1, nw, heads, n, hd])], {"perm": [0, 1, 3, 2, 4]})
    else:  # [B*nW, heads, Nq, hd] -> [B*nW, Nq, heads, hd]
        out = e.op("Transpose", [out], {"perm": [0, 2, 1, 3]})
    out = e.reshape(out, [-1, nw * nq, c])  # [B, nW*Nq, C]
    pos = output_positions(lay).reshape(-1)
    inverse = np.empty(tokens // lay.q_stride, np.int64)
    real = pos >= 0
    inverse[pos[real]] = np.nonzero(real)[0]
    return e.op("Gather", [out, e.const(inverse)], {"axis": 1})  # [B, H*W/q_stride, C]


def _decomposed_bias(e: Emitter, q, m: Measured):
    """SAM's bias from q [B*nW, heads, N, hd] (before the scale): q·R_h[Δy] + q·R_w[Δx] as two batched MatMuls
    with the tables gathered per (query row, key row) -- [heads, wh, hd, wh] and [heads, ww, hd, ww] constants --
    and a broadcast add, reshaped to [B*nW, heads, N, N]."""
    wh, ww = m.layout.window
    heads, hd = m.heads, m.head_dim
    ys, xs = np.arange(wh), np.arange(ww)
    rh = m.rel_h[:, ys[:, None] - ys[None, :] + wh - 1]  # [heads, wh(q), wh(k), hd]
    rw = m.rel_w[:, xs[:, None] - xs[None, :] + ww - 1]  # [heads, ww(q), ww(k), hd]
    r_q = e.reshape(q, [-1, heads, wh, ww, hd])
    bias_h = e.op("MatMul", [r_q, e.const(rh.transpose(0, 1, 3, 2), np.float32)])  # [b, h, wh, ww, wh(k)]
    r_qt = e.op("Transpose", [r_q], {"perm": [0, 1, 3, 2, 4]})  # [b, h, ww, wh, hd]
    bias_w = e.op("MatMul", [r_qt, e.const(rw.transpose(0, 1, 3, 2), np.float32)])  # [b, h, ww, wh, ww(k)]
    bias_w = e.op("Transpose", [bias_w], {"perm": [0, 1, 3, 2, 4]})  # [b, h, wh, ww, ww(k)]
    total = e.op("Add", [e.op("Unsqueeze", [bias_h, e.const(np.asarray([5], np.int64))]),
                         e.op("Unsqueeze", [bias_w, e.const(np.asarray([4], np.int64))])])
    n = wh * ww
    return e.reshape(total, [-1, heads, n, n])


def _l2_normalize(e: Emitter, t):
    """t / max(‖t‖₂ over the last axis, eps): F.normalize with an eps that survives FP16."""
    sq = e.op("ReduceSum", [e.op("Mul", [t, t]), e.const(np.asarray([-1], np.int64))], {"keepdims": 1})
    norm = e.op("Max", [e.op("Sqrt", [sq]), e.const(np.asarray(NATIVE_NORM_EPS, np.float32))])
    return e.op("Div", [t, norm])
