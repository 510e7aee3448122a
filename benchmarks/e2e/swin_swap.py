"""Swap vitdeploy's WindowAttention into timm's Swin blocks, in PyTorch.

Each `SwinTransformerBlock._attn` (roll, pad, partition, attention, reverse, roll
back) is replaced by: qkv Linear on the un-shifted map -> one WindowAttention call
-> proj Linear. Everything else in the model (norms, MLPs, patch merging) stays
timm's, so an end-to-end comparison measures the attention path only.
"""
from __future__ import annotations

from typing import Callable


def _swapped_attn(block, attention: Callable, attrs: dict):
    def _attn(x):
        B, H, W, C = x.shape
        if (H, W) != (attrs["height"], attrs["width"]):
            raise ValueError(f"block was swapped for a {attrs['height']}x{attrs['width']} map, got {H}x{W}")
        qkv = block.attn.qkv(x).reshape(B, H * W, 3 * C)
        out = attention(qkv, block._vd_bias, block._vd_pad_qkv, **attrs)
        return block.attn.proj_drop(block.attn.proj(out)).view(B, H, W, C)

    return _attn


def swap_window_attention(model, attention: Callable | None = None) -> int:
    """Replace the attention path of every timm SwinTransformerBlock in `model`; returns how many.

    `attention` has the signature of `vitdeploy.plugins.window_attention.kernel.window_attention_triton`
    (the default); tests pass the PyTorch reference to check the wiring on the CPU.
    """
    from timm.models.swin_transformer import SwinTransformerBlock

    from vitdeploy.plugins.window_attention.reference import inputs_from_timm_block

    if attention is None:
        from vitdeploy.plugins.window_attention.kernel import window_attention_triton as attention
    count = 0
    for block in model.modules():
        if not isinstance(block, SwinTransformerBlock):
            continue
        attrs, bias, pad = inputs_from_timm_block(block)
        ref = block.attn.qkv.weight
        block.register_buffer("_vd_bias", bias.to(device=ref.device, dtype=ref.dtype), persistent=False)
        block.register_buffer("_vd_pad_qkv", pad.to(device=ref.device, dtype=ref.dtype), persistent=False)
        block._attn = _swapped_attn(block, attention, attrs)
        count += 1
    return count
