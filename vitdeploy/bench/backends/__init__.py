"""Benchmark backends: each turns (artifact or model, batch, mode) into a timed step.

`ort` and `pytorch` measure on the CPU or a CUDA GPU; `trt` needs TensorRT and is
imported only when asked for.
"""
from __future__ import annotations

import importlib

from vitdeploy.bench.backends.base import Backend, Prepared, Sample

__all__ = ["BACKENDS", "Backend", "Prepared", "Sample", "backend_class"]

# --backend NAME -> its class (the order is the one `--help` and error messages list them in)
BACKENDS: dict[str, str] = {
    "trt": "vitdeploy.bench.backends.trt:TrtBackend",
    "ort": "vitdeploy.bench.backends.ort:OrtBackend",
    "torch": "vitdeploy.bench.backends.pytorch:TorchBackend",
    "torch-compile": "vitdeploy.bench.backends.pytorch:TorchCompileBackend",
}


def backend_class(name: str):
    mod, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(mod), cls)
