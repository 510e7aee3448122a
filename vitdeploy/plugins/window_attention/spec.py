"""The `WindowAttention` contract, and its sibling `WindowAttentionRelPos` (plugins/window_attention_relpos/,
which shares this contract's attributes and the kernel): windowed multi-head
attention as one node, for every window scheme the rewrite knows.

Boundary: everything between the qkv Linear and the proj Linear, i.e.
(roll) -> (pad) -> window or grid partition -> softmax(logits + bias [+ shift mask]) v
-> reverse -> (crop) -> (roll back). The qkv projection is per token, so it commutes with the
data movement and stays a plain MatMul outside the plugin (as does any per-token LayerNorm before it).

Which models, as which attributes (the rewrite measures each block and writes these):
  Swin V1/V2 (timm, torchvision, HF)  partition 0, shift, padding, relative-position bias, cosine (V2)
  SAM / MobileSAM windowed blocks     partition 0, padding to a window multiple, no shift;
                                      SAM: decomposed relative position -> `WindowAttentionRelPos`
  TinyViT (MobileSAM's encoder)       partition 0, padding, per-head offset biases (a constant bias)
  MaxViT block / grid attention       partition 0 / partition 1 (dilated grid), constant bias
  Twins locally-grouped attention     partition 0, padding, no bias (bias input all zero)
  Hiera (SAM 2) mask-unit attention   tokens already grouped: the map is (units' tokens, units),
                                      one (tokens, 1) window per unit; q_stride > 1 max-pools queries

Logits, per head h (before the softmax):
  cosine = 0:  (q · kᵀ) · scale[h] + bias[h]                 timm: (q * head_dim**-0.5) @ kᵀ + bias
  cosine = 1:  (q̂ · k̂ᵀ) · scale[h] + bias[h]   q̂ = q / max(‖q‖, 1e-12) (F.normalize), same for k,
               scale[h] = exp(min(logit_scale[h], log 100)) folded at rewrite time (Swin V2).
  `WindowAttentionRelPos` replaces the constant bias by SAM's (MViTv2's) decomposed relative position,
  which depends on the query:   bias[h, i, j] = q_i · rel_h[h, y_i − y_j + wh − 1] + q_i · rel_w[h, x_i − x_j + ww − 1]
  with q the raw query (before scale and normalisation) and (y, x) the slot's row and column inside its
  window. It is computed in the kernel from q and the two tables, never as a [windows, heads, N, N] tensor.

Inputs (each node type has a fixed arity, as ORT's Python ops and TensorRT need):
  WindowAttention:        qkv, bias, pad_qkv
  WindowAttentionRelPos:  qkv, rel_h, rel_w, pad_qkv
  qkv     [B, H*W, 3*C]  tokens in the original (un-shifted, un-partitioned) row-major order;
                         channels type-first: [q heads | k heads | v heads], head h's dims at h*hd.
                         (Head-first layouts -- TinyViT, MaxViT -- are a column permutation of the
                         qkv Linear's weight, done at rewrite time.)
  bias    [heads, N/q_stride, N]  additive logit bias (relative-position table already gathered,
                         N = window_h * window_w); zeros when the block has none.
  rel_h   [heads, 2*wh-1, hd], rel_w [heads, 2*ww-1, hd]  the decomposed tables, per head (SAM shares
                         one table across heads; the rewrite repeats it).
  pad_qkv [3*C]          the qkv value of a padding token. timm (Swin, SAM, Twins) pads the map *before*
                         the qkv Linear, so padded tokens carry qkv = the Linear's bias, or, with a
                         LayerNorm after the padding (TinyViT), the qkv of LN(0); they take part in
                         attention as keys/values (timm does not mask padding; the shift mask is built on
                         the padded map). Unused (any value) when H and W are multiples of the window.
Output:
  out     [B, H*W/q_stride, C]  original token order, ready for the proj MatMul.

Attributes:
  window_size (wh, ww)  tokens per window along each axis (partition 0), or the grid size (gh, gw)
      (partition 1). For Swin, the *effective* values after timm's `_calc_window_shift`: the window is
      clamped to the map and the shift dropped **per dimension** (a 240x320 Swin ends with 4x5 windows).
  shift_size (sh, sw)  0 <= shift < window per dimension; partition 0 only.
  num_heads, height, width   the map the block sees (before padding).
  scale[num_heads]           per-head logit multiplier (V1: head_dim**-0.5 for every head).
  cosine                     0: scaled dot product, 1: Swin V2 cosine attention.
  mask_value                 added to the logits of query/key pairs from different regions of the
                             shifted map (timm: -100; Hugging Face's Swinv2 adds its mask twice: -200),
                             measured from the graph, not assumed.
  pad_first                  0: timm's roll, then zero-pad to a multiple of the window; 1: pad, then
                             roll the padded map (torchvision, Hugging Face Swin/Swinv2).
  partition                  0: windows of (wh, ww) adjacent tokens (timm's window_partition), padded
                             to a multiple of the window; 1: grid (MaxViT's grid_partition): window
                             (a, b) holds the tokens (i*H/gh + a, j*W/gw + b), a dilated window; the map
                             must be a multiple of the grid, no shift, no padding.
  q_stride                   1, or the query max-pooling factor of Hiera's stage-transition blocks:
                             query slot i of a window is the max of its key slots s*N/q_stride + i
                             (s < q_stride), the output map is (H/q_stride, W) in windows
                             (wh/q_stride, ww). Partition 0, no shift, no padding, wh % q_stride == 0.
The shift mask itself is not an input: it is rebuilt from region ids on the padded map, as timm,
torchvision and Hugging Face all build it.

Why V2, grid partition and query pooling are attributes of this plugin and not new plugins: each
changes only how a slot maps to a row of qkv/out (partition, q_stride) or how the logits are formed
(cosine, per-head scale); IO, the kernel's gather/scatter and online softmax stay the same, so one
kernel (compile-time branches), one ORT op, one TensorRT registration and one contract cover them.
The per-head scale is an attribute (not an input) so it stays exact FP32 in FP16 engines and is a
compile-time constant of the AOT kernel, like the map and window sizes.

Why the decomposed relative position is a sibling node type (`WindowAttentionRelPos`) and not more
attributes: its *inputs* differ (two tables instead of a [heads, N, N] bias), and a TensorRT plugin and
an onnxruntime-extensions op have a fixed list of inputs, so one node type with optional inputs would
change every existing WindowAttention node (and graph) or carry dummy tensors through every Swin engine.
The kernel stays one: the same Triton function, with the absent pointers passed as compile-time `None`
(so each PTX entry takes exactly its node's inputs) and the bias computed in a compile-time branch.
"""
from __future__ import annotations

import numpy as np

from vitdeploy.plugins.spec import ListAttr, PluginSpec, TensorSpec

MASK_VALUE = -100.0  # timm's value for cross-region pairs in shifted windows
NORM_EPS = 1e-12  # torch.nn.functional.normalize's eps (Swin V2's q and k)

ATTRS = {
    "window_size": ListAttr(int, 2),
    "shift_size": ListAttr(int, 2),
    "num_heads": int,
    "height": int,
    "width": int,
    "scale": ListAttr(float),
    "cosine": int,
    "mask_value": float,
    "pad_first": int,
    "partition": int,
    "q_stride": int,
}
# Graphs written before an attribute existed read as the behaviour they were written for.
DEFAULTS = {"cosine": 0, "mask_value": MASK_VALUE, "pad_first": 0, "partition": 0, "q_stride": 1}
PARTITIONS = ("window", "grid")

SPEC = PluginSpec(
    name="WindowAttention",
    inputs=(
        TensorSpec("qkv", doc="[B, H*W, 3*C] original token order, channels [q heads | k heads | v heads]"),
        TensorSpec("bias", doc="[heads, N/q_stride, N] additive logit bias, N = window_h * window_w"),
        TensorSpec("pad_qkv", doc="[3*C] qkv of a zero-padded token (the qkv Linear's bias)"),
    ),
    outputs=(TensorSpec("out", doc="[B, H*W/q_stride, C] original token order, before the proj Linear"),),
    attrs=ATTRS,
    defaults=DEFAULTS,
    doc="Window/grid multi-head attention (Swin V1/V2, TinyViT, MaxViT, Twins, Hiera) with an additive bias, "
        "in original token order.",
)



def check_layout(*, window, shift, height: int, width: int, partition: int = 0, q_stride: int = 1,
                 pad_first: int = 0, rel_pos: bool = False) -> None:
    """ValueError naming the first attribute combination the faces do not define."""
    (wh, ww), (sh, sw) = pair(window), pair(shift)
    if min(wh, ww) < 1 or not (0 <= sh < wh and 0 <= sw < ww):
        raise ValueError(f"shift_size {(sh, sw)} must be in [0, window_size={(wh, ww)}) per dimension")
    if partition not in (0, 1):
        raise ValueError(f"partition must be 0 (window) or 1 (grid), got {partition}")
    if partition == 1 and (sh or sw or height % wh or width % ww):
        raise ValueError(f"grid partition needs the map {height}x{width} to be a multiple of the grid {wh}x{ww} "
                         "and no shift")
    if q_stride < 1:
        raise ValueError(f"q_stride must be at least 1, got {q_stride}")
    if q_stride > 1 and (partition or sh or sw or height % wh or width % ww or wh % q_stride or rel_pos):
        raise ValueError(f"q_stride {q_stride} needs window partition, no shift, no padding and a window height "
                         f"divisible by it (window {wh}x{ww} on {height}x{width}), and no decomposed position")


def pair(v) -> tuple[int, int]:
    """(height, width) from an int (square) or a pair."""
    vals = np.asarray(v).reshape(-1).tolist()
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or any(int(x) != x for x in vals):
        raise ValueError(f"expected an int or an (height, width) pair of ints, got {v!r}")
    return int(vals[0]), int(vals[1])


def head_scales(scale, num_heads: int) -> tuple[float, ...]:
    """One logit scale per head from a float (every head) or a sequence of 1 or num_heads values."""
    vals = tuple(float(s) for s in np.asarray(scale, dtype=np.float64).reshape(-1))
    if len(vals) == 1:
        return vals * num_heads
    if len(vals) != num_heads:
        raise ValueError(f"scale has {len(vals)} values for {num_heads} heads")
    return vals
