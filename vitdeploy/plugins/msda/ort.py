"""ONNX Runtime CPU face for both multi-scale deformable attention node types (FP32, INT32 shapes)."""
from __future__ import annotations

import numpy as np

from vitdeploy.plugins.ort import register_ort_op
from vitdeploy.plugins.msda.spec import STOCK_SPEC, VITDEPLOY_SPEC


def compute(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, **_attrs):
    """The reference's grid_sample formulation (same semantics as `reference.msda`, several times
    faster on the CPU, which matters when a pass verifies 12 full-resolution cores)."""
    import torch

    from vitdeploy.plugins.msda.reference import msda_grid_sample

    out = msda_grid_sample(
        torch.from_numpy(np.asarray(value, dtype=np.float32)),
        torch.from_numpy(np.asarray(spatial_shapes)),
        torch.from_numpy(np.asarray(level_start_index)),
        torch.from_numpy(np.asarray(sampling_locations, dtype=np.float32)),
        torch.from_numpy(np.asarray(attention_weights, dtype=np.float32)),
    )
    return out.numpy()


SPECS = (STOCK_SPEC, VITDEPLOY_SPEC)
for _spec in SPECS:
    register_ort_op(_spec, compute)
