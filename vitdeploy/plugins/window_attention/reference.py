"""PyTorch reference for `WindowAttention` (the truth every other face is tested against).

Written with plain torch ops in timm's order (roll, pad, partition, attention with
relative-position bias and region-id shift mask, reverse, crop, roll back) so it
is easy to check line by line against `timm.models.swin_transformer`.
"""
from __future__ import annotations

import math

import torch

from vitdeploy.plugins.window_attention.spec import MASK_VALUE


def padded_size(height: int, width: int, window_size: int) -> tuple[int, int]:
    """Feature map size after timm pads it up to a multiple of the window."""
    return math.ceil(height / window_size) * window_size, math.ceil(width / window_size) * window_size


def region_ids(size: int, window_size: int, shift_size: int) -> torch.Tensor:
    """Per-row (or per-column) region id on the padded, shifted map, as timm's slices assign it.

    timm labels slices (0, -ws), (-ws, -shift), (-shift, None) of the padded map 0, 1, 2.
    """
    idx = torch.arange(size)
    return (idx >= size - window_size).long() + (idx >= size - shift_size).long()


def shift_mask(height: int, width: int, window_size: int, shift_size: int) -> torch.Tensor:
    """timm's SW-MSA mask [num_windows, N, N]: 0 within a region, -100 across regions."""
    hp, wp = padded_size(height, width, window_size)
    ids = region_ids(hp, window_size, shift_size)[:, None] * 3 + region_ids(wp, window_size, shift_size)[None, :]
    ws = window_size
    win = ids.view(hp // ws, ws, wp // ws, ws).permute(0, 2, 1, 3).reshape(-1, ws * ws)
    diff = win[:, None, :] - win[:, :, None]
    return torch.where(diff != 0, MASK_VALUE, 0.0)


def window_attention(
    qkv: torch.Tensor,
    bias: torch.Tensor,
    pad_qkv: torch.Tensor | None = None,
    *,
    window_size: int,
    shift_size: int,
    num_heads: int,
    height: int,
    width: int,
    scale: float,
) -> torch.Tensor:
    """qkv [B, H*W, 3C] (original order) -> attention output [B, H*W, C] (original order).

    Computes in FP32 (or FP64 if given) and returns the input dtype.
    """
    in_dtype = qkv.dtype
    cdt = torch.float64 if in_dtype == torch.float64 else torch.float32
    B, L, C3 = qkv.shape
    H, W, ws, s = height, width, window_size, shift_size
    if L != H * W or C3 % (3 * num_heads):
        raise ValueError(f"qkv shape {tuple(qkv.shape)} does not fit height={H} width={W} num_heads={num_heads}")
    C = C3 // 3
    hd = C // num_heads
    N = ws * ws
    x = qkv.to(cdt).view(B, H, W, C3)
    if s:
        x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
    hp, wp = padded_size(H, W, ws)
    if (hp, wp) != (H, W):
        fill = torch.zeros(C3, dtype=cdt, device=qkv.device) if pad_qkv is None else pad_qkv.to(cdt).reshape(C3)
        padded = fill.expand(B, hp, wp, C3).clone()
        padded[:, :H, :W] = x
        x = padded
    nh, nw = hp // ws, wp // ws
    win = x.view(B, nh, ws, nw, ws, C3).permute(0, 1, 3, 2, 4, 5).reshape(B * nh * nw, N, 3, num_heads, hd)
    q, k, v = win.permute(2, 0, 3, 1, 4).unbind(0)  # each [B*nW, heads, N, hd]
    attn = (q * scale) @ k.transpose(-2, -1) + bias.to(cdt).view(1, num_heads, N, N)
    if s:
        mask = shift_mask(H, W, ws, s).to(device=qkv.device, dtype=cdt)
        attn = (attn.view(B, nh * nw, num_heads, N, N) + mask[None, :, None]).view(-1, num_heads, N, N)
    out = attn.softmax(-1) @ v  # [B*nW, heads, N, hd]
    out = out.transpose(1, 2).reshape(B, nh, nw, ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(B, hp, wp, C)
    out = out[:, :H, :W]
    if s:
        out = torch.roll(out, shifts=(s, s), dims=(1, 2))
    return out.reshape(B, H * W, C).to(in_dtype)


def inputs_from_timm_block(block) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """(attrs, bias [heads, N, N], pad_qkv [3C]) for a timm `SwinTransformerBlock`.

    Uses the block's *effective* window/shift (after timm's clamping to the map size).
    """
    attn = block.attn
    wh, ww = block.window_size
    sh, sw = block.shift_size
    if wh != ww or sh != sw:
        raise ValueError(f"WindowAttention supports square windows/shifts, got window {block.window_size} shift {block.shift_size}")
    H, W = block.input_resolution
    with torch.no_grad():
        bias = attn._get_rel_pos_bias()[0].detach().clone()
        qb = attn.qkv.bias
        pad = qb.detach().clone() if qb is not None else torch.zeros(attn.qkv.out_features)
    attrs = dict(window_size=wh, shift_size=sh, num_heads=attn.num_heads, height=H, width=W, scale=float(attn.scale))
    return attrs, bias, pad
