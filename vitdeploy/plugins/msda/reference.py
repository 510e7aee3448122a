"""PyTorch truth for multi-scale deformable attention (the semantics in `spec.py`).

Written as explicit gathers (the way the plugin's kernels sample) rather than with
`grid_sample`, so that the tests comparing it with transformers' implementations
(Deformable DETR's `MultiScaleDeformableAttention`, RT-DETR v2 / D-FINE's
`multi_scale_deformable_attention_v2` with per-level point counts and `discrete` sampling)
compare two independent implementations.
"""
from __future__ import annotations

import torch

from vitdeploy.plugins.msda.spec import METHODS, check_num_points


def _levels(spatial_shapes, level_start_index) -> list[tuple[int, int, int]]:
    shapes = torch.as_tensor(spatial_shapes).reshape(-1, 2).tolist()
    starts = torch.as_tensor(level_start_index).reshape(-1).tolist()
    if len(shapes) != len(starts):
        raise ValueError(f"spatial_shapes has {len(shapes)} levels but level_start_index has {len(starts)}")
    return [(int(h), int(w), int(s)) for (h, w), s in zip(shapes, starts)]


def _checked(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, num_points):
    """The plugin's shape contract -> (levels, points per level, locations [N,Lq,M,ΣP,2], weights [N,Lq,M,ΣP])."""
    n, s, m, d = value.shape
    loc_shape = tuple(sampling_locations.shape)
    if (len(loc_shape) not in (5, 6) or loc_shape[0] != n or loc_shape[2] != m or loc_shape[-1] != 2
            or tuple(attention_weights.shape) != loc_shape[:-1]):
        raise ValueError(
            f"inconsistent shapes: value {tuple(value.shape)}, locations {loc_shape}, "
            f"weights {tuple(attention_weights.shape)}"
        )
    pts = check_num_points(num_points, loc_shape)
    levels = _levels(spatial_shapes, level_start_index)
    if len(levels) != len(pts):
        raise ValueError(f"{len(levels)} spatial shapes for {len(pts)} levels in sampling_locations")
    for lvl, (h, wd, start) in enumerate(levels):
        if start < 0 or start + h * wd > s:
            raise ValueError(f"level {lvl} ({h}x{wd} at {start}) does not fit in S={s}")
    lq = loc_shape[1]
    total = sum(pts)
    return levels, pts, sampling_locations.reshape(n, lq, m, total, 2), attention_weights.reshape(n, lq, m, total)


def msda(value: torch.Tensor, spatial_shapes, level_start_index, sampling_locations: torch.Tensor,
         attention_weights: torch.Tensor, num_points=None, method: str = "default") -> torch.Tensor:
    """value [N,S,M,D], shapes [L,2] (H,W), starts [L], locations [N,Lq,M,L,P,2] or [N,Lq,M,ΣP,2]
    (x,y in [0,1]), weights = locations' shape without the last axis -> [N,Lq,M,D] in value's dtype
    (computed in FP32). `num_points` (points per level) defaults to P for each of the L levels of
    6-D locations.

    default: pixel coordinates are loc * size - 0.5 (align_corners=False), bilinear, corners outside
    the map contribute zero. discrete: the pixel (clamp(int(x*W + 0.5), 0, W-1), clamp(int(y*H + 0.5), 0, H-1)).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    levels, pts, loc_all, w_all = _checked(value, spatial_shapes, level_start_index, sampling_locations,
                                          attention_weights, num_points)
    n, s, m, d = value.shape
    lq = loc_all.shape[1]
    v = value.float().permute(0, 2, 1, 3)  # [N, M, S, D]
    out = torch.zeros(n, m, lq, d, dtype=torch.float32, device=value.device)
    off = 0
    for (h, wd, start), p in zip(levels, pts):
        v_l = v[:, :, start:start + h * wd]  # [N, M, H*W, D]
        loc = loc_all[:, :, :, off:off + p].float().permute(0, 2, 1, 3, 4).reshape(n, m, lq * p, 2)
        w = w_all[:, :, :, off:off + p].float().permute(0, 2, 1, 3).reshape(n, m, lq * p)
        off += p
        if method == "discrete":
            size = torch.tensor([wd, h], dtype=torch.float32, device=value.device)
            # transformers: (grid * [W, H] + 0.5).to(int64), then clamp. Clamping to [-1, size] first changes
            # no index and defines what a float->int conversion leaves undefined (inf, |x| >= 2**63).
            coord = torch.minimum((loc * size + 0.5).clamp(min=-1.0), size).to(torch.int64)
            xx, yy = coord[..., 0].clamp(0, wd - 1), coord[..., 1].clamp(0, h - 1)
            corners = [(yy * wd + xx, torch.ones_like(w, dtype=torch.bool), w)]
        else:
            x = loc[..., 0] * wd - 0.5
            y = loc[..., 1] * h - 0.5
            x0, y0 = torch.floor(x), torch.floor(y)
            fx, fy = x - x0, y - y0
            corners = []
            for dy, dx, cw in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
                yy, xx = y0 + dy, x0 + dx
                inside = (yy >= 0) & (yy <= h - 1) & (xx >= 0) & (xx <= wd - 1)
                corners.append(((yy * wd + xx).long(), inside, cw * w))
        for tok, inside, coef in corners:
            idx = torch.where(inside, tok, torch.zeros_like(tok))  # [N, M, Lq*P]
            gathered = torch.gather(v_l, 2, idx.unsqueeze(-1).expand(-1, -1, -1, d))
            coef = torch.where(inside, coef, torch.zeros_like(coef))
            out += (gathered * coef.unsqueeze(-1)).reshape(n, m, lq, p, d).sum(3)
    return out.permute(0, 2, 1, 3).contiguous().to(value.dtype)


def msda_grid_sample(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                     num_points=None, method: str = "default"):
    """The same op through `grid_sample`, as the exported graphs compute it (discrete: the gathers above).

    About 5x faster on the CPU than the explicit gathers, so the ORT face runs this one
    (tests hold both to transformers' implementations); the benchmark's PyTorch baseline.
    """
    if method == "discrete":
        return msda(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, num_points, method)
    levels, pts, loc_all, w_all = _checked(value, spatial_shapes, level_start_index, sampling_locations,
                                          attention_weights, num_points)
    n, s, m, d = value.shape
    lq, total = loc_all.shape[1], loc_all.shape[3]
    grids = (2 * loc_all - 1).transpose(1, 2).flatten(0, 1)  # [N*M, Lq, ΣP, 2]
    samples = []
    off = 0
    for (h, wd, start), p in zip(levels, pts):
        v_l = value[:, start:start + h * wd].flatten(2).transpose(1, 2).reshape(n * m, d, h, wd)
        samples.append(torch.nn.functional.grid_sample(v_l, grids[:, :, off:off + p], mode="bilinear",
                                                       padding_mode="zeros", align_corners=False))
        off += p
    w = w_all.transpose(1, 2).reshape(n * m, 1, lq, total)
    out = (torch.cat(samples, dim=-1) * w).sum(-1).view(n, m, d, lq)
    return out.permute(0, 3, 1, 2).contiguous()
