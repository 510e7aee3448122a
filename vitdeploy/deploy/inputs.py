"""Deterministic inputs for verification runs (the same for PyTorch and every ONNX graph)."""
from __future__ import annotations

import numpy as np


def random_images(batch: int, size: tuple[int, int], seed: int = 0, channels: int = 3) -> np.ndarray:
    """Normalised-image-like input: N(0,1), FP32, NCHW."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, channels, size[0], size[1])).astype(np.float32)
