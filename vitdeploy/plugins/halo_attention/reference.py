"""PyTorch reference for `HaloAttention` (the truth every other face is tested against).

Written with plain torch ops in timm's order -- block the queries, zero-pad and unfold the
key/value map into overlapping neighbourhoods, attention with relative logits, fold back --
so it reads line by line against `timm.layers.halo_attn.HaloAttn.forward`. The relative
logits are gathered with explicit indices (u - i + win - 1) instead of timm's pad-and-slice
trick, so the comparison with timm checks that index arithmetic rather than copying it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from vitdeploy.plugins.halo_attention.spec import check_attrs, window_size


def relative_index(query_len: int, win: int) -> torch.Tensor:
    """[query_len, win] row of the relative table for query i and key u: u - i + win - 1."""
    return torch.arange(win)[None, :] - torch.arange(query_len)[:, None] + win - 1


def relative_logits(q: torch.Tensor, height_rel: torch.Tensor, width_rel: torch.Tensor, win: int) -> torch.Tensor:
    """q [..., bsd*bsd, d] (row-major query blocks) -> [..., bsd*bsd, win*win] relative logits."""
    bsd = int(round(q.shape[-2] ** 0.5))
    qb = q.reshape(*q.shape[:-2], bsd, bsd, q.shape[-1])  # [..., i, j, d]
    idx = relative_index(bsd, win).to(q.device)  # [bsd, win]
    th = height_rel.to(q.dtype)[idx]  # [i, u, d]
    tw = width_rel.to(q.dtype)[idx]  # [j, v, d]
    rel_h = torch.einsum("...ijd,iud->...iju", qb, th)
    rel_w = torch.einsum("...ijd,jvd->...ijv", qb, tw)
    rel = rel_h[..., :, None] + rel_w[..., None, :]  # [..., i, j, u, v]
    return rel.reshape(*q.shape[:-1], win * win)


def halo_attention(
    q: torch.Tensor,
    kv: torch.Tensor,
    height_rel: torch.Tensor,
    width_rel: torch.Tensor,
    *,
    block_size: int,
    halo_size: int,
    num_heads: int,
    dim_head_qk: int,
    dim_head_v: int,
    scale: float,
    scale_pos_embed: int,
    block_stride: int,
) -> torch.Tensor:
    """q [B, heads*dqk, H/s, W/s], kv [B, heads*(dqk+dv), H, W] -> [B, heads*dv, H/s, W/s] (NCHW).

    Computes in FP32 (FP64 if given) and returns the input dtype.
    """
    check_attrs(block_size=block_size, halo_size=halo_size, num_heads=num_heads, dim_head_qk=dim_head_qk,
                dim_head_v=dim_head_v, block_stride=block_stride, scale_pos_embed=scale_pos_embed)
    in_dtype = q.dtype
    cdt = torch.float64 if in_dtype == torch.float64 else torch.float32
    B, Cq, Hq, Wq = q.shape
    Bk, Ckv, H, W = kv.shape
    heads, dqk, dv, bs, halo = num_heads, dim_head_qk, dim_head_v, block_size, halo_size
    bsd = bs // block_stride
    win = window_size(bs, halo)
    r = 2 * win - 1
    if (Bk != B or Cq != heads * dqk or Ckv != heads * (dqk + dv) or H % bs or W % bs
            or (Hq, Wq) != (H // block_stride, W // block_stride)):
        raise ValueError(f"HaloAttention: q {tuple(q.shape)} / kv {tuple(kv.shape)} do not fit heads={heads}, "
                         f"dims {dqk}/{dv}, block {bs}, stride {block_stride}")
    if tuple(height_rel.shape) != (r, dqk) or tuple(width_rel.shape) != (r, dqk):
        raise ValueError(f"HaloAttention: relative tables {tuple(height_rel.shape)} / {tuple(width_rel.shape)} "
                         f"must be [{r}, {dqk}] (2*(block+2*halo)-1 rows)")
    nh, nw = H // bs, W // bs
    # queries: [B, heads, blocks, bsd*bsd, dqk]
    qb = q.to(cdt).reshape(B, heads, dqk, nh, bsd, nw, bsd).permute(0, 1, 3, 5, 4, 6, 2)
    qb = qb.reshape(B, heads, nh * nw, bsd * bsd, dqk)
    # keys/values: zero-pad by the halo, then every block's (win x win) neighbourhood
    kvp = F.pad(kv.to(cdt), [halo, halo, halo, halo])
    kvw = kvp.unfold(2, win, bs).unfold(3, win, bs)  # [B, Ckv, nh, nw, win, win]
    kvw = kvw.reshape(B, heads, dqk + dv, nh * nw, win * win).permute(0, 1, 3, 4, 2)
    k, v = torch.split(kvw, [dqk, dv], dim=-1)  # [B, heads, blocks, win*win, d]
    rel = relative_logits(qb, height_rel.to(cdt), width_rel.to(cdt), win)
    logits = qb @ k.transpose(-1, -2)
    logits = (logits + rel) * scale if scale_pos_embed else logits * scale + rel
    out = logits.softmax(-1) @ v  # [B, heads, blocks, bsd*bsd, dv]
    out = out.reshape(B, heads, nh, nw, bsd, bsd, dv).permute(0, 1, 6, 2, 4, 3, 5)
    return out.reshape(B, heads * dv, Hq, Wq).to(in_dtype)


def inputs_from_timm(attn) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """(attrs, height_rel, width_rel) for a timm `HaloAttn` module."""
    attrs = dict(block_size=attn.block_size, halo_size=attn.halo_size, num_heads=attn.num_heads,
                 dim_head_qk=attn.dim_head_qk, dim_head_v=attn.dim_head_v, scale=float(attn.scale),
                 scale_pos_embed=int(bool(attn.scale_pos_embed)), block_stride=attn.block_stride)
    with torch.no_grad():
        return attrs, attn.pos_embed.height_rel.detach().clone(), attn.pos_embed.width_rel.detach().clone()
