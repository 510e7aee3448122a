"""ONNX Runtime backend, on the session `vitdeploy.onnxrt.session` gives (plugin nodes included)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from vitdeploy.bench.backends.base import Backend, Prepared, host_step
from vitdeploy.errors import VitdeployError

_NP = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


class OrtBackend(Backend):
    """ORT's `run` returns only when the outputs are ready, so a host clock times it exactly.

    On CUDA, `compute` mode binds device-resident inputs/outputs (IOBinding) so no copies
    are timed; `end-to-end` runs from and to host numpy arrays.
    """

    name = "ort"
    clock = "perf_counter"

    def __init__(self, onnx_path: Path, *, model: str, precision: str, device: str = "cpu",
                 manifest: dict | None = None, threads: int | None = None):
        import onnxruntime as ort

        from vitdeploy.onnxrt import session

        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise VitdeployError("this onnxruntime has no CUDA execution provider",
                                     "pip install onnxruntime-gpu, or use --device cpu")
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if threads is not None and threads < 1:
            raise VitdeployError(f"--threads must be at least 1, got {threads}", "e.g. --threads 4")
        self.sess = session(onnx_path, providers=providers, threads=threads)
        self.model, self.precision, self.device = model, precision, device
        self.artifact = str(onnx_path)
        self.manifest = manifest or {}
        self.threads = threads
        self._identity = None
        inp = self.sess.get_inputs()
        if len(inp) != 1:
            raise VitdeployError(f"{Path(onnx_path).name} has {len(inp)} inputs; bench feeds one image tensor",
                                 "benchmark a single-input graph")
        self.input = inp[0]
        if len(self.input.shape) != 4 or not all(isinstance(d, int) for d in self.input.shape[1:]):
            raise VitdeployError(f"input {self.input.name} has shape {self.input.shape}, not [N, C, H, W] with fixed C/H/W",
                                 "export with a fixed image size")
        self.dtype = _NP.get(self.input.type, np.float32)

    def describe(self) -> dict:
        return {"clock": self.clock, "providers": self.sess.get_providers()}

    def identity(self) -> dict:
        if self._identity is None:
            from vitdeploy.artifact import sha256_file
            from vitdeploy.bench.artifact import manifest_model, plugin_node_counts
            from vitdeploy.bench.backends.base import usable_cores
            from vitdeploy.bench.schema import make_identity
            from vitdeploy.weights import from_manifest

            nodes = plugin_node_counts(self.artifact)
            b = self.static_batch
            self._identity = make_identity(
                artifact_sha256=sha256_file(self.artifact),
                input={"name": self.input.name, "shape": list(self.input.shape[1:]), "dtype": np.dtype(self.dtype).name},
                # ORT runs any batch of a dynamic graph the same way: the manifest's min/opt/max do not matter here
                batch_profile={"kind": "static", "batch": b} if b is not None else {"kind": "dynamic"},
                model=manifest_model(self.manifest, self.model),
                weights=from_manifest(self.manifest) if self.manifest else {"kind": "unknown"},
                # onnxruntime-extensions runs every plugin node as a Python op on the CPU, whatever the provider
                plugins={"nodes": nodes, "reference_executed": sum(nodes.values())},
                threads={"intra_op": self.threads, "usable_cores": usable_cores()},
                fp16_on_cpu=self.device == "cpu" and "fp16" in self.precision.split("+"),
            )
        return self._identity

    @property
    def static_batch(self) -> int | None:
        b = self.input.shape[0]
        return b if isinstance(b, int) else None

    def unsupported_batch(self, batch: int) -> str | None:
        b = self.static_batch
        if b is not None and b != batch:
            return f"the graph has a static batch of {b} and cannot run batch {batch} (export with --dynamic-batch)"
        return None

    def prepare(self, batch: int, mode: str) -> Prepared:
        from vitdeploy.parity import random_images

        _, c, h, w = self.input.shape
        x = random_images(batch, (h, w), channels=c).astype(self.dtype)
        name = self.input.name
        sess = self.sess
        if self.device == "cuda" and mode == "compute":
            import onnxruntime as ort

            binding = sess.io_binding()
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
            for o in sess.get_outputs():
                binding.bind_output(o.name, "cuda")
            return Prepared(host_step(lambda: sess.run_with_iobinding(binding)))
        return Prepared(host_step(lambda: sess.run(None, {name: x})))
