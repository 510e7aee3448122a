"""ONNX Runtime CPU face for both multi-scale deformable attention node types (FP32, INT32 shapes)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vitdeploy.plugins.base import PluginSpec, register_ort_op
from vitdeploy.plugins.msda.spec import STOCK_SPEC, VITDEPLOY_SPEC


def compute(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, **_attrs):
    import torch

    from vitdeploy.plugins.msda.reference import msda

    out = msda(
        torch.from_numpy(np.asarray(value, dtype=np.float32)),
        torch.from_numpy(np.asarray(spatial_shapes)),
        torch.from_numpy(np.asarray(level_start_index)),
        torch.from_numpy(np.asarray(sampling_locations, dtype=np.float32)),
        torch.from_numpy(np.asarray(attention_weights, dtype=np.float32)),
    )
    return out.numpy()


@dataclass(frozen=True)
class _EitherSpec:
    """What `vitdeploy.onnxrt` looks up as `SPEC`: matches both node types, which share IO kinds."""

    specs: tuple[PluginSpec, ...]

    def matches(self, op_type: str, domain: str | None = None) -> bool:
        return any(s.matches(op_type, domain) for s in self.specs)

    @property
    def inputs(self):
        return self.specs[0].inputs

    @property
    def outputs(self):
        return self.specs[0].outputs


SPECS = (STOCK_SPEC, VITDEPLOY_SPEC)
SPEC = _EitherSpec(SPECS)
for _spec in SPECS:
    register_ort_op(_spec, compute)
