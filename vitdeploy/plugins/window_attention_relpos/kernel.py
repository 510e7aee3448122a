"""Triton kernel of `WindowAttentionRelPos`: WindowAttention's kernel with its REL_POS branch (the source, one
@triton.jit function for both node types, is `vitdeploy.plugins.window_attention.kernel`)."""
from __future__ import annotations

from vitdeploy.plugins.window_attention import kernel as _wa

KERNEL_NAME = _wa.KERNEL_NAME
NUM_KERNEL_ARGS = _wa.NUM_KERNEL_ARGS_RELPOS  # qkv, rel_h, rel_w, pad_qkv, batch, out


def make_config(**kw):
    return _wa.make_config(rel_pos=True, **kw)


def window_attention_relpos_triton(qkv, rel_h, rel_w, pad_qkv=None, **attrs):
    """Run the kernel on torch tensors (CUDA: compiled; CPU: Triton's interpreter)."""
    return _wa.window_attention_triton(qkv, None, pad_qkv, rel_h=rel_h, rel_w=rel_w, **attrs)


compile_ptx = _wa.compile_ptx
ptx_for_tensorrt = _wa.ptx_for_tensorrt
interpreter_active = _wa.interpreter_active

__all__ = ["KERNEL_NAME", "NUM_KERNEL_ARGS", "compile_ptx", "interpreter_active", "make_config", "ptx_for_tensorrt",
           "window_attention_relpos_triton"]
