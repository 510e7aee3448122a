"""The `HaloAttention` contract: timm's `HaloAttn` core (HaloNet) as one node.

Boundary: everything between timm's two 1x1 convolutions (`q`, `kv`) and the optional 2x2
average pool that follows (`avg_down`; it stays a plain AveragePool outside the plugin):

  queries are cut into non-overlapping bsd x bsd blocks (bsd = block_size / block_stride);
  block (by, bx) attends to the (block_size + 2*halo_size)^2 keys/values around kv block
  (by, bx) -- the block plus a halo of `halo_size` pixels. Halo pixels outside the map are
  zeros that still take part in the softmax (timm zero-pads kv and does not mask);
  logits = q.k * scale + rel   (scale_pos_embed = 0)   or   (q.k + rel) * scale   (= 1),
  rel[(i, j), (u, v)] = q[i, j] . height_rel[u - i + win - 1] + q[i, j] . width_rel[v - j + win - 1]
  (timm's `PosEmbedRel`: q-dependent relative logits, win = block_size + 2*halo_size; i, j
  index the query inside its block, u, v the key inside its neighbourhood).

Inputs:
  q           [B, heads*dim_head_qk, H/s, W/s]   the q conv output (NCHW; s = block_stride, the conv's stride).
  kv          [B, heads*(dim_head_qk+dim_head_v), H, W]  the kv conv output (NCHW); per head, its
                                                   dim_head_qk key channels then dim_head_v value channels.
  height_rel  [2*win - 1, dim_head_qk]            PosEmbedRel.height_rel
  width_rel   [2*win - 1, dim_head_qk]            PosEmbedRel.width_rel
Output:
  out         [B, heads*dim_head_v, H/s, W/s]     NCHW, timm's fold order (before the optional pool).

Attributes (read from the graph's data movement and numbers by the `halo` pass, never from
names): block_size, halo_size, num_heads, dim_head_qk, dim_head_v, scale, scale_pos_embed
(0/1), block_stride (1, or 2 for timm's strided-query blocks). H and W are the kv map's and
must be multiples of block_size; the batch may be dynamic.
"""
from __future__ import annotations

from vitdeploy.plugins.spec import PluginSpec, TensorSpec

SPEC = PluginSpec(
    name="HaloAttention",
    inputs=(
        TensorSpec("q", doc="[B, heads*dim_head_qk, H/s, W/s] q conv output, NCHW"),
        TensorSpec("kv", doc="[B, heads*(dim_head_qk+dim_head_v), H, W] kv conv output, NCHW"),
        TensorSpec("height_rel", doc="[2*(block+2*halo)-1, dim_head_qk] relative height embedding"),
        TensorSpec("width_rel", doc="[2*(block+2*halo)-1, dim_head_qk] relative width embedding"),
    ),
    outputs=(TensorSpec("out", doc="[B, heads*dim_head_v, H/s, W/s] NCHW, before the optional avg pool"),),
    attrs={
        "block_size": int,
        "halo_size": int,
        "num_heads": int,
        "dim_head_qk": int,
        "dim_head_v": int,
        "scale": float,
        "scale_pos_embed": int,
        "block_stride": int,
    },
    doc="HaloNet blocked local self-attention with q-dependent relative-position logits, NCHW in and out.",
)


def window_size(block_size: int, halo_size: int) -> int:
    """Side of a block's key/value neighbourhood: the block plus a halo on each side."""
    return block_size + 2 * halo_size


def check_attrs(*, block_size: int, halo_size: int, num_heads: int, dim_head_qk: int, dim_head_v: int,
                block_stride: int, scale_pos_embed: int, **_) -> None:
    """Raise ValueError naming the first attribute outside what every face implements."""
    if block_size < 1 or halo_size < 0 or num_heads < 1 or dim_head_qk < 1 or dim_head_v < 1:
        raise ValueError(f"HaloAttention: sizes must be positive (block {block_size}, halo {halo_size}, "
                         f"heads {num_heads}, dims {dim_head_qk}/{dim_head_v})")
    if block_stride not in (1, 2) or block_size % block_stride:
        raise ValueError(f"HaloAttention: block_stride {block_stride} must be 1 or 2 and divide block_size {block_size}")
    if scale_pos_embed not in (0, 1):
        raise ValueError(f"HaloAttention: scale_pos_embed must be 0 or 1, got {scale_pos_embed}")
