"""vitdeploy's plugins, one folder each (spec, reference, ort, kernel, trt), declared in `registry.py`.

What the faces share is split by face: `spec.py` (PluginSpec: the contract and the ONNX node),
`ort.py` (registering the ORT faces), `ptx.py` (compiling and checking PTX), `trt.py` (the
TensorRT faces' shared helpers and their registration).

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
`plugins.ort.register_ort_faces()` imports every module in `ORT_FACES` (each calls
`plugins.ort.register_ort_op` at import) and then seals the registry; a registration after
the seal raises instead of corrupting live sessions. To add a plugin's ORT face:

1. write `vitdeploy/plugins/<name>/ort.py` that calls `register_ort_op(SPEC, compute)` (or one
   call per spec, exposing `SPECS`) at import, and never `onnx_op` directly;
2. give its op type(s) a row in `vitdeploy/plugins/registry.py` (ORT_FACES below is derived from
   it). That is all: `vitdeploy.onnxrt.session` registers it with the others before the first
   session, whatever order graphs arrive in.
"""
from __future__ import annotations

from vitdeploy.plugins.registry import faces

# op_type -> module whose import registers the ORT CPU op (and exposes SPEC or SPECS); from the registry.
ORT_FACES: dict[str, str] = faces("ort")

# op_type -> module with a `register()` that registers the plugin with tensorrt.plugin (TensorRT >= 10.9).
TRT_FACES: dict[str, str] = faces("trt")
