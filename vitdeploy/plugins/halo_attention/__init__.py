"""HaloNet's blocked local self-attention (timm `HaloAttn`) as one plugin (spec, reference, ORT, Triton, TensorRT)."""
from vitdeploy.plugins.halo_attention.spec import SPEC

__all__ = ["SPEC"]
