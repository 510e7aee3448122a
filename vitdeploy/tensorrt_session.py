"""The one module that touches TensorRT's process-wide state: the logger, the stock plugin library, plan loading.

`trt.init_libnvinfer_plugins(logger, ns)` keeps a raw pointer to the logger it is given
(inferPlugin.cpp stores it in a global), so a logger that is garbage-collected afterwards
dangles; every TensorRT object vitdeploy creates therefore gets the same process-wide
logger, `logger()`. That is Polygraphy's (`polygraphy.backend.trt.util.get_trt_logger`),
because Polygraphy's own loaders (the engine build's) log through it anyway: one logger per
process, whoever asks first. TensorRT's warnings are printed once each, its info messages
only at Polygraphy's verbose level.

Registering vitdeploy's own plugin faces is `vitdeploy.plugins.register_trt_faces`. TensorRT
is imported inside these functions only: importing this module imports nothing heavy.
"""
from __future__ import annotations

from pathlib import Path

from vitdeploy.errors import VitdeployError

_LOGGER = None


def import_tensorrt(problem: str, fix: str):
    """`tensorrt`, or a VitdeployError(problem, fix) where it is absent or a stub that raises at import."""
    try:
        import tensorrt as trt
    except Exception:
        raise VitdeployError(problem, fix) from None
    return trt


def logger():
    """The process-wide TensorRT logger (see the module docstring for why there is exactly one)."""
    global _LOGGER
    if _LOGGER is None:
        from polygraphy.backend.trt import util as trt_util

        _LOGGER = trt_util.get_trt_logger()
    return _LOGGER


def init_stock_plugins(trt) -> None:
    """Register TensorRT's own plugins (libnvinfer_plugin, e.g. MultiscaleDeformableAttnPlugin_TRT), with `logger()`."""
    trt.init_libnvinfer_plugins(logger(), "")


def load_plan(trt, plan: Path | bytes, *, version_compatible: bool = False):
    """(runtime, engine) for a serialized plan; engine is None when TensorRT cannot deserialize it.

    The stock plugins are registered first (a plan may use them); the runtime is returned because
    it must outlive the engine. `version_compatible` plans carry host code that the runtime must
    be allowed to run (TensorRT's `engine_host_code_allowed`).
    """
    init_stock_plugins(trt)
    runtime = trt.Runtime(logger())
    if version_compatible:
        runtime.engine_host_code_allowed = True
    blob = plan if isinstance(plan, (bytes, bytearray)) else Path(plan).read_bytes()
    return runtime, runtime.deserialize_cuda_engine(blob)
