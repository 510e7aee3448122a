"""ONNX Runtime CPU face of `WindowAttentionRelPos`: the PyTorch reference behind an onnxruntime-extensions op."""
from __future__ import annotations

import numpy as np
import torch

from vitdeploy.plugins.ort import register_ort_op
from vitdeploy.plugins.window_attention.ort import tensors
from vitdeploy.plugins.window_attention_relpos.reference import window_attention_relpos
from vitdeploy.plugins.window_attention_relpos.spec import SPEC


def compute(qkv: np.ndarray, rel_h: np.ndarray, rel_w: np.ndarray, pad_qkv: np.ndarray, **attrs) -> np.ndarray:
    """FP32 numpy in, FP32 numpy out (vitdeploy.onnxrt casts FP16 around the node)."""
    attrs = SPEC.read_attrs(attrs)
    with torch.no_grad():
        out = window_attention_relpos(*tensors(qkv, rel_h, rel_w, pad_qkv), **attrs)
    return out.numpy().astype(np.float32, copy=False)


register_ort_op(SPEC, compute)

__all__ = ["SPEC", "compute"]
