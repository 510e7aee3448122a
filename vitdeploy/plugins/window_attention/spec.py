"""The `WindowAttention` contract: Swin's (shifted-)window attention core as one node.

Boundary: everything between timm's qkv Linear and its proj Linear, i.e.
roll -> pad -> window partition -> softmax(q k^T * scale + rel-pos bias [+ shift mask]) v
-> window reverse -> crop -> roll back. The qkv projection is per token, so it
commutes with roll/partition and stays a plain MatMul outside the plugin.

Inputs (the node always has all three, so ORT's Python op and TensorRT see a fixed arity):
  qkv     [B, H*W, 3*C]  tokens in the original (un-shifted, un-partitioned) row-major
                         order; channels as timm's qkv Linear: reshape(..., 3, heads, head_dim).
  bias    [heads, N, N]  relative-position bias already gathered from the table, N = window_size**2.
  pad_qkv [3*C]          the qkv value of a padding token. timm rolls the map and then
                         zero-pads it to a multiple of the window *before* the qkv Linear,
                         so padded tokens carry qkv = the Linear's bias (not zero) and take
                         part in attention as keys/values (timm does not mask padding; the
                         shift mask is built on the padded map). Zeros when the Linear has no
                         bias; unused (any value) when H and W are multiples of window_size.
Output:
  out     [B, H*W, C]    original token order, ready for the proj MatMul.

Attributes: `window_size`/`shift_size` are the *effective* values timm uses after
`_calc_window_shift` (window clamped to the map, shift 0 when the map fits one window);
square windows only (int), which covers every timm/official Swin v1 config with a square input.
The shift mask is not an input: it is rebuilt from region ids (value -100, as timm).
"""
from __future__ import annotations

from vitdeploy.plugins.base import PluginSpec, TensorSpec

SPEC = PluginSpec(
    name="WindowAttention",
    inputs=(
        TensorSpec("qkv", doc="[B, H*W, 3*C] original token order, timm qkv channel layout"),
        TensorSpec("bias", doc="[heads, N, N] relative-position bias, N = window_size**2"),
        TensorSpec("pad_qkv", doc="[3*C] qkv of a zero-padded token (the qkv Linear's bias)"),
    ),
    outputs=(TensorSpec("out", doc="[B, H*W, C] original token order, before the proj Linear"),),
    attrs={
        "window_size": int,
        "shift_size": int,
        "num_heads": int,
        "height": int,
        "width": int,
        "scale": float,
    },
    doc="Swin (shifted-)window multi-head attention with relative-position bias, in original token order.",
)

MASK_VALUE = -100.0  # timm's value for cross-region pairs in shifted windows
