"""ONNX Runtime CPU face of `GatedPositionalAttention`: the PyTorch reference behind an onnxruntime-extensions op."""
from __future__ import annotations

import numpy as np
import torch

from vitdeploy.plugins.ort import register_ort_op
from vitdeploy.plugins.gated_positional_attention.reference import gated_positional_attention
from vitdeploy.plugins.gated_positional_attention.spec import SPEC


def compute(qk: np.ndarray, v: np.ndarray, pos: np.ndarray, gate: np.ndarray, **attrs) -> np.ndarray:
    """FP32 numpy in, FP32 numpy out (vitdeploy.onnxrt casts FP16 around the node)."""
    attrs = SPEC.read_attrs(attrs)
    t = [torch.from_numpy(np.asarray(a, dtype=np.float32)) for a in (qk, v, pos, gate)]
    with torch.no_grad():
        out = gated_positional_attention(*t, **attrs)
    return out.numpy().astype(np.float32, copy=False)


register_ort_op(SPEC, compute)

__all__ = ["SPEC", "compute"]
