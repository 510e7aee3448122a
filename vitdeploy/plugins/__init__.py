"""vitdeploy's plugins, one folder each; this module knows where to find their ORT faces.

Importing this package imports no plugin: `vitdeploy.onnxrt` loads a plugin's
ORT face only when a graph uses it, and TensorRT faces load only in the engine step.
"""
from __future__ import annotations

import importlib

# op_type -> module whose import registers the ORT CPU op (and exposes SPEC).
ORT_FACES: dict[str, str] = {
    "WindowAttention": "vitdeploy.plugins.window_attention.ort",
    "GatedPositionalAttention": "vitdeploy.plugins.gated_positional_attention.ort",
    "MultiscaleDeformableAttnPlugin_TRT": "vitdeploy.plugins.msda.ort",
    "MultiscaleDeformableAttention": "vitdeploy.plugins.msda.ort",
    "HaloAttention": "vitdeploy.plugins.halo_attention.ort",
}

# Modules with a `register()` that registers the plugin with tensorrt.plugin (TensorRT >= 10.9).
TRT_FACES: dict[str, str] = {
    "WindowAttention": "vitdeploy.plugins.window_attention.trt",
    "GatedPositionalAttention": "vitdeploy.plugins.gated_positional_attention.trt",
    "MultiscaleDeformableAttention": "vitdeploy.plugins.msda.trt",
    "HaloAttention": "vitdeploy.plugins.halo_attention.trt",
}


def load_ort_face(op_type: str):
    """Import (and so register) the ORT op for `op_type`; returns its module or None."""
    mod = ORT_FACES.get(op_type)
    if mod is None:
        return None
    try:
        return importlib.import_module(mod)
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("vitdeploy.plugins"):
            return None
        raise
