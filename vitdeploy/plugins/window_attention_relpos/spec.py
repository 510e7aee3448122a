"""The `WindowAttentionRelPos` contract: `WindowAttention` (see `vitdeploy.plugins.window_attention.spec`, which
documents both) with SAM's decomposed relative position instead of a bias input.

    bias[h, i, j] = q_i · rel_h[h, y_i − y_j + wh − 1] + q_i · rel_w[h, x_i − x_j + ww − 1]

q is the raw query (before scale and normalisation), (y, x) the slot's row and column inside its window.
The kernel computes it from q and the two tables; nothing of size [windows, heads, N, N] exists.

Why a sibling node type and not attributes of WindowAttention: its inputs differ (two tables instead of
one [heads, N, N] bias), and TensorRT plugins and onnxruntime-extensions ops have a fixed list of inputs.
Same attributes, same kernel (`window_attention.kernel` with REL_POS), same launch function.
"""
from __future__ import annotations

from vitdeploy.plugins.spec import PluginSpec, TensorSpec
from vitdeploy.plugins.window_attention.spec import ATTRS, DEFAULTS

SPEC = PluginSpec(
    name="WindowAttentionRelPos",
    inputs=(
        TensorSpec("qkv", doc="[B, H*W, 3*C] original token order, channels [q heads | k heads | v heads]"),
        TensorSpec("rel_h", doc="[heads, 2*window_h-1, head_dim] decomposed relative position, rows"),
        TensorSpec("rel_w", doc="[heads, 2*window_w-1, head_dim] decomposed relative position, columns"),
        TensorSpec("pad_qkv", doc="[3*C] qkv of a zero-padded token (the qkv Linear's bias)"),
    ),
    outputs=(TensorSpec("out", doc="[B, H*W, C] original token order, before the proj Linear"),),
    attrs=ATTRS,
    defaults=DEFAULTS,
    doc="Window multi-head attention with SAM's decomposed relative position (q·R_h + q·R_w), in original "
        "token order.",
)
