"""ONNX Runtime CPU face of `WindowAttention`: the PyTorch reference behind an onnxruntime-extensions op."""
from __future__ import annotations

import numpy as np
import torch

from vitdeploy.plugins.ort import register_ort_op
from vitdeploy.plugins.window_attention.reference import window_attention
from vitdeploy.plugins.window_attention.spec import SPEC


def tensors(*arrays):
    return [torch.from_numpy(np.asarray(a, dtype=np.float32)) for a in arrays]


def compute(qkv: np.ndarray, bias: np.ndarray, pad_qkv: np.ndarray, **attrs) -> np.ndarray:
    """FP32 numpy in, FP32 numpy out (vitdeploy.onnxrt casts FP16 around the node)."""
    attrs = SPEC.read_attrs(attrs)
    with torch.no_grad():
        out = window_attention(*tensors(qkv, bias, pad_qkv), **attrs)
    return out.numpy().astype(np.float32, copy=False)


register_ort_op(SPEC, compute)

__all__ = ["SPEC", "compute"]
