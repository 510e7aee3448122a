"""vitdeploy's plugins, one folder each; this module knows where to find their ORT faces.

Importing this package imports no plugin: `vitdeploy.onnxrt` loads the ORT faces when the
first graph with plugin nodes needs a session, and TensorRT faces load only in the engine step.

How a plugin's ORT face registers (read this before adding one)
----------------------------------------------------------------
onnxruntime-extensions keeps every Python op in one C++ `std::vector<PyCustomOpFactory>`
(`PyOp_container()` in its pyop/pyfunc.cc); each session that loads the library gets raw
pointers into that vector, and ONNX Runtime's `CustomOpKernel` keeps a reference to its op
for the kernel's lifetime (it calls `KernelDestroy`/`KernelCompute` through it). Registering
one more op (`onnx_op`/`add_custom_op` -> `emplace_back`) can reallocate the vector, leaving
every open session with dangling op pointers: SIGSEGV when that session runs or is freed.
That is what one process opening a Swin graph and then a ConViT graph hit.

So every vitdeploy op is registered once, together, before any session loads the library:
`register_ort_faces()` imports every module in `ORT_FACES` (each calls
`plugins.base.register_ort_op` at import) and then seals the registry; a registration after
the seal raises instead of corrupting live sessions. To add a plugin's ORT face:

1. write `vitdeploy/plugins/<name>/ort.py` that calls `register_ort_op(SPEC, compute)` (or one
   call per spec, exposing `SPECS`) at import, and never `onnx_op` directly;
2. give its op type(s) a row in `vitdeploy/plugins/registry.py` (ORT_FACES below is derived from
   it). That is all: `vitdeploy.onnxrt.session` registers it with the others before the first
   session, whatever order graphs arrive in.
"""
from __future__ import annotations

import importlib
import threading

from vitdeploy.plugins.registry import faces

# op_type -> module whose import registers the ORT CPU op (and exposes SPEC or SPECS); from the registry.
ORT_FACES: dict[str, str] = faces("ort")

# op_type -> module with a `register()` that registers the plugin with tensorrt.plugin (TensorRT >= 10.9).
TRT_FACES: dict[str, str] = faces("trt")

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


def register_trt_faces(ops=None, *, strict: bool = True) -> dict[str, str]:
    """Register vitdeploy's TensorRT faces (every one, or those of `ops`) with `tensorrt.plugin`; op -> "ok" or why not.

    `strict` (an engine build: the graph needs every plugin it holds) raises at the first failure;
    otherwise (bench loading a plan, which may use none of them) the status says why each one failed,
    e.g. a TensorRT before 10.9 has no `tensorrt.plugin`.
    """
    from vitdeploy.errors import VitdeployError

    status: dict[str, str] = {}
    for op in (TRT_FACES if ops is None else ops):
        if op not in TRT_FACES:
            if strict:
                raise VitdeployError(f"no TensorRT implementation registered for plugin {op}",
                                     "rebuild the ONNX with --plugins off")
            status[op] = "no TensorRT face"
            continue
        try:
            importlib.import_module(TRT_FACES[op]).register()
        except Exception as e:
            if strict:
                raise
            status[op] = (f"not available ({e.name})" if isinstance(e, ModuleNotFoundError) else
                          f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}")
            continue
        status[op] = "ok"
    return status


def register_ort_faces() -> None:
    """Register every installed ORT face's ops with onnxruntime-extensions, then seal the registry.

    Idempotent and thread-safe; `vitdeploy.onnxrt.session` calls it before it gives the library
    to any session, so the op vector never grows under a live session.
    """
    from vitdeploy.plugins import base

    if base.ort_sealed():
        return
    with _REGISTER_LOCK:
        if base.ort_sealed():
            return
        for module in dict.fromkeys(ORT_FACES.values()):
            _import_face(module)
        base.seal_ort_ops()
