"""TensorRT backend: an engine plan timed the way trtexec times it.

Written against the TensorRT Python API (10.x: named I/O tensors, `execute_async_v3`)
and cuda-python's runtime bindings for buffers, streams, events and graphs. Both
are imported here only, when the backend is built. `compute` times the enqueue on
device-resident buffers; `end-to-end` adds pinned host->device and device->host
copies inside the same events. The enqueue is captured into a CUDA graph when
capture succeeds and replayed; the end event is spin-waited.
"""
from __future__ import annotations

import ctypes
import time
from pathlib import Path

import numpy as np

from vitdeploy.bench.backends.base import Backend, Prepared, Sample
from vitdeploy.errors import VitdeployError
from vitdeploy.plugins.trt import register_trt_faces
from vitdeploy.tensorrt_session import import_tensorrt, init_stock_plugins, load_plan


def _cudart():
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        raise VitdeployError("the trt backend needs cuda-python for buffers and streams",
                             "pip install 'vitdeploy[cuda]'") from None
    return cudart


def check(result):
    """cuda-python returns (err, *values); raise on error, return the values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    cudart = _cudart()
    if err != cudart.cudaError_t.cudaSuccess:
        name = cudart.cudaGetErrorName(err)[1]
        raise RuntimeError(f"CUDA error {name.decode() if isinstance(name, bytes) else name}")
    return values[0] if len(values) == 1 else (values or None)


class TrtBackend(Backend):
    name = "trt"
    clock = "cuda_events"
    device = "cuda"

    def __init__(self, engine_path: Path, *, model: str, precision: str, cuda_graph: bool = True):
        trt = import_tensorrt("TensorRT is not installed here, so the trt backend cannot run",
                              "install TensorRT's Python package, or use --backend ort / torch")
        self.trt = trt
        self.cudart = _cudart()
        self.model, self.precision = model, precision
        self.artifact = str(engine_path)
        self.use_graph = cuda_graph
        # The manifest beside a plan says which TensorRT/GPU built it: refuse a mismatch in one line
        # (the same checks `vitdeploy.Engine` makes) instead of a deserialization failure.
        from vitdeploy.deploy.runtime import check_plan, find_plan

        plan, manifest = find_plan(engine_path)
        self.manifest = manifest or {}
        self.manifest_warnings = check_plan(plan, manifest) if manifest is not None else []
        init_stock_plugins(trt)
        self.plugins = register_trt_faces(strict=False)  # engines that use them deserialize; op -> "ok" or why not
        self.runtime, self.engine = load_plan(trt, Path(engine_path), version_compatible=bool(
            ((manifest or {}).get("engine") or {}).get("version_compatible")))
        if self.engine is None:
            raise VitdeployError(f"TensorRT could not load {Path(engine_path).name}",
                                 "engines only load with the TensorRT version and GPU they were built for; rebuild it here")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        if len(self.inputs) != 1:
            raise VitdeployError(f"engine has {len(self.inputs)} inputs; bench feeds one image tensor", "benchmark a single-input engine")
        self.input = self.inputs[0]
        self.input_shape = tuple(self.engine.get_tensor_shape(self.input))

    def describe(self) -> dict:
        return {"clock": self.clock, "cuda_graph_requested": self.use_graph, "tensorrt": self.trt.__version__,
                "plugins": self.plugins, "manifest_warnings": self.manifest_warnings}

    def identity(self) -> dict:
        if getattr(self, "_identity", None) is None:
            self._identity = self._make_identity()
        return self._identity

    def _make_identity(self) -> dict:
        from vitdeploy.artifact import sha256_file
        from vitdeploy.bench.artifact import manifest_model
        from vitdeploy.bench.schema import make_identity
        from vitdeploy.weights import from_manifest

        if self.input_shape[0] != -1:
            profile = {"kind": "static", "batch": int(self.input_shape[0])}
        else:  # the profile TensorRT chose tactics for: it changes the measured engine
            lo, opt, hi = (int(s[0]) for s in self.engine.get_tensor_profile_shape(self.input, 0))
            profile = {"kind": "dynamic", "min": lo, "opt": opt, "max": hi}
        nodes = {p["op"]: int(p.get("count", 1)) for p in self.manifest.get("plugins") or [] if isinstance(p, dict) and "op" in p}
        return make_identity(
            artifact_sha256=sha256_file(self.artifact),
            input={"name": self.input, "shape": [int(d) for d in self.input_shape[1:]],
                   "dtype": np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(self.input))).name},
            batch_profile=profile, model=manifest_model(self.manifest, self.model),
            weights=from_manifest(self.manifest) if self.manifest else {"kind": "unknown"},
            plugins={"nodes": nodes, "reference_executed": 0},  # the engine runs the plugins' own kernels
        )

    def unsupported_batch(self, batch: int) -> str | None:
        if self.input_shape[0] != -1:
            if self.input_shape[0] != batch:
                return f"the engine has a static batch of {self.input_shape[0]} and cannot run batch {batch}"
            return None
        lo, _, hi = self.engine.get_tensor_profile_shape(self.input, 0)
        if not lo[0] <= batch <= hi[0]:
            return f"batch {batch} is outside the engine's optimization profile ({lo[0]}..{hi[0]})"
        return None

    def prepare(self, batch: int, mode: str) -> Prepared:
        trt, cudart, ctx = self.trt, self.cudart, self.context
        ctx.set_input_shape(self.input, (batch, *self.input_shape[1:]))
        allocs: list = []
        hosts: list = []
        copies_in, copies_out = [], []
        stream = check(cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking))
        for name in self.inputs + self.outputs:
            shape = tuple(ctx.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            nbytes = int(np.prod(shape)) * dtype.itemsize
            dev = check(cudart.cudaMalloc(nbytes))
            host = check(cudart.cudaMallocHost(nbytes))
            allocs.append(dev)
            hosts.append(host)
            ctx.set_tensor_address(name, int(dev))
            if name == self.input:
                view = np.frombuffer((ctypes.c_byte * nbytes).from_address(int(host)), dtype=dtype).reshape(shape)
                view[...] = np.random.default_rng(0).standard_normal(shape).astype(dtype)
                check(cudart.cudaMemcpy(dev, host, nbytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice))
                copies_in.append((dev, host, nbytes))
            else:
                copies_out.append((host, dev, nbytes))

        def enqueue():
            if not ctx.execute_async_v3(int(stream)):
                raise RuntimeError("execute_async_v3 failed")

        # One plain enqueue first: TensorRT finishes shape-dependent setup there, not under capture.
        enqueue()
        check(cudart.cudaStreamSynchronize(stream))
        graph_info: dict = {"used": False}
        launch = enqueue
        graph = graph_exec = None
        if self.use_graph:
            try:
                check(cudart.cudaStreamBeginCapture(stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))
                try:
                    enqueue()
                finally:
                    graph = check(cudart.cudaStreamEndCapture(stream))
                graph_exec = check(cudart.cudaGraphInstantiate(graph, 0))
                launch = lambda: check(cudart.cudaGraphLaunch(graph_exec, stream))  # noqa: E731
                graph_info = {"used": True}
            except Exception as e:  # some plugins/tactics are not capturable; plain enqueue still works
                graph_info = {"used": False, "error": str(e)[:200]}
                cudart.cudaGetLastError()
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        end_to_end = mode == "end-to-end"
        start, end = check(cudart.cudaEventCreate()), check(cudart.cudaEventCreate())
        not_ready = cudart.cudaError_t.cudaErrorNotReady

        def step() -> Sample:
            t0 = time.perf_counter()
            check(cudart.cudaEventRecord(start, stream))
            if end_to_end:
                for dst, src, n in copies_in:
                    check(cudart.cudaMemcpyAsync(dst, src, n, h2d, stream))
            launch()
            if end_to_end:
                for dst, src, n in copies_out:
                    check(cudart.cudaMemcpyAsync(dst, src, n, d2h, stream))
            check(cudart.cudaEventRecord(end, stream))
            enqueue_ms = (time.perf_counter() - t0) * 1e3
            while (err := cudart.cudaEventQuery(end)[0]) == not_ready:
                pass
            check((err,))
            return Sample(float(check(cudart.cudaEventElapsedTime(start, end))), enqueue_ms)

        def close():
            cudart.cudaStreamSynchronize(stream)
            if graph_exec is not None:
                cudart.cudaGraphExecDestroy(graph_exec)
            if graph is not None:
                cudart.cudaGraphDestroy(graph)
            for ev in (start, end):
                cudart.cudaEventDestroy(ev)
            for p in allocs:
                cudart.cudaFree(p)
            for p in hosts:
                cudart.cudaFreeHost(p)
            cudart.cudaStreamDestroy(stream)

        return Prepared(step, cuda_graph=graph_info, close=close)
