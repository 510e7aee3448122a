"""PyTorch reference for `WindowAttention` and `WindowAttentionRelPos` (the truth every other face is
tested against).

Written with plain torch ops in the models' own order -- timm Swin's roll, pad, partition, attention
with relative-position bias and region-id shift mask, reverse, crop, roll back; MaxViT's
grid_partition / grid_reverse; Hiera's query amax; SAM's get_decomposed_rel_pos_bias -- so it is easy
to check line by line against `timm.models.swin_transformer`, `maxxvit`, `hiera` and
`vision_transformer_sam`.
"""
from __future__ import annotations

import math

import torch

from vitdeploy.plugins.window_attention.spec import MASK_VALUE, NORM_EPS, check_layout, head_scales, pair


def padded_size(height: int, width: int, window_size) -> tuple[int, int]:
    """Feature map size after timm pads it up to a multiple of the window (int or (wh, ww))."""
    wh, ww = pair(window_size)
    return math.ceil(height / wh) * wh, math.ceil(width / ww) * ww


def region_ids(size: int, window_size: int, shift_size: int) -> torch.Tensor:
    """Per-row (or per-column) region id on the padded, shifted map, as timm's slices assign it.

    timm labels slices (0, -ws), (-ws, -shift), (-shift, None) of the padded map 0, 1, 2. With
    shift 0 in one dimension timm's slices there collapse to one region; these ids then split the
    last window row from the others, which gives the same mask (a window never straddles them).
    """
    idx = torch.arange(size)
    return (idx >= size - window_size).long() + (idx >= size - shift_size).long()


def shift_mask(height: int, width: int, window_size, shift_size, mask_value: float = MASK_VALUE) -> torch.Tensor:
    """timm's SW-MSA mask [num_windows, N, N]: 0 within a region, `mask_value` (-100) across regions."""
    (wh, ww), (sh, sw) = pair(window_size), pair(shift_size)
    hp, wp = padded_size(height, width, (wh, ww))
    ids = region_ids(hp, wh, sh)[:, None] * 3 + region_ids(wp, ww, sw)[None, :]
    win = ids.view(hp // wh, wh, wp // ww, ww).permute(0, 2, 1, 3).reshape(-1, wh * ww)
    diff = win[:, None, :] - win[:, :, None]
    return torch.where(diff != 0, mask_value, 0.0)


def decomposed_rel_pos(q: torch.Tensor, rel_h: torch.Tensor, rel_w: torch.Tensor, window) -> torch.Tensor:
    """SAM's (MViTv2's) query-dependent bias for windows of q [b, heads, N, hd] -> [b, heads, N, N]:
    bias[i, j] = q_i · rel_h[h, y_i - y_j + wh - 1] + q_i · rel_w[h, x_i - x_j + ww - 1], as timm's
    `get_decomposed_rel_pos_bias` (tables given per head, [heads, 2*w-1, hd])."""
    wh, ww = pair(window)
    b, heads, n, hd = q.shape
    ys, xs = torch.arange(wh, device=q.device), torch.arange(ww, device=q.device)
    rh = rel_h.to(q.dtype)[:, ys[:, None] - ys[None, :] + wh - 1]  # [heads, wh(q), wh(k), hd]
    rw = rel_w.to(q.dtype)[:, xs[:, None] - xs[None, :] + ww - 1]  # [heads, ww(q), ww(k), hd]
    r_q = q.reshape(b, heads, wh, ww, hd)
    bias_h = torch.einsum("bnyxc,nykc->bnyxk", r_q, rh)
    bias_w = torch.einsum("bnyxc,nxkc->bnyxk", r_q, rw)
    return (bias_h[..., :, None] + bias_w[..., None, :]).reshape(b, heads, n, n)


def window_attention(
    qkv: torch.Tensor,
    bias: torch.Tensor | None,
    pad_qkv: torch.Tensor | None = None,
    *,
    window_size,
    shift_size,
    num_heads: int,
    height: int,
    width: int,
    scale,
    cosine: int = 0,
    mask_value: float = MASK_VALUE,
    pad_first: int = 0,
    partition: int = 0,
    q_stride: int = 1,
    rel_h: torch.Tensor | None = None,
    rel_w: torch.Tensor | None = None,
) -> torch.Tensor:
    """qkv [B, H*W, 3C] (original order) -> attention output [B, H*W/q_stride, C] (original order).

    `window_size`/`shift_size`: int (square) or (height, width); `scale`: float or one per head;
    `cosine`: Swin V2's cosine attention; `pad_first`: pad, then roll the padded map (torchvision,
    Hugging Face) instead of timm's roll, then pad; `partition` 1: MaxViT's grid partition;
    `q_stride`: Hiera's query max-pooling; `rel_h`/`rel_w` (with `bias` None): SAM's decomposed
    relative position. Computes in FP32 (or FP64 if given), returns the input dtype.
    """
    in_dtype = qkv.dtype
    cdt = torch.float64 if in_dtype == torch.float64 else torch.float32
    B, L, C3 = qkv.shape
    H, W = height, width
    (wh, ww), (sh, sw) = pair(window_size), pair(shift_size)
    if L != H * W or C3 % (3 * num_heads):
        raise ValueError(f"qkv shape {tuple(qkv.shape)} does not fit height={H} width={W} num_heads={num_heads}")
    rel_pos = rel_h is not None or rel_w is not None
    if rel_pos == (bias is not None):
        raise ValueError("give either a bias or the two decomposed relative-position tables")
    check_layout(window=(wh, ww), shift=(sh, sw), height=H, width=W, partition=partition, q_stride=q_stride,
                 pad_first=pad_first, rel_pos=rel_pos)
    C = C3 // 3
    hd = C // num_heads
    N = wh * ww
    nq = N // q_stride
    shifted = bool(sh or sw)
    x = qkv.to(cdt).view(B, H, W, C3)
    if partition == 1:  # MaxViT's grid_partition: window (a, b) = tokens (i*H/gh + a, j*W/gw + b)
        hp, wp = H, W
        nh, nw = H // wh, W // ww
        win = x.view(B, wh, nh, ww, nw, C3).permute(0, 2, 4, 1, 3, 5)
    else:
        if shifted and not pad_first:
            x = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2))
        hp, wp = padded_size(H, W, (wh, ww))
        if (hp, wp) != (H, W):
            fill = torch.zeros(C3, dtype=cdt, device=qkv.device) if pad_qkv is None else pad_qkv.to(cdt).reshape(C3)
            padded = fill.expand(B, hp, wp, C3).clone()
            padded[:, :H, :W] = x
            x = padded
        if shifted and pad_first:
            x = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2))
        nh, nw = hp // wh, wp // ww
        win = x.view(B, nh, wh, nw, ww, C3).permute(0, 1, 3, 2, 4, 5)
    win = win.reshape(B * nh * nw, N, 3, num_heads, hd)
    q, k, v = win.permute(2, 0, 3, 1, 4).unbind(0)  # each [B*nW, heads, N, hd]
    if q_stride > 1:  # Hiera: q.view(B, heads, nW, q_stride, -1, hd).amax(dim=3)
        q = q.reshape(B * nh * nw, num_heads, q_stride, nq, hd).amax(dim=2)
    q_raw = q
    s = torch.tensor(head_scales(scale, num_heads), dtype=cdt, device=qkv.device).view(1, num_heads, 1, 1)
    if cosine:  # Swin V2, as timm: F.normalize(q) @ F.normalize(k)^T * exp(clamped logit_scale)
        q = torch.nn.functional.normalize(q, dim=-1, eps=NORM_EPS)
        k = torch.nn.functional.normalize(k, dim=-1, eps=NORM_EPS)
        attn = (q @ k.transpose(-2, -1)) * s
    else:  # Swin V1, as timm: (q * scale) @ k^T
        attn = (q * s) @ k.transpose(-2, -1)
    if rel_pos:
        attn = attn + decomposed_rel_pos(q_raw, rel_h.to(cdt), rel_w.to(cdt), (wh, ww))
    else:
        attn = attn + bias.to(cdt).view(1, num_heads, nq, N)
    if shifted:
        mask = shift_mask(H, W, (wh, ww), (sh, sw), mask_value).to(device=qkv.device, dtype=cdt)
        attn = (attn.view(B, nh * nw, num_heads, N, N) + mask[None, :, None]).view(-1, num_heads, N, N)
    out = attn.softmax(-1) @ v  # [B*nW, heads, N/q_stride, hd]
    out = out.transpose(1, 2)
    if partition == 1:  # grid_reverse
        out = out.reshape(B, nh, nw, wh, ww, C).permute(0, 3, 1, 4, 2, 5).reshape(B, H * W, C)
        return out.to(in_dtype)
    whq = wh // q_stride
    out = out.reshape(B, nh, nw, whq, ww, C).permute(0, 1, 3, 2, 4, 5).reshape(B, nh * whq, wp, C)
    if shifted and pad_first:
        out = torch.roll(out, shifts=(sh, sw), dims=(1, 2))
    out = out[:, :H // q_stride, :W]
    if shifted and not pad_first:
        out = torch.roll(out, shifts=(sh, sw), dims=(1, 2))
    return out.reshape(B, H * W // q_stride, C).to(in_dtype)


def window_attention_relpos(qkv: torch.Tensor, rel_h: torch.Tensor, rel_w: torch.Tensor,
                            pad_qkv: torch.Tensor | None = None, **attrs) -> torch.Tensor:
    """`WindowAttentionRelPos`: `window_attention` with SAM's decomposed relative position as the bias."""
    return window_attention(qkv, None, pad_qkv, rel_h=rel_h, rel_w=rel_w, **attrs)


def inputs_from_timm_block(block) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """(attrs, bias [heads, N, N], pad_qkv [3C]) for a timm `SwinTransformerBlock` (V1) or
    `SwinTransformerV2Block` (V2: cosine attention, continuous position bias, q/v biases only).

    Uses the block's *effective* window/shift (after timm's clamping to the map size).
    """
    attn = block.attn
    H, W = block.input_resolution
    window, shift = pair(block.window_size), pair(block.shift_size)
    with torch.no_grad():
        if hasattr(attn, "logit_scale"):  # V2
            table = attn.cpb_mlp(attn.relative_coords_table).view(-1, attn.num_heads)
            n = window[0] * window[1]
            bias = table[attn.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1)
            bias = (16 * torch.sigmoid(bias)).detach().clone()
            scale = torch.clamp(attn.logit_scale, max=math.log(1.0 / 0.01)).exp().flatten().tolist()
            if attn.q_bias is not None:
                pad = torch.cat((attn.q_bias, attn.k_bias, attn.v_bias)).detach().clone()
            else:
                pad = torch.zeros(attn.qkv.out_features)
            cosine = 1
        else:
            bias = attn._get_rel_pos_bias()[0].detach().clone()
            qb = attn.qkv.bias
            pad = qb.detach().clone() if qb is not None else torch.zeros(attn.qkv.out_features)
            scale = [float(attn.scale)] * attn.num_heads
            cosine = 0
    attrs = dict(window_size=window, shift_size=shift, num_heads=attn.num_heads, height=H, width=W,
                 scale=scale, cosine=cosine, mask_value=MASK_VALUE, pad_first=0)
    return attrs, bias, pad
