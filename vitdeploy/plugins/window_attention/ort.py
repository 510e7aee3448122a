"""ONNX Runtime CPU face of `WindowAttention`: the PyTorch reference behind an onnxruntime-extensions op."""
from __future__ import annotations

import numpy as np
import torch

from vitdeploy.plugins.ort import register_ort_op
from vitdeploy.plugins.window_attention.reference import window_attention
from vitdeploy.plugins.window_attention.spec import SPEC


def compute(qkv: np.ndarray, bias: np.ndarray, pad_qkv: np.ndarray, **attrs) -> np.ndarray:
    """FP32 numpy in, FP32 numpy out (vitdeploy.onnxrt casts FP16 around the node)."""
    attrs = SPEC.read_attrs(attrs)
    with torch.no_grad():
        out = window_attention(
            torch.from_numpy(np.asarray(qkv, dtype=np.float32)),
            torch.from_numpy(np.asarray(bias, dtype=np.float32)),
            torch.from_numpy(np.asarray(pad_qkv, dtype=np.float32)),
            **attrs,
        )
    return out.numpy().astype(np.float32, copy=False)


register_ort_op(SPEC, compute)

__all__ = ["SPEC", "compute"]
