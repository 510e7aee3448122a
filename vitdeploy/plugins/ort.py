"""The ORT face of every plugin: each plugin's PyTorch reference registered as an onnxruntime-extensions
Python op, so graphs with plugin nodes run (and are verified) on the CPU. Why the ops are registered
together and then sealed: the docstring of `vitdeploy.plugins`.
"""
from __future__ import annotations

import importlib
import threading
from typing import Any, Callable

import numpy as np

from vitdeploy.plugins import ORT_FACES
from vitdeploy.plugins.spec import ListAttr, PluginSpec

_ORT_REGISTERED: dict[str, PluginSpec] = {}
# Python ops onnxruntime-extensions held when vitdeploy sealed its registry (None: not sealed).
# Why sealing matters, and how a new face registers: the docstring of `vitdeploy.plugins`.
_ORT_SEALED_AT: int | None = None


def _pyop_count() -> int:
    """How many Python ops onnxruntime-extensions has registered in this process (any library's)."""
    from onnxruntime_extensions import Opdef

    # Opdef.create (onnxruntime_extensions/_ocos.py) keeps one entry per add_custom_op call; a
    # version without that private table makes this 0, which only turns the foreign-op check off.
    return len(getattr(Opdef, "_odlist", ()))


def ort_sealed() -> bool:
    return _ORT_SEALED_AT is not None


def seal_ort_ops() -> None:
    """No more vitdeploy ops may be registered: a session is about to hold pointers into the op vector.

    Calling it again accepts ops others registered since (safe only while no plugin session is open)."""
    global _ORT_SEALED_AT
    _ORT_SEALED_AT = _pyop_count()


def ort_ops_added_since_seal() -> int:
    """Python ops registered (by anyone) after the seal; each may have invalidated open sessions."""
    return 0 if _ORT_SEALED_AT is None else _pyop_count() - _ORT_SEALED_AT


def register_ort_op(spec: PluginSpec, compute: Callable[..., Any]) -> None:
    """Register `compute(*numpy_inputs, **attrs) -> numpy | tuple` as the plugin's ORT CPU op.

    `compute` receives FP32 float inputs and the spec's attributes; it must return FP32.
    Only from an ORT face module its registry row declares (`vitdeploy/plugins/registry.py`), so that
    `register_ort_faces()` registers it before the first session; once sealed this raises.
    """
    if spec.name in _ORT_REGISTERED:
        return
    if _ORT_SEALED_AT is not None:
        raise RuntimeError(
            f"ORT op {spec.name} registered after an ONNX Runtime session loaded onnxruntime-extensions; "
            "registering now could reallocate the op table under that session and crash the process. "
            "Give its op type a row in vitdeploy/plugins/registry.py so it is registered before the first session."
        )
    from onnxruntime_extensions import PyCustomOpDef, onnx_op

    dt = {"float": PyCustomOpDef.dt_float, "int32": PyCustomOpDef.dt_int32, "int64": PyCustomOpDef.dt_int64}
    at = {int: PyCustomOpDef.dt_int64, float: PyCustomOpDef.dt_float, str: PyCustomOpDef.dt_string}
    attrs = {k: PyCustomOpDef.dt_string if isinstance(t, ListAttr) else at[t] for k, t in spec.attrs.items()}
    attrs.update(plugin_namespace=PyCustomOpDef.dt_string, plugin_version=PyCustomOpDef.dt_string)

    def body(*arrays, **kw):
        kw.pop("plugin_namespace", None)
        kw.pop("plugin_version", None)
        res = compute(*arrays, **kw)
        if isinstance(res, tuple):
            return tuple(np.ascontiguousarray(r) for r in res)
        return np.ascontiguousarray(res)

    onnx_op(
        op_type=spec.name,
        inputs=[dt[t.kind] for t in spec.inputs],
        outputs=[dt[t.kind] for t in spec.outputs],
        attrs=attrs,
    )(body)
    _ORT_REGISTERED[spec.name] = spec


def ort_registered() -> dict[str, PluginSpec]:
    return dict(_ORT_REGISTERED)


_REGISTER_LOCK = threading.Lock()


def _import_face(module: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("vitdeploy.plugins"):
            return None  # a plugin that is not part of this install
        raise


def load_ort_face(op_type: str):
    """The ORT face module for `op_type` (SPEC/SPECS, compute), or None if no plugin serves it.

    Importing a face before `register_ort_faces()` registers its op early, which is harmless;
    after the seal every face is already imported, so this never registers anything late.
    """
    mod = ORT_FACES.get(op_type)
    return None if mod is None else _import_face(mod)


def register_ort_faces() -> None:
    """Register every installed ORT face's ops with onnxruntime-extensions, then seal the registry.

    Idempotent and thread-safe; `vitdeploy.onnxrt.session` calls it before it gives the library
    to any session, so the op vector never grows under a live session.
    """
    if ort_sealed():
        return
    with _REGISTER_LOCK:
        if ort_sealed():
            return
        for module in dict.fromkeys(ORT_FACES.values()):
            _import_face(module)
        seal_ort_ops()
