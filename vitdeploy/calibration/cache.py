"""The calibration cache: per-tensor ranges as JSON, bound to the exact model they were measured on.

Calibration is the slow part of INT8; the cache lets `build --int8` and
`calibrate` reuse it. Tensor names are only meaningful for the graph they came
from, so the cache records the model's sha256 and is refused for any other
model rather than silently applying ranges to tensors that happen to share names.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from vitdeploy.errors import VitdeployError

CACHE_FORMAT = "vitdeploy-calibration-cache"
CACHE_VERSION = 1
METHODS = ("entropy", "percentile", "minmax")


def ort_method(method: str):
    from onnxruntime.quantization import CalibrationMethod

    try:
        return {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile,
                "minmax": CalibrationMethod.MinMax}[method]
    except KeyError:
        raise VitdeployError(f"unknown calibration method '{method}'", f"use one of {', '.join(METHODS)}") from None


def make_cache(tensors_range, model_sha256: str, method: str, num_images: int, settings: dict | None = None) -> dict:
    """The JSON-ready cache from ORT's TensorsData (only the ranges are kept)."""
    ranges = {}
    for name, td in tensors_range.items():
        lo, hi = td.range_value
        ranges[name] = [float(np.asarray(lo).reshape(-1)[0]), float(np.asarray(hi).reshape(-1)[0])]
    return {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "model_sha256": model_sha256,
        "method": method,
        "num_images": int(num_images),
        "settings": settings or {},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "ranges": dict(sorted(ranges.items())),
    }


def check_cache(cache: dict, model_sha256: str, method: str) -> None:
    """Raise unless `cache` is a vitdeploy cache measured on this model with this method."""
    if not isinstance(cache, dict) or cache.get("format") != CACHE_FORMAT or not isinstance(cache.get("ranges"), dict):
        raise VitdeployError("the calibration cache is not a vitdeploy calibration cache", "delete it and calibrate again")
    if cache.get("model_sha256") != model_sha256:
        raise VitdeployError(
            f"calibration cache is for model sha256 {str(cache.get('model_sha256'))[:12]}…, "
            f"this model is sha256 {model_sha256[:12]}…",
            "a cache only fits the exact ONNX it was measured on: calibrate this model again",
        )
    if cache.get("method") != method:
        raise VitdeployError(
            f"calibration cache was measured with --calib-method {cache.get('method')}, this run asks for {method}",
            f"pass --calib-method {cache.get('method')} or calibrate again",
        )


def to_tensors_data(cache: dict):
    """ORT's TensorsData from a cache, for `quantize_static`."""
    from onnxruntime.quantization.calibrate import TensorData, TensorsData

    data = {k: TensorData(lowest=np.float32(lo), highest=np.float32(hi)) for k, (lo, hi) in cache["ranges"].items()}
    return TensorsData(ort_method(cache["method"]), data)


def save_cache(path: str | os.PathLike, cache: dict) -> None:
    from vitdeploy.artifact import atomic_write_json

    atomic_write_json(path, cache)


def load_cache(path: str | os.PathLike) -> dict:
    p = Path(path)
    try:
        cache = json.loads(p.read_text())
    except FileNotFoundError:
        raise VitdeployError(f"calibration cache {p} does not exist", "check the path or calibrate first") from None
    except json.JSONDecodeError as e:
        raise VitdeployError(f"calibration cache {p.name} is not valid JSON ({e.msg})", "delete it and calibrate again") from None
    except UnicodeDecodeError:
        raise VitdeployError(f"calibration cache {p.name} is not a JSON text file", "pass the calibration_cache.json 'vitdeploy calibrate' wrote") from None
    if not isinstance(cache, dict) or cache.get("format") != CACHE_FORMAT:
        raise VitdeployError(f"{p.name} is not a vitdeploy calibration cache", "pass the calibration_cache.json 'vitdeploy calibrate' wrote, or calibrate again without --calib-cache")
    return cache
