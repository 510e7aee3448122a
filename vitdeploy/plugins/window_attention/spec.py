"""The `WindowAttention` contract: Swin's (shifted-)window attention core as one node, V1 and V2.

Boundary: everything between the qkv Linear and the proj Linear, i.e.
roll -> pad -> window partition -> softmax(logits + rel-pos bias [+ shift mask]) v
-> window reverse -> crop -> roll back. The qkv projection is per token, so it
commutes with roll/partition and stays a plain MatMul outside the plugin.

Logits, per head h:
  cosine = 0 (Swin V1):  (q · kᵀ) · scale[h]                 timm: (q * head_dim**-0.5) @ kᵀ
  cosine = 1 (Swin V2):  (q̂ · k̂ᵀ) · scale[h]   q̂ = q / max(‖q‖, 1e-12) (F.normalize), same for k,
                         scale[h] = exp(min(logit_scale[h], log 100)) folded at rewrite time.

Inputs (the node always has all three, so ORT's Python op and TensorRT see a fixed arity):
  qkv     [B, H*W, 3*C]  tokens in the original (un-shifted, un-partitioned) row-major
                         order; channels as timm's qkv Linear: reshape(..., 3, heads, head_dim).
  bias    [heads, N, N]  relative-position bias already gathered from the table, N = wh*ww
                         (V2: the continuous position bias 16*sigmoid(cpb_mlp(coords)), a constant
                         at inference, folded).
  pad_qkv [3*C]          the qkv value of a padding token. timm rolls the map and then
                         zero-pads it to a multiple of the window *before* the qkv Linear,
                         so padded tokens carry qkv = the Linear's bias (not zero) and take
                         part in attention as keys/values (timm does not mask padding; the
                         shift mask is built on the padded map). Zeros when the Linear has no
                         bias (V2: q_bias | 0 | v_bias, timm's k bias is a zero buffer);
                         unused (any value) when H and W are multiples of the window.
Output:
  out     [B, H*W, C]    original token order, ready for the proj MatMul.

Attributes:
  window_size (wh, ww), shift_size (sh, sw)  the *effective* values timm uses after
      `_calc_window_shift`: the window is clamped to the map and the shift dropped **per
      dimension**, so non-square inputs give non-square windows (a 240x320 Swin ends with 4x5
      windows) and mixed shifts such as (0, 4). 0 <= shift < window per dimension.
  num_heads, height, width   the map the block sees (before padding).
  scale[num_heads]           per-head logit multiplier (V1: head_dim**-0.5 for every head).
  cosine                     0: V1 scaled dot product, 1: V2 cosine attention.
  mask_value                 added to the logits of query/key pairs from different regions of
                             the shifted map (timm: -100; Hugging Face's Swinv2 adds its mask twice:
                             -200). In V2 the logits reach +-100, so -100 does not mask exactly and
                             the value is measured from the graph, not assumed.
  pad_first                  0: timm's roll, then zero-pad to a multiple of the window; 1: pad,
                             then roll the padded map (torchvision, Hugging Face Swin/Swinv2), which
                             moves the padding tokens into the map when the map is padded and shifted.
The shift mask itself is not an input: it is rebuilt from region ids on the padded map, as timm,
torchvision and Hugging Face all build it.

Why V2 is attributes on this plugin and not a second plugin: V2 changes only how the logits are
formed (normalise q and k, per-head scale). The data movement, padding, shift mask, bias input,
output layout, and the kernel's gather/scatter and online softmax are the same, so one kernel
(a `COSINE` compile-time branch), one ORT op, one TensorRT registration and one contract test
cover both. The per-head scale is an attribute (not an input) so it stays exact FP32 in FP16
engines and is a compile-time constant of the AOT kernel, like the map and window sizes.
"""
from __future__ import annotations

import numpy as np

from vitdeploy.plugins.spec import ListAttr, PluginSpec, TensorSpec

MASK_VALUE = -100.0  # timm's value for cross-region pairs in shifted windows
NORM_EPS = 1e-12  # torch.nn.functional.normalize's eps (Swin V2's q and k)

SPEC = PluginSpec(
    name="WindowAttention",
    inputs=(
        TensorSpec("qkv", doc="[B, H*W, 3*C] original token order, timm qkv channel layout"),
        TensorSpec("bias", doc="[heads, N, N] relative-position bias, N = window_h * window_w"),
        TensorSpec("pad_qkv", doc="[3*C] qkv of a zero-padded token (the qkv Linear's bias)"),
    ),
    outputs=(TensorSpec("out", doc="[B, H*W, C] original token order, before the proj Linear"),),
    attrs={
        "window_size": ListAttr(int, 2),
        "shift_size": ListAttr(int, 2),
        "num_heads": int,
        "height": int,
        "width": int,
        "scale": ListAttr(float),
        "cosine": int,
        "mask_value": float,
        "pad_first": int,
    },
    defaults={"cosine": 0, "mask_value": MASK_VALUE, "pad_first": 0},
    doc="Swin V1/V2 (shifted-)window multi-head attention with relative-position bias, in original token order.",
)


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
