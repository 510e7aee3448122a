"""`vitdeploy.Engine`: load a vitdeploy TensorRT engine and run it from Python.

    with vitdeploy.Engine("build/swin_t/model.plan") as engine:
        logits = engine(images)["logits"]     # numpy in -> numpy out; torch in -> torch out

Before TensorRT sees the plan, its size and sha256 are checked against the
manifest next to it, and the manifest's TensorRT version and GPU against this
machine (a mismatch is refused, naming what differs). Device buffers are
allocated once for the profile's largest shapes and reused; one CUDA stream.
CUDA goes through cuda-python (`pip install vitdeploy[cuda]`), or pycuda if
that is what is installed.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vitdeploy.artifact import MANIFEST_NAME, load_manifest, manifest_beside, manifest_file
from vitdeploy.errors import VitdeployError
from vitdeploy.tensorrt_session import import_tensorrt, load_plan


class _CudaPython:
    """The few CUDA runtime calls the engine needs, through cuda-python."""

    def __init__(self):
        try:
            from cuda.bindings import runtime as rt
        except ImportError:
            from cuda import cudart as rt
        self.rt = rt
        self.stream = self._ok(rt.cudaStreamCreate())

    def _ok(self, result):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise VitdeployError(f"CUDA error {err}", "run 'vitdeploy doctor' to check the driver and GPU")
        return rest[0] if len(rest) == 1 else (rest or None)

    def malloc(self, nbytes: int) -> int:
        return int(self._ok(self.rt.cudaMalloc(max(nbytes, 1))))

    def free(self, ptr: int) -> None:
        self.rt.cudaFree(ptr)

    def h2d(self, dst: int, src: np.ndarray) -> None:
        self._ok(self.rt.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes,
                                         self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))

    def d2d(self, dst: int, src: int, nbytes: int) -> None:
        self._ok(self.rt.cudaMemcpyAsync(dst, src, nbytes, self.rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, self.stream))

    def d2h(self, dst: np.ndarray, src: int) -> None:
        self._ok(self.rt.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes,
                                         self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))

    def sync(self) -> None:
        self._ok(self.rt.cudaStreamSynchronize(self.stream))

    @property
    def stream_handle(self) -> int:
        return int(self.stream)

    def close(self) -> None:
        self.rt.cudaStreamDestroy(self.stream)


class _PyCuda:
    """The same calls through pycuda (optional extra).

    `pycuda.autoprimaryctx` retains the device's *primary* context, the one the CUDA runtime (and so
    TensorRT) uses; `pycuda.autoinit` would create a second context, and buffers and the stream made
    in it are invalid handles for the engine's kernels.
    """

    def __init__(self):
        import pycuda.autoprimaryctx  # noqa: F401  (makes the primary context current)
        import pycuda.driver as drv

        self.drv = drv
        self.stream = drv.Stream()
        self._allocs: dict[int, object] = {}

    def malloc(self, nbytes: int) -> int:
        a = self.drv.mem_alloc(max(nbytes, 1))
        self._allocs[int(a)] = a
        return int(a)

    def free(self, ptr: int) -> None:
        self._allocs.pop(ptr, None)

    def h2d(self, dst: int, src: np.ndarray) -> None:
        self.drv.memcpy_htod_async(dst, src, self.stream)

    def d2d(self, dst: int, src: int, nbytes: int) -> None:
        self.drv.memcpy_dtod_async(dst, src, nbytes, self.stream)

    def d2h(self, dst: np.ndarray, src: int) -> None:
        self.drv.memcpy_dtoh_async(dst, src, self.stream)

    def sync(self) -> None:
        self.stream.synchronize()

    @property
    def stream_handle(self) -> int:
        return self.stream.handle

    def close(self) -> None:
        self._allocs.clear()


def _cuda():
    errors = []
    for cls in (_CudaPython, _PyCuda):
        try:
            return cls()
        except ImportError as e:
            errors.append(str(e))
    raise VitdeployError("no CUDA Python bindings installed", "pip install 'vitdeploy[cuda]' (cuda-python) or pycuda")


def find_plan(path: str | os.PathLike) -> tuple[Path, dict | None]:
    """A plan path or build directory -> (plan file, manifest or None)."""
    p = Path(path)
    if p.is_dir():
        manifest = load_manifest(p)
        plan = manifest_file(manifest, p, "engine")
        if plan is None:
            why = (manifest.get("engine") or {}).get("skipped") or "no engine in this build"
            raise VitdeployError(f"{p} has no engine: {why}", "build one with 'vitdeploy build --onnx ...' on the target")
        return plan, manifest
    if p.suffix == ".onnx":
        raise VitdeployError(f"{p.name} is an ONNX graph, not a TensorRT engine",
                             "run it with vitdeploy.onnxrt.session(path) (ONNX Runtime, plugin nodes included), "
                             "or build an engine from it with 'vitdeploy build --onnx'")
    manifest = manifest_beside(p, strict=True)
    if not p.exists():
        engine = (manifest or {}).get("engine") or {}
        if engine.get("skipped"):
            final = ((manifest or {}).get("files", {}).get("onnx") or {}).get("path", "model.onnx")
            raise VitdeployError(f"{p} does not exist: the build skipped the engine step ({engine['skipped']})",
                                 f"build it where TensorRT is installed: vitdeploy build --onnx {p.parent / final} "
                                 f"-o {p.parent}; or run {final} with vitdeploy.onnxrt.session")
        raise VitdeployError(f"engine {p} does not exist", "check the path, or pass the build directory")
    return p, manifest


def check_plan(plan: Path, manifest: dict | None, env: dict | None = None) -> list[str]:
    """All checks that happen before TensorRT reads the plan; returns warnings."""
    from vitdeploy.deploy.manifest_check import ensure_compatible, verify_plan_file

    if manifest is None:
        raise VitdeployError(f"no {MANIFEST_NAME} next to {plan}", "keep the manifest with the engine, or pass check=False")
    engine = dict(manifest.get("engine") or {})
    if engine.get("plan") is None and manifest.get("files", {}).get("engine"):
        engine["plan"] = manifest["files"]["engine"]
    if engine.get("plan") is None:
        why = engine.get("skipped") or "it records no engine"
        raise VitdeployError(f"the manifest next to {plan.name} does not describe it (engine step: {why})",
                             "rebuild the engine with 'vitdeploy build', which writes both")
    verify_plan_file(plan, engine)
    return ensure_compatible(engine, env)


class Engine:
    """A deserialized TensorRT engine with reusable device buffers on one CUDA stream."""

    def __init__(self, path: str | os.PathLike, *, check: bool = True):
        self.plan_path, self.manifest = find_plan(path)
        self.warnings = check_plan(self.plan_path, self.manifest) if check else []
        trt = import_tensorrt("TensorRT is not installed here", "install TensorRT (pip install tensorrt) on the GPU machine")
        self.trt = trt
        # CUDA first: with pycuda that makes the primary context current before TensorRT allocates in it
        self.cuda = _cuda()
        self.runtime, self.engine = load_plan(trt, self.plan_path, version_compatible=bool(
            (self.manifest or {}).get("engine", {}).get("version_compatible")))
        if self.engine is None:
            raise VitdeployError(f"TensorRT could not deserialize {self.plan_path.name}",
                                 "the file is damaged or from another TensorRT/GPU: rebuild it here")
        self.context = self.engine.create_execution_context()
        self.inputs, self.outputs = [], []
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device ptr, capacity bytes)
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs).append(name)
        for name in self.inputs + self.outputs:
            shape = self._max_shape(name)
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            nbytes = int(np.prod(shape)) * dtype.itemsize
            self._buffers[name] = (self.cuda.malloc(nbytes), nbytes)
            self.context.set_tensor_address(name, self._buffers[name][0])

    def _max_shape(self, name: str) -> tuple[int, ...]:
        shape = tuple(self.engine.get_tensor_shape(name))
        if all(d >= 0 for d in shape):
            return shape
        if self.engine.get_tensor_mode(name) == self.trt.TensorIOMode.INPUT:
            return tuple(self.engine.get_tensor_profile_shape(name, 0)[2])
        # Outputs: their shape at the largest input shapes.
        for n in self.inputs:
            self.context.set_input_shape(n, tuple(self.engine.get_tensor_profile_shape(n, 0)[2]))
        return tuple(self.context.get_tensor_shape(name))

    def __call__(self, *args, **named):
        """Run on numpy arrays or torch tensors (positional in input order, or by name)."""
        feeds = dict(zip(self.inputs, args))
        feeds.update(named)
        missing = [n for n in self.inputs if n not in feeds]
        if missing:
            raise VitdeployError(f"missing engine input(s): {', '.join(missing)}", f"inputs are {', '.join(self.inputs)}")
        torch_in = any(type(v).__module__.startswith("torch") for v in feeds.values())
        for name in self.inputs:
            value = feeds[name]
            want = np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name)))
            if type(value).__module__.startswith("torch") and value.is_cuda:
                import torch

                value = value.contiguous().to(getattr(torch, want.name))
                torch.cuda.current_stream(value.device).synchronize()  # the producer's kernels first
                nbytes = value.numel() * value.element_size()
                self._check_fits(name, nbytes, tuple(value.shape))
                self.context.set_input_shape(name, tuple(value.shape))
                self.cuda.d2d(self._buffers[name][0], value.data_ptr(), nbytes)
                continue
            arr = np.ascontiguousarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value, dtype=want)
            self._check_fits(name, arr.nbytes, arr.shape)
            self.context.set_input_shape(name, arr.shape)
            self.cuda.h2d(self._buffers[name][0], arr)
        host = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            host[name] = np.empty(shape, dtype=np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name))))
        if not self.context.execute_async_v3(self.cuda.stream_handle):
            raise VitdeployError("TensorRT failed to run the engine", "see the TensorRT log above")
        for name, arr in host.items():
            self.cuda.d2h(arr, self._buffers[name][0])
        self.cuda.sync()
        if torch_in:
            import torch

            return {k: torch.from_numpy(v) for k, v in host.items()}
        return host

    def _check_fits(self, name: str, nbytes: int, shape) -> None:
        if nbytes > self._buffers[name][1]:
            raise VitdeployError(f"input '{name}' of shape {tuple(shape)} exceeds the engine's largest profile shape",
                                 "rebuild with a larger --dynamic-batch MAX")

    def close(self) -> None:
        for ptr, _ in getattr(self, "_buffers", {}).values():
            self.cuda.free(ptr)
        self._buffers = {}
        if getattr(self, "cuda", None) is not None:
            self.cuda.close()
            self.cuda = None
        self.context = None
        self.engine = None

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
