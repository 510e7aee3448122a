"""Swin's shifted-window attention as one plugin (spec, PyTorch reference, ORT, Triton, TensorRT faces)."""
from vitdeploy.plugins.window_attention.spec import SPEC

__all__ = ["SPEC"]
