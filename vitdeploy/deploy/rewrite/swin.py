"""`swin`: Swin V1/V2 (shifted-)window attention -> one `WindowAttention` node, or plain folded ONNX.

What is matched, by structure, whatever exporter (dynamo, TorchScript) or implementation wrote it:

    x ──layout──▶ MatMul(·, Wqkv)[+b] ──layout/scale──▶ q, k, v    (or three Linears q|k|v, as
                                                                  Hugging Face writes it)
    logits = MatMul(q, kᵀ) [·s] (+ additive terms that depend on no activation)
    MatMul(Softmax(logits), v) ──layout──▶ MatMul(·, Wproj)[+b] ──layout──▶ y

Swin V2 (timm's SwinTransformerV2, transformers' Swinv2) is the same core with cosine attention:
q and k each L2-normalised over the head dimension (x / max(‖x‖, eps), as F.normalize exports:
Div(x, Clip/Max(ReduceL2(x)))), logits multiplied by a per-head constant exp(clamp(logit_scale))
and the continuous position bias 16·sigmoid(MLP(coords)) a constant branch, folded like V1's
table gather. Post-norm changes nothing here: the block boundary is still the data movement.

"layout" = ops that only move data (Reshape/Transpose/Slice/Concat/Pad/Gather/...): the
roll, pad, window partition, reverse, crop and roll back. Their shape arithmetic (TorchScript's
Shape/Gather/Concat chains) belongs to the candidate too. The block's parameters are then
*measured*, not read off node attributes, so every way of writing the same computation matches:

- the token layout: x filled with its own (token, channel) codes is pushed through the candidate
  with ONNX Runtime; the codes arriving at the qkv MatMul give the exact gather. It must equal
  timm's roll -> zero-pad -> partition order (or torchvision's and Hugging Face's pad -> roll ->
  partition) for some (H, W), window (wh, ww) and shift (sh, sw), each a per-dimension pair (timm
  clamps windows and drops shifts per dimension, so non-square inputs give non-square windows),
  else it is no Swin;
- the additive logit terms: the q·kᵀ product is forced to zero, what reaches the Softmax is
  relative-position bias + shift mask [nW, heads, N, N]. The mask part must be timm's region-id
  mask for that shift, times a measured value (timm -100; Hugging Face's Swinv2 adds its mask
  twice, -200); a differing mask is reported and the candidate fails verification;
- the scale: qkv forced to ones gives logits = scale[h]·head_dim + bias (V1) or scale[h] + bias
  (V2: normalised ones have q̂·k̂ = 1), per head.

An opset-23 `Attention` node (dynamo export of SDPA code, e.g. transformers' Swin) is the same
core in one node: its q/k/v and float mask input are matched and read the same way.

The qkv and proj Linears are per token, so they commute with the data movement: the plugin gets
qkv in original token order ([B, H*W, 3C], see `vitdeploy.plugins.window_attention.spec`) and
its output goes straight into the proj MatMul; proj stays a plain MatMul for TensorRT.

Modes:
- plugin: Reshape -> MatMul(Wqkv)+b -> WindowAttention -> MatMul(Wproj)+b -> Reshape.
- native (TensorRT 10.3 / JetPack 6, no plugins): one constant Gather for roll+pad+partition,
  4-D MatMul/Softmax attention with ONE constant additive bias (relative-position bias + mask),
  one constant Gather for reverse+crop+roll back. No Shape ops: every Reshape is constant.
  V2 adds the q/k normalisation (ReduceL2, Max, Div) and the per-head scale.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from vitdeploy.deploy.rewrite.driver import Candidate, Emission, RewritePass
from vitdeploy.deploy.rewrite.emit import Emitter, taken_names
from vitdeploy.deploy.rewrite.graph import Walker, const_value, producer
from vitdeploy.deploy.rewrite.probe import activations, measured, probe

# Ops that only move or select data (the roll/pad/partition/reverse/crop of a Swin block).
LAYOUT_OPS = {"Reshape", "Transpose", "Slice", "Concat", "Pad", "Squeeze", "Unsqueeze", "Gather",
              "Identity", "Split", "Flatten"}
# Between the qkv Linear and q/k/v: layout plus a scalar scale on q (and on k for SDPA exports).
SCALE_OPS = frozenset({"Mul", "Div"})  # passed only with one activation input (a scale, not a product)
QKV_OPS = LAYOUT_OPS | SCALE_OPS
# Between q·kᵀ and the Softmax: additive terms, view changes and a scale.
LOGIT_OPS = {"Add", "Reshape", "Identity", "Mul", "Div", "Squeeze", "Unsqueeze"}
# What F.normalize(x, dim=-1) exports to, besides the Div: the L2 norm over the last axis, clamped.
NORM_OPS = {"ReduceL2", "ReduceSum", "ReduceSumSquare", "Sqrt", "Pow", "Mul", "Clip", "Max", "Expand", "Abs",
            "Reshape", "Unsqueeze", "Identity", "Cast"}
MASK_VALUE = -100.0  # timm's (and torchvision's) value for cross-region pairs
NATIVE_NORM_EPS = 2.0 ** -14  # native clamp of ‖q‖, ‖k‖: F.normalize uses 1e-12, which FP16 flushes to 0 (0/0 on zero rows)


# ----------------------------------------------------------------------------- structure

def _value(t) -> np.ndarray:
    return t if isinstance(t, np.ndarray) else const_value(t)


def _shape(t) -> tuple[int, ...]:
    return tuple(_value(t).shape)


@dataclass
class Core:
    """The structural match around one Softmax (or opset-23 Attention node), before anything is measured."""

    x: gs.Variable
    y: gs.Variable
    w_in: gs.Variable  # data input of the qkv projection (tokens in window order)
    qkv: list[gs.Variable]  # qkv Linear output, or the q, k and v Linear outputs
    qk: gs.Variable | None  # q·kᵀ (None for an ONNX Attention node)
    logits: gs.Variable | None  # Softmax input
    w_qkv: gs.Tensor | np.ndarray  # [C, 3C]: the initializer, or q|k|v weights concatenated
    b_qkv: gs.Tensor | np.ndarray | None
    w_proj: gs.Tensor | np.ndarray
    b_proj: gs.Tensor | np.ndarray | None
    channels: int
    moves_data: bool  # any layout op around the attention (plain global attention has none)
    attention: gs.Node | None = None  # opset-23 Attention node holding q·kᵀ, the Softmax and ·v
    cosine: bool = False  # Swin V2: q and k L2-normalised before q·kᵀ
    views: tuple[str, ...] = ()  # 4-D reshapes between x and the qkv Linear: they name the map (H, W)

    @property
    def qkv_bias(self) -> np.ndarray | None:
        b = self.b_qkv
        return None if b is None else (b if isinstance(b, np.ndarray) else const_value(b)).reshape(-1)


class _Walker(Walker):
    """The Swin match on top of the shared activation walker."""

    def linear(self, t: gs.Tensor):
        """t = MatMul(a, W) [+ b] with constant W [C_in, C_out], b -> (a, W, b) (tensors) or None."""
        p = producer(t)
        b = None
        if p is not None and p.op == "Add" and len(self.data_inputs(p)) == 1:
            b = next(i for i in p.inputs if not self.is_dep(i))
            t = self.data_inputs(p)[0]
            p = producer(t)
        if p is None or p.op != "MatMul" or len(self.data_inputs(p)) != 1 or not self.is_dep(p.inputs[0]):
            return None
        w = const_value(p.inputs[1])
        bv = None if b is None else const_value(b)
        if w is None or w.ndim != 2 or (b is not None and (bv is None or bv.size != w.shape[1])):
            return None
        return p.inputs[0], (p.inputs[1] if isinstance(p.inputs[1], gs.Constant) else w), (
            b if b is None or isinstance(b, gs.Constant) else bv.reshape(-1))

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

    def qkv_projection(self, q: gs.Tensor, k: gs.Tensor, v: gs.Tensor):
        """One fused qkv Linear (timm, torchvision) or three Linears on the same tokens (Hugging Face);
        q and k may each be L2-normalised on the way (Swin V2's cosine attention).

        Returns (projection outputs, w_in, W [C, 3C], b [3C] | None, cosine) or None.
        """
        (q, q_norm), (k, k_norm) = self._unnormalized(q), self._unnormalized(k)
        if q_norm != k_norm:
            return None  # one-sided normalisation is not Swin V2
        fronts = [self.up([t], QKV_OPS, one_input=SCALE_OPS)[0] for t in (q, k, v)]
        if any(len(f) != 1 for f in fronts):
            return None
        q0, k0, v0 = (f[0] for f in fronts)
        if q0 is k0 is v0:
            lin = self.linear(q0)
            if lin is None or _shape(lin[1])[1] % 3 or _shape(lin[1])[1] != 3 * _shape(lin[1])[0]:
                return None
            return [q0], lin[0], lin[1], lin[2], q_norm
        if len({id(q0), id(k0), id(v0)}) != 3:
            return None
        lins = [self.linear(t) for t in (q0, k0, v0)]
        if any(lin is None for lin in lins) or len({id(lin[0]) for lin in lins}) != 1:
            return None
        ws = [_value(lin[1]) for lin in lins]
        if any(w.shape != (ws[0].shape[0], ws[0].shape[0]) for w in ws):
            return None
        w = np.concatenate(ws, axis=1)
        bs = [None if lin[2] is None else _value(lin[2]).reshape(-1) for lin in lins]
        b = None if all(x is None for x in bs) else np.concatenate([np.zeros(ws[0].shape[0], w.dtype) if x is None else x for x in bs])
        return [q0, k0, v0], lins[0][0], w, b, q_norm

    def match(self, softmax: gs.Node) -> Core | None:
        """The structural Swin/window-attention match around one Softmax (None: not attention)."""
        if int(softmax.attrs.get("axis", -1)) not in (-1, 3):
            return None
        probs = softmax.outputs[0]
        users = self.data_consumers(probs)
        if len(users) != 1 or users[0].op != "MatMul" or users[0].inputs[0] is not probs:
            return None
        av = users[0]
        # logits chain up to q·kᵀ
        t = softmax.inputs[0]
        while True:
            p = producer(t)
            if p is None:
                return None
            ins = self.data_inputs(p)
            if p.op == "MatMul" and len(ins) == 2:
                qk_node = p
                break
            if p.op not in LOGIT_OPS or len(ins) != 1:
                return None
            t = ins[0]
        proj_in = self.qkv_projection(qk_node.inputs[0], qk_node.inputs[1], av.inputs[1])
        if proj_in is None:
            return None
        qkv, w_in, w_qkv, b_qkv, cosine = proj_in
        xs, pre = self.up([w_in], LAYOUT_OPS)
        if len(xs) != 1:
            return None
        x = xs[0]
        core = self.finish(x, pre, w_in, qkv, w_qkv, b_qkv, av.outputs[0], qk_node.outputs[0], softmax.inputs[0])
        if core is not None:
            core.cosine = cosine
        return core

    def match_attention(self, node: gs.Node) -> Core | None:
        """The same block exported at opset 23 with SDPA: one ONNX `Attention` node, 4-D q/k/v,
        additive float mask (relative-position bias + shift mask), no cache, not causal."""
        a = node.attrs
        if int(a.get("is_causal", 0)) or float(a.get("softcap", 0.0)) or int(a.get("qk_matmul_output_mode", 0)) \
                or "q_num_heads" in a or len([t for t in node.inputs[4:] if t.name]) \
                or any(o.outputs for o in node.outputs[1:]) or len(node.inputs) < 3:
            return None
        if len(node.inputs) > 3 and node.inputs[3].name and self.is_dep(node.inputs[3]):
            return None  # a mask computed from activations is not Swin's
        proj_in = self.qkv_projection(node.inputs[0], node.inputs[1], node.inputs[2])
        if proj_in is None:
            return None
        qkv, w_in, w_qkv, b_qkv, cosine = proj_in
        xs, pre = self.up([w_in], LAYOUT_OPS)
        if len(xs) != 1 or cosine:  # cosine attention around an Attention node: not seen in any export
            return None
        core = self.finish(xs[0], pre, w_in, qkv, w_qkv, b_qkv, node.outputs[0], None, None)
        if core is not None:
            core.attention = node
        return core

    def finish(self, x, pre, w_in, qkv, w_qkv, b_qkv, av_out, qk, logits) -> Core | None:
        """From the attention output: heads merged (layout) -> proj Linear -> layout -> y."""
        t = av_out
        while True:
            cons = self.data_consumers(t)
            if len(cons) != 1:
                return None
            n = cons[0]
            if n.op == "MatMul" and n.inputs[0] is t:
                break
            if n.op not in LAYOUT_OPS or len(n.outputs) != 1:
                return None
            t = n.outputs[0]
        out = n.outputs[0]
        cons = self.data_consumers(out)
        if len(cons) == 1 and cons[0].op == "Add" and len(self.data_inputs(cons[0])) == 1:
            out = cons[0].outputs[0]
        proj = self.linear(out)
        if proj is None:
            return None
        ys, post = self.down(out, LAYOUT_OPS)
        if len(ys) != 1:
            return None
        views = tuple(o.name for nd in pre if nd.op == "Reshape" for o in nd.outputs if o.name)
        return Core(x, ys[0], w_in, qkv, qk, logits, w_qkv, b_qkv, proj[1], proj[2],
                    channels=_shape(w_qkv)[0], moves_data=bool(pre or post), views=views)

# ----------------------------------------------------------------------------- measurement

def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if np.ndim(v) == 0 else (int(v[0]), int(v[1]))


def window_order(height: int, width: int, window, shift, pad_first: bool = False) -> np.ndarray:
    """Token index (row-major, original map) at each window slot after timm's roll -> pad ->
    partition (`pad_first`: torchvision's and Hugging Face's pad -> roll -> partition); -1 marks
    zero padding. `window`/`shift`: int or (h, w). Length = nW * wh * ww."""
    (wh, ww), (sh, sw) = _pair(window), _pair(shift)
    ids = np.arange(height * width).reshape(height, width)
    if (sh or sw) and not pad_first:
        ids = np.roll(ids, (-sh, -sw), axis=(0, 1))
    hp, wp = math.ceil(height / wh) * wh, math.ceil(width / ww) * ww
    padded = np.full((hp, wp), -1, dtype=np.int64)
    padded[:height, :width] = ids
    if (sh or sw) and pad_first:
        padded = np.roll(padded, (-sh, -sw), axis=(0, 1))
    return padded.reshape(hp // wh, wh, wp // ww, ww).transpose(0, 2, 1, 3).reshape(-1)


def region_mismatch(height: int, width: int, window, shift) -> np.ndarray:
    """[nW, N, N] bool: query and key from different regions of the padded, shifted map (timm's
    region ids: slices (0, -w), (-w, -s), (-s, None) per axis)."""
    (wh, ww), (sh, sw) = _pair(window), _pair(shift)
    hp, wp = math.ceil(height / wh) * wh, math.ceil(width / ww) * ww

    def regions(size, w, s):
        idx = np.arange(size)
        return (idx >= size - w).astype(np.int64) + (idx >= size - s)

    ids = regions(hp, wh, sh)[:, None] * 3 + regions(wp, ww, sw)[None, :]
    win = ids.reshape(hp // wh, wh, wp // ww, ww).transpose(0, 2, 1, 3).reshape(-1, wh * ww)
    return win[:, None, :] != win[:, :, None]


def shift_mask(height: int, width: int, window, shift, value: float = MASK_VALUE) -> np.ndarray:
    """timm's SW-MSA mask [nW, N, N]: 0 within a region of the padded, shifted map, `value` (-100) across.

    Same region ids as `vitdeploy.plugins.window_attention.reference.shift_mask` (a test checks it),
    in numpy so the native mode does not need torch.
    """
    return np.where(region_mismatch(height, width, window, shift), value, 0.0).astype(np.float32)


def _decode_tokens(windows: np.ndarray, channels: int) -> np.ndarray | None:
    """Rows of a probed tensor -> global token index (-1: zero padding); None if channels moved."""
    rows = windows.reshape(-1, channels).astype(np.float64)
    code = rows[:, :1] - 1
    pad = np.all(rows == 0, axis=1)
    ok = pad | (np.all(rows - rows[:, :1] == np.arange(channels), axis=1) & (code[:, 0] % channels == 0))
    if not ok.all():
        return None
    tok = np.where(pad, -1, code[:, 0] // channels).astype(np.int64)
    return tok


def _window_grid(order: np.ndarray, grids: list[tuple[int, int]], n: int):
    """The (height, width, (wh, ww), (sh, sw), pad_first) whose window order is exactly `order`.

    Window slot 0 always holds original token (sh, sw) (the roll by -shift moves it to the corner,
    padding goes bottom/right), so the shift is read off the order; each factorisation wh x ww = n
    of the window is then checked whole, timm's roll -> pad first, then pad -> roll (the two only
    differ on padded, shifted maps).
    """
    if order.size == 0 or order[0] < 0:
        return None
    for h, w in grids:
        sh, sw = divmod(int(order[0]), w)
        for wh in (d for d in range(1, n + 1) if n % d == 0):
            ww = n // wh
            if math.ceil(h / wh) * math.ceil(w / ww) * n != order.size or sh >= wh or sw >= ww:
                continue
            for pad_first in (False, True):
                if np.array_equal(window_order(h, w, (wh, ww), (sh, sw), pad_first), order):
                    return h, w, (wh, ww), (sh, sw), pad_first
    return None


def _attention_terms(core: Core, nodes, feeds, opset):
    """Probe the attention core: (windows at the qkv Linear, N, heads, per-head scales, additive logit
    terms [windows, heads, N, N]) or the reason it is not a scaled-dot-product attention with a bias."""
    channels = core.channels
    if core.attention is None:
        (w_in, logits, *views), (a,), (ones,) = probe(nodes, feeds, [
            ({}, [core.w_in.name, core.logits.name, *core.views]),
            ({core.qk.name: 0.0}, [core.logits.name]),  # q·kᵀ = 0: only the additive terms reach the Softmax
            ({t.name: 1.0 for t in core.qkv}, [core.logits.name]),  # qkv = 1: q·kᵀ = head_dim, times the scale
        ], opset)
        if logits.ndim != 4 or logits.shape[-1] != logits.shape[-2]:
            return f"logits have shape {list(logits.shape)}, not [windows, heads, N, N]"
        n, heads = logits.shape[-1], logits.shape[1]
        if channels % heads:
            return f"{channels} channels do not split into {heads} heads"
        diff = (ones - a).astype(np.float64)
        per_head = diff[0, :, 0, 0]  # q = k = ones: q·kᵀ = head_dim (V1), q̂·k̂ᵀ = 1 (V2)
        if not np.allclose(diff, per_head[None, :, None, None], rtol=1e-5, atol=1e-5):
            return "the logits are not scale * q·kᵀ + constant"
        scale = per_head if core.cosine else per_head / (channels // heads)
    else:
        att = core.attention
        mask = att.inputs[3] if len(att.inputs) > 3 and att.inputs[3].name else None
        fetch_mask = mask is not None and not isinstance(mask, gs.Constant)
        got = probe(nodes, feeds, [({}, [core.w_in.name, att.inputs[0].name, att.inputs[1].name]
                                      + ([mask.name] if fetch_mask else []) + list(core.views))], opset)[0]
        views = got[len(got) - len(core.views):] if core.views else []
        got = got[:len(got) - len(core.views)]
        if mask is not None and not fetch_mask:
            got.append(np.asarray(mask.values))
        w_in, q, k = got[:3]
        if q.ndim != 4 or k.shape != q.shape or (mask is not None and got[3].dtype != np.float32):
            return "Attention inputs are not 4-D q/k/v of equal heads with a float mask"
        heads, n, hd = q.shape[1:]
        scale = np.full(heads, float(att.attrs.get("scale", hd ** -0.5)))
        a = np.broadcast_to(got[3] if mask is not None else np.float32(0), (q.shape[0], heads, n, n))
    return w_in, n, heads, scale, a, [v.shape for v in views]


@dataclass
class Layout:
    height: int
    width: int
    window: tuple[int, int]  # (wh, ww)
    shift: tuple[int, int]  # (sh, sw)
    heads: int
    scale: tuple[float, ...]  # per head
    rel_bias: np.ndarray  # [heads, N, N]
    mask_diff: int  # entries where the measured mask differs from timm's region-id mask
    cosine: bool = False
    mask_value: float = MASK_VALUE
    pad_first: bool = False  # torchvision / Hugging Face: pad, then roll

    @property
    def tokens_per_window(self) -> int:
        return self.window[0] * self.window[1]

    @property
    def shifted(self) -> bool:
        return any(self.shift)


def _split_bias_and_mask(a: np.ndarray, cross: np.ndarray | None) -> tuple[np.ndarray, float]:
    """Additive logit terms a [nW, heads, N, N] -> (relative-position bias [heads, N, N], mask value).

    `cross` [nW, N, N] marks cross-region pairs (None: unshifted). The bias is read in a window with
    no cross-region pair (timm's top-left window, unless one window spans the map), the mask value
    is what the other windows add on their cross-region pairs (timm -100, Hugging Face Swinv2 -200).
    """
    if cross is None:
        return a[0], MASK_VALUE
    clean = [k for k in range(len(cross)) if not cross[k].any()]
    if not clean:  # every window straddles regions (one window row or column): compare windows
        only_k = np.broadcast_to((cross & ~cross[0][None])[:, None], a.shape)  # cross-region in k, not in window 0
        value = float(np.median((a - a[0][None])[only_k])) if only_k.any() else MASK_VALUE
        return a[0] - value * cross[0][None], value
    rel = a[clean[0]]
    added = (a - rel[None])[np.broadcast_to(cross[:, None], a.shape)]
    value = float(np.median(added)) if added.size else MASK_VALUE
    return rel, value


# ----------------------------------------------------------------------------- the pass

def _where(core: Core) -> str:
    return core.attention.name if core.attention is not None else core.logits.name


class SwinWindowAttentionPass(RewritePass):
    name = "swin"
    description = "Swin (shifted-)window attention -> WindowAttention plugin, or plain ONNX with folded bias (native)"
    modes = ("plugin", "native")

    def extra_opsets(self, mode):
        return {"vitdeploy": 1} if mode == "plugin" else {}

    # -- find
    def find(self, graph):
        walker = _Walker(graph)
        found = [walker.match(n) if n.op == "Softmax" else walker.match_attention(n)
                 for n in list(graph.nodes) if n.op in ("Softmax", "Attention")]
        cores = [c for c in found if c is not None and c.moves_data]  # plain global attention (ViT) is not ours
        notes: list[str] = []
        if not cores:
            return [], notes
        blocks = [(c, *walker.subgraph([c.x], c.y)) for c in cores]  # (core, nodes, extra inputs)
        try:
            values = activations(graph, [t for c, _, extras in blocks for t in (c.x, c.y, *extras)], batch=1)
        except Exception as e:  # shapes cannot be measured: report, rewrite nothing
            return [], [f"swin: could not run the graph to measure block shapes: {str(e).splitlines()[0][:160]}"]
        cands: list[Candidate] = []
        stage, block, last_hw = 0, 0, None
        for (core, nodes, extras), layout in measured(
                blocks, lambda b: self._measure(b[0], b[1], b[2], values, graph.opset),
                lambda b: f"window attention at '{_where(b[0])}'", notes):
            hw = (layout.height, layout.width)
            if hw != last_hw:
                stage, block, last_hw = stage + 1, 0, hw
            block += 1
            name = f"stage {stage} block {block}"
            if layout.mask_diff:
                notes.append(f"{name}: its additive mask differs from the region-id shift mask in "
                             f"{layout.mask_diff} entries (kept only if the outputs still match)")
            params = dict(core=core, layout=layout, x_shape=values[core.x.name].shape, y_shape=values[core.y.name].shape)
            cands.append(Candidate(name, nodes, [core.x, *extras], [core.y], params))
        return cands, notes

    def _measure(self, core: Core, nodes, extras, values, opset) -> tuple[Layout | None, str | None]:
        x_val = values[core.x.name]
        if x_val.dtype != np.float32:
            return None, f"the block computes in {x_val.dtype}; run the rewrite before precision conversion"
        channels = core.channels
        if x_val.shape[-1] != channels:
            return None, "x and the qkv Linear do not have matching channels"
        batch, tokens = x_val.shape[0], int(np.prod(x_val.shape[1:-1]))
        if batch * tokens * channels >= 2 ** 24:
            return None, "too large to probe exactly in FP32"
        code = (1 + np.arange(batch * tokens * channels, dtype=np.float64)).astype(np.float32).reshape(x_val.shape)
        feeds = {core.x.name: code, **{e.name: values[e.name] for e in extras}}
        terms = _attention_terms(core, nodes, feeds, opset)
        if isinstance(terms, str):
            return None, terms
        w_in, n, heads, scale, a, view_shapes = terms
        tok = _decode_tokens(w_in, channels)
        if tok is None:
            return None, "the data movement before the qkv Linear mixes channels"
        per = tok.size // batch
        if tok.size % batch or per % n:
            return None, "window count does not divide the batch"
        first = tok[:per]
        for b in range(1, batch):
            shifted = np.where(tok[b * per:(b + 1) * per] >= 0, tok[b * per:(b + 1) * per] - b * tokens, -1)
            if not np.array_equal(shifted, first):
                return None, "windows of different images are interleaved"
        # a [B, H, W, C] input names its map; for [B, L, C] (Hugging Face, or timm's previous block) the
        # [B, H, W, C] views inside the block come first, then every grid squarest first (only a window
        # covering the whole map fits several grids, and then they all compute the same)
        if x_val.ndim == 4:
            grids = [tuple(x_val.shape[1:3])]
        else:
            views = [tuple(int(d) for d in v[1:3]) for v in view_shapes
                     if len(v) == 4 and v[3] == channels and v[1] * v[2] == tokens]
            every = sorted(((h, tokens // h) for h in range(1, tokens + 1) if tokens % h == 0),
                           key=lambda g: (abs(g[0] - g[1]), g[0]))
            grids = list(dict.fromkeys(views + every))
        match = _window_grid(first, grids, n)
        if match is None:
            return None, "the token order is not timm's roll -> pad -> window partition"
        h, w, window, shift, pad_first = match
        nw = per // n
        a = a.reshape(-1, nw, heads, n, n)[0].astype(np.float32)  # first image: [nW, heads, N, N]
        rel, mask_value = _split_bias_and_mask(a, region_mismatch(h, w, window, shift) if any(shift) else None)
        want = rel[None] + (mask_value * region_mismatch(h, w, window, shift)[:, None] if any(shift) else 0.0)
        mask_diff = int(np.sum(~np.isclose(a, want, atol=1e-3)))
        return Layout(h, w, window, shift, heads, tuple(float(v) for v in scale), rel, mask_diff,
                      cosine=core.cosine, mask_value=mask_value, pad_first=pad_first), None

    # -- emit
    def emit(self, graph, cand, mode):
        core: Core = cand.params["core"]
        lay: Layout = cand.params["layout"]
        x_shape, y_shape = cand.params["x_shape"], cand.params["y_shape"]
        c = core.channels
        tokens = lay.height * lay.width
        e = Emitter(cand.outputs[0].name + "__swin", taken_names(graph))
        t = core.x
        if len(x_shape) != 3 or x_shape[1] != tokens:
            t = e.reshape(t, [0, tokens, c])
        if mode == "plugin":
            from vitdeploy.plugins.window_attention.spec import SPEC

            qkv = e.linear(t, core.w_qkv, core.b_qkv)
            pad = core.qkv_bias if core.b_qkv is not None else np.zeros(3 * c, np.float32)
            attrs = SPEC.node_attrs(window_size=lay.window, shift_size=lay.shift, num_heads=lay.heads,
                                    height=lay.height, width=lay.width, scale=lay.scale, cosine=int(lay.cosine),
                                    mask_value=lay.mask_value, pad_first=int(lay.pad_first))
            t = e.op(SPEC.name, [qkv, e.const(lay.rel_bias), e.const(pad)], attrs, domain=SPEC.domain)
        else:
            t = _native_attention(e, t, core, lay)
        t = e.linear(t, core.w_proj, core.b_proj)
        if len(y_shape) != 3 or y_shape[1] != tokens:
            t = e.reshape(t, [0, *y_shape[1:]])
        return Emission(e.nodes, [t])


def _native_attention(e: Emitter, t, core: Core, lay: Layout):
    """Plain ONNX for [B, H*W, C] tokens -> attention output [B, H*W, C] before proj: a constant
    Gather (roll+pad+partition), attention in the form TensorRT's fused attention matches --
    MatMul(q·scale, kᵀ) -> Add(ONE 4-D constant) -> Softmax -> MatMul(·, v), nothing else between
    the two MatMuls -- and a constant Gather back (reverse+crop+roll back).

    Unshifted blocks attend over [B·nW, heads, N, hd] with the relative-position bias [1, heads, N, N].
    Shifted blocks fold the windows into the head axis, [B, nW·heads, N, hd], so bias + shift mask is one
    constant [1, nW·heads, N, N] broadcast over the image batch: the same graph for a static and a
    dynamic batch, no B-fold tiled copy of the bias and no 5-D reshape between MatMul and Softmax.
    """
    c = core.channels
    tokens = lay.height * lay.width
    n, heads = lay.tokens_per_window, lay.heads
    hd = c // heads
    order = window_order(lay.height, lay.width, lay.window, lay.shift, lay.pad_first)
    nw = order.size // n
    if (order < 0).any():  # a zero token before the qkv Linear, exactly as timm pads
        t = e.op("Pad", [t, e.const(np.asarray([0, 0, 0, 0, 1, 0], np.int64))], {"mode": "constant"})
        order = np.where(order < 0, tokens, order)
    t = e.op("Gather", [t, e.const(order.astype(np.int64))], {"axis": 1})  # [B, nW*N, C]
    scale = np.asarray(lay.scale, np.float32)  # one per head (Swin V2's learnt logit scale), usually all equal
    uniform = bool(np.all(scale == scale[0]))
    if lay.shifted:
        qkv = e.reshape(e.linear(t, core.w_qkv, core.b_qkv), [-1, nw, n, 3 * c])  # [B, nW, N, 3C]
        q, k, v = e.op("Split", [qkv, e.const(np.asarray([c, c, c], np.int64))], {"axis": 3}, n_out=3)
        q, k, v = (e.reshape(x, [-1, nw, n, heads, hd]) for x in (q, k, v))
        if lay.cosine:  # Swin V2: q and k normalised over the head dimension
            q, k = _l2_normalize(e, q), _l2_normalize(e, k)

        def heads_of(x, perm, shape):  # [B, nW, N, heads, hd] -> [B, nW*heads, ...]
            return e.reshape(e.op("Transpose", [x], {"perm": perm}), shape)

        q = heads_of(q, [0, 1, 3, 2, 4], [-1, nw * heads, n, hd])
        k = heads_of(k, [0, 1, 3, 4, 2], [-1, nw * heads, hd, n])
        v = heads_of(v, [0, 1, 3, 2, 4], [-1, nw * heads, n, hd])
        scale_c = e.const(scale[0] if uniform else np.tile(scale, nw).reshape(1, nw * heads, 1, 1))
        bias = lay.rel_bias[None] + shift_mask(lay.height, lay.width, lay.window, lay.shift, lay.mask_value)[:, None]
        bias = bias.reshape(1, nw * heads, n, n)  # [nW, heads, N, N] with windows outer, as the heads axis
    else:
        qkv = e.reshape(e.linear(t, core.w_qkv, core.b_qkv), [-1, n, 3 * c])  # [B*nW, N, 3C]
        q, k, v = e.op("Split", [qkv, e.const(np.asarray([c, c, c], np.int64))], {"axis": 2}, n_out=3)
        q, k = e.reshape(q, [-1, n, heads, hd]), e.reshape(k, [-1, n, heads, hd])
        if lay.cosine:
            q, k = _l2_normalize(e, q), _l2_normalize(e, k)
        q = e.op("Transpose", [q], {"perm": [0, 2, 1, 3]})
        k = e.op("Transpose", [k], {"perm": [0, 2, 3, 1]})
        v = e.op("Transpose", [e.reshape(v, [-1, n, heads, hd])], {"perm": [0, 2, 1, 3]})
        scale_c = e.const(scale[0] if uniform else scale.reshape(1, heads, 1, 1))
        bias = lay.rel_bias[None]  # [1, heads, N, N]
    logits = e.op("MatMul", [e.op("Mul", [q, scale_c]), k])
    logits = e.op("Add", [logits, e.const(bias, np.float32)])
    out = e.op("MatMul", [e.op("Softmax", [logits], {"axis": -1}), v])
    if lay.shifted:  # [B, nW*heads, N, hd] -> [B, nW, N, heads, hd] -> [B, nW*N, C]
        out = e.op("Transpose", [e.reshape(out, [-1, nw, heads, n, hd])], {"perm": [0, 1, 3, 2, 4]})
    else:  # [B*nW, heads, N, hd] -> [B*nW, N, heads, hd]
        out = e.op("Transpose", [out], {"perm": [0, 2, 1, 3]})
    out = e.reshape(out, [-1, nw * n, c])  # [B, nW*N, C]
    inverse = np.empty(tokens, np.int64)
    real = order < tokens
    inverse[order[real]] = np.nonzero(real)[0]
    return e.op("Gather", [out, e.const(inverse)], {"axis": 1})  # [B, H*W, C]


def _l2_normalize(e: Emitter, t):
    """t / max(‖t‖₂ over the last axis, eps): F.normalize with an eps that survives FP16."""
    sq = e.op("ReduceSum", [e.op("Mul", [t, t]), e.const(np.asarray([-1], np.int64))], {"keepdims": 1})
    norm = e.op("Max", [e.op("Sqrt", [sq]), e.const(np.asarray(NATIVE_NORM_EPS, np.float32))])
    return e.op("Div", [t, norm])
