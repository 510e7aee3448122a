"""ONNX Runtime CPU face for both multi-scale deformable attention node types (FP32, INT32 shapes)."""
from __future__ import annotations

import numpy as np

from vitdeploy.plugins.ort import register_ort_op
from vitdeploy.plugins.msda.spec import STOCK_SPEC, VITDEPLOY_SPEC, check_num_points


def node_semantics(locations_shape, attrs: dict) -> tuple[tuple[int, ...], str]:
    """(points per level, method) of a node: the vitdeploy node's attributes, else (the stock node,
    or a vitdeploy node written before the attributes existed) P for each level of 6-D locations."""
    raw = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in attrs.items()}
    raw = {k: v for k, v in raw.items() if not (v is None or (isinstance(v, str) and not v))}
    method = str(raw.get("method", VITDEPLOY_SPEC.defaults["method"]))
    num_points = VITDEPLOY_SPEC.attrs["num_points"].coerce("num_points", raw["num_points"]) if "num_points" in raw else None
    return check_num_points(num_points, locations_shape), method


def compute(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, **attrs):
    """The reference's grid_sample formulation (same semantics as `reference.msda`, several times
    faster on the CPU, which matters when a pass verifies 12 full-resolution cores)."""
    import torch

    from vitdeploy.plugins.msda.reference import msda_grid_sample

    loc = np.asarray(sampling_locations, dtype=np.float32)
    num_points, method = node_semantics(loc.shape, attrs)
    out = msda_grid_sample(
        torch.from_numpy(np.asarray(value, dtype=np.float32)),
        torch.from_numpy(np.asarray(spatial_shapes)),
        torch.from_numpy(np.asarray(level_start_index)),
        torch.from_numpy(loc),
        torch.from_numpy(np.asarray(attention_weights, dtype=np.float32)),
        num_points, method,
    )
    return out.numpy()


SPECS = (STOCK_SPEC, VITDEPLOY_SPEC)
for _spec in SPECS:
    register_ort_op(_spec, compute)
