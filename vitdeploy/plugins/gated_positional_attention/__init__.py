"""ConViT's gated positional self-attention (GPSA) core as one plugin (spec, reference, ORT, Triton, TensorRT)."""
from vitdeploy.plugins.gated_positional_attention.spec import SPEC

__all__ = ["SPEC"]
