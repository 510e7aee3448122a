"""The `GatedPositionalAttention` contract: ConViT's GPSA core as one node.

Boundary: everything between timm's `qk`/`v` Linears and its `proj` Linear. At
inference the positional branch of GPSA depends on no input, so it arrives folded:

  out = (1 - g) * softmax(q k^T * scale) v  +  g * P v        (per head, heads merged as timm)

timm also divides the blend by its row sum; each row of the blend already sums to
(1 - g) + g = 1, so that division is a no-op (tests/test_gpsa_plugin.py proves it on
timm's module rather than assuming it) and the plugin leaves it out.

Inputs:
  qk    [B, N, 2*C]   timm's qk Linear output; channels reshape(..., 2, heads, head_dim).
  v     [B, N, C]     timm's v Linear output; channels reshape(..., heads, head_dim).
  pos   [heads, N, N] softmax(pos_proj(relative indices)) -- the folded positional attention.
  gate  [heads]       sigmoid(gating_param) -- the weight of the positional attention.
Output:
  out   [B, N, C]     heads merged (transpose(1, 2).reshape), ready for the proj Linear.
Attributes: `num_heads`, `scale` (timm: head_dim ** -0.5).
"""
from __future__ import annotations

from vitdeploy.plugins.spec import PluginSpec, TensorSpec

SPEC = PluginSpec(
    name="GatedPositionalAttention",
    inputs=(
        TensorSpec("qk", doc="[B, N, 2*C] timm qk Linear output"),
        TensorSpec("v", doc="[B, N, C] timm v Linear output"),
        TensorSpec("pos", doc="[heads, N, N] folded positional attention softmax(pos_proj(rel_indices))"),
        TensorSpec("gate", doc="[heads] sigmoid(gating_param)"),
    ),
    outputs=(TensorSpec("out", doc="[B, N, C] heads merged, before the proj Linear"),),
    attrs={"num_heads": int, "scale": float},
    doc="ConViT gated positional self-attention: (1-g)*softmax(QK^T*scale)V + g*PV.",
)
