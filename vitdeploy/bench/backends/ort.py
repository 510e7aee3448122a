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

    def __init__(self, onnx_path: Path, *, model: str, precision: str, device: str = "cpu"):
        import onnxruntime as ort

        from vitdeploy.onnxrt import session

        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise VitdeployError("this onnxruntime has no CUDA execution provider",
                                     "pip install onnxruntime-gpu, or use --device cpu")
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        self.sess = session(onnx_path, providers=providers)
        self.model, self.precision, self.device = model, precision, device
        self.artifact = str(onnx_path)
        inp = self.sess.get_inputs()
        if len(inp) != 1:
            raise VitdeployError(f"{Path(onnx_path).name} has {len(inp)} inputs; bench feeds one image tensor",
                                 "benchmark a single-input graph")
        self.input = inp[0]
        if len(self.input.shape) != 4 or not all(isinstance(d, int) for d in self.input.shape[1:]):
            raise VitdeployError(f"input {self.input.name} has shape {self.input.shape}, not [N, C, H, W] with fixed C/H/W",
                                 "export with a fixed image size")
        self.dtype = _NP.get(self.input.type, np.float32)

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
        from vitdeploy.deploy.inputs import random_images

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
