"""ONNX Runtime CPU face of `HaloAttention`: the PyTorch reference behind an onnxruntime-extensions op."""
from __future__ import annotations

import numpy as np
import torch

from vitdeploy.plugins.ort import register_ort_op
from vitdeploy.plugins.halo_attention.reference import halo_attention
from vitdeploy.plugins.halo_attention.spec import SPEC


def compute(q: np.ndarray, kv: np.ndarray, height_rel: np.ndarray, width_rel: np.ndarray, **attrs) -> np.ndarray:
    """FP32 numpy in, FP32 numpy out (vitdeploy.onnxrt casts FP16 around the node)."""
    attrs = SPEC.read_attrs(attrs)
    t = [torch.from_numpy(np.asarray(a, dtype=np.float32)) for a in (q, kv, height_rel, width_rel)]
    with torch.no_grad():
        out = halo_attention(*t, **attrs)
    return out.numpy().astype(np.float32, copy=False)


register_ort_op(SPEC, compute)

__all__ = ["SPEC", "compute"]
