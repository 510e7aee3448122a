"""PyTorch reference for `GatedPositionalAttention` (the truth every other face is tested against)."""
from __future__ import annotations

import torch


def gated_positional_attention(
    qk: torch.Tensor, v: torch.Tensor, pos: torch.Tensor, gate: torch.Tensor, *, num_heads: int, scale: float
) -> torch.Tensor:
    """qk [B, N, 2C], v [B, N, C], pos [heads, N, N], gate [heads] -> [B, N, C].

    Computes in FP32 (FP64 if given) and returns the input dtype.
    """
    in_dtype = qk.dtype
    cdt = torch.float64 if in_dtype == torch.float64 else torch.float32
    B, N, C2 = qk.shape
    C = C2 // 2
    if C2 % 2 or C % num_heads or v.shape != (B, N, C) or pos.shape != (num_heads, N, N) or gate.numel() != num_heads:
        raise ValueError(
            f"shapes do not fit heads={num_heads}: qk {tuple(qk.shape)} v {tuple(v.shape)} "
            f"pos {tuple(pos.shape)} gate {tuple(gate.shape)}"
        )
    hd = C // num_heads
    q, k = qk.to(cdt).reshape(B, N, 2, num_heads, hd).permute(2, 0, 3, 1, 4).unbind(0)  # [B, h, N, hd]
    vh = v.to(cdt).reshape(B, N, num_heads, hd).transpose(1, 2)
    g = gate.to(cdt).reshape(1, num_heads, 1, 1)
    content = ((q @ k.transpose(-2, -1)) * scale).softmax(-1)
    out = (1.0 - g) * (content @ vh) + g * (pos.to(cdt).unsqueeze(0) @ vh)
    return out.transpose(1, 2).reshape(B, N, C).to(in_dtype)


def inputs_from_timm_gpsa(gpsa, num_patches: int) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """(attrs, pos [heads, N, N], gate [heads]) for a timm `GPSA` module at N tokens."""
    with torch.no_grad():
        rel = gpsa.get_rel_indices(num_patches)  # [1, N, N, 3]
        pos = gpsa.pos_proj(rel).permute(0, 3, 1, 2).softmax(-1)[0].detach().clone()
        gate = torch.sigmoid(gpsa.gating_param).detach().clone()
    return {"num_heads": gpsa.num_heads, "scale": float(gpsa.scale)}, pos, gate
