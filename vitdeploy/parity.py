"""Numerical comparison of two computations of the same model, on the same seeded inputs: the proof behind every artifact.

`random_images` is the one source of verification inputs (the same for PyTorch and every ONNX graph).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class OutputParity:
    name: str
    max_abs: float
    mean_abs: float
    cosine: float
    ref_max: float
    passed: bool
    # The effective bound (atol + rtol * max|ref|) and the element that comes closest to it.
    bound: float = 0.0
    worst_index: tuple = ()
    worst_ref: float = 0.0
    worst_got: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["worst_index"] = list(self.worst_index)
        return d


@dataclass
class Tolerance:
    """Pass when max|a-b| <= atol + rtol*max|ref| and cosine >= min_cosine."""

    atol: float = 1e-4
    rtol: float = 1e-3
    min_cosine: float = 0.9999

    def to_dict(self) -> dict:
        return asdict(self)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def compare(name: str, ref: np.ndarray, got: np.ndarray, tol: Tolerance) -> OutputParity:
    ref = np.asarray(ref, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    ref_max = float(np.abs(ref).max(initial=0.0))
    bound = tol.atol + tol.rtol * ref_max
    if ref.shape != got.shape:
        return OutputParity(name, float("inf"), float("inf"), 0.0, ref_max, False, bound)
    diff = np.abs(ref - got)
    finite = bool(np.isfinite(got).all())
    max_abs = float(diff.max(initial=0.0)) if finite else float("inf")
    cos = cosine(ref, got) if finite else 0.0
    passed = finite and max_abs <= bound and cos >= tol.min_cosine
    worst: tuple = ()
    if diff.size:
        flat = int(np.argmax(np.where(np.isfinite(diff), diff, np.inf)))
        worst = tuple(int(i) for i in np.unravel_index(flat, diff.shape))
    return OutputParity(name, max_abs, float(diff.mean()) if finite else float("inf"), cos, ref_max, passed, bound,
                        worst, float(ref[worst]) if worst else 0.0, float(got[worst]) if worst else 0.0)


def compare_all(names, refs, gots, tol: Tolerance) -> list[OutputParity]:
    return [compare(n, r, g, tol) for n, r, g in zip(names, refs, gots)]


def random_images(batch: int, size: tuple[int, int], seed: int = 0, channels: int = 3) -> np.ndarray:
    """Normalised-image-like input: N(0,1), FP32, NCHW."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, channels, size[0], size[1])).astype(np.float32)
