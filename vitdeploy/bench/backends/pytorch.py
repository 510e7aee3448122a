"""PyTorch backends: eager (`torch`) and `torch.compile` (`torch-compile`), built from the model registry.

On CUDA the forward pass is captured into a CUDA graph when capture succeeds
(so the numbers show the GPU, not Python's launch overhead) and replayed; whether
it was used, or why not, is recorded per batch.
"""
from __future__ import annotations

from vitdeploy.bench.backends.base import Backend, Prepared, host_step, torch_cuda_step
from vitdeploy.errors import VitdeployError

_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def capture_cuda_graph(fn, warmup: int = 3):
    """Capture `fn()` into a CUDA graph after a few side-stream warm-up calls; returns (graph, output)."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


def prepare_module(module, batch: int, mode: str, *, size: tuple[int, int], dtype, device: str,
                   cuda_graph: bool = True) -> Prepared:
    """Time `module` on random images: perf_counter on the CPU, CUDA events (+ graph replay) on CUDA."""
    import torch

    from vitdeploy.parity import random_images

    host = torch.from_numpy(random_images(batch, size)).to(dtype)

    if device == "cpu":
        def run():
            with torch.inference_mode():
                return module(host)

        return Prepared(host_step(run))

    if mode == "end-to-end":
        host = host.pin_memory()
    x = host.to("cuda")
    forward = torch.inference_mode()(lambda: module(x))
    graph_info: dict = {"used": False}
    compute = forward
    if cuda_graph:
        try:
            graph, out = capture_cuda_graph(forward)
            compute = lambda: (graph.replay(), out)[1]  # noqa: E731
            graph_info = {"used": True}
        except Exception as e:  # capture fails for data-dependent shapes, host syncs, ...
            graph_info = {"used": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
            torch.cuda.synchronize()
    if mode == "end-to-end":
        # Pinned host buffers on both sides, as a deployed pipeline would have.
        with torch.inference_mode():
            outs = _tensors(compute())
        host_outs = [torch.empty(o.shape, dtype=o.dtype, pin_memory=True) for o in outs]

        def run():
            x.copy_(host, non_blocking=True)
            for dst, src in zip(host_outs, _tensors(compute())):
                dst.copy_(src, non_blocking=True)
    else:
        run = compute
    return Prepared(torch_cuda_step(run), cuda_graph=graph_info)


class ModuleBackend(Backend):
    """Any eval-mode torch module fed [N, 3, H, W] images (e.g. a model with vitdeploy kernels swapped in)."""

    def __init__(self, module, *, name: str, model: str, size: tuple[int, int], precision: str = "fp32",
                 device: str = "cpu", cuda_graph: bool = True, weights: dict | None = None,
                 model_record: dict | None = None, threads: int | None = None):
        import torch

        self.module, self.name, self.model, self.size = module, name, model, tuple(size)
        self.precision, self.device = precision, device
        self.dtype = getattr(torch, _DTYPES[precision])
        self.clock = "cuda_events" if device == "cuda" else "perf_counter"
        self.use_graph = cuda_graph and device == "cuda"
        self.weights = weights or {"kind": "unknown"}
        self.model_record = model_record or {"alias": model, "name": None, "reduced": None}
        if threads is not None:
            if threads < 1:
                raise VitdeployError(f"--threads must be at least 1, got {threads}", "e.g. --threads 4")
            torch.set_num_threads(threads)
        self.threads = threads

    def describe(self) -> dict:
        return {"clock": self.clock, "cuda_graph_requested": self.use_graph}

    def identity(self) -> dict:
        import torch

        from vitdeploy.bench.backends.base import usable_cores
        from vitdeploy.bench.schema import make_identity

        return make_identity(
            artifact_sha256=None,
            input={"name": "input", "shape": [3, *self.size], "dtype": str(self.dtype).removeprefix("torch.")},
            batch_profile={"kind": "dynamic"},  # eager/compiled modules take any batch
            model=self.model_record, weights=self.weights,
            threads={"intra_op": torch.get_num_threads(), "usable_cores": usable_cores()} if self.device == "cpu" else None,
        )

    def prepare(self, batch: int, mode: str) -> Prepared:
        return prepare_module(self.module, batch, mode, size=self.size, dtype=self.dtype, device=self.device,
                              cuda_graph=self.use_graph)


class TorchBackend(ModuleBackend):
    """A registry model built in PyTorch (random weights), eager."""

    name = "torch"

    def __init__(self, alias: str, *, device: str = "cpu", precision: str = "fp32", img_size=None,
                 cuda_graph: bool = True, small: bool = False, threads: int | None = None):
        import torch

        from vitdeploy.models import build_model, get_info

        if precision not in _DTYPES:
            raise VitdeployError(f"the {self.name} backend has no precision '{precision}'", "use fp32, fp16 or bf16")
        if device == "cuda" and not torch.cuda.is_available():
            raise VitdeployError("--device cuda was asked for but PyTorch sees no CUDA GPU", "use --device cpu")
        if device == "cpu" and precision == "fp16":
            raise VitdeployError("FP16 on the CPU is not a meaningful PyTorch benchmark", "use --precision bf16 or fp32 on the CPU")
        from vitdeploy.weights import RANDOM_SEED, for_model

        info = get_info(alias)
        size = img_size or info.input_size
        torch.manual_seed(RANDOM_SEED)
        module = build_model(info, img_size=size, small=small, device=device).to(getattr(torch, _DTYPES[precision]))
        super().__init__(self._wrap(module), name=self.name, model=alias, size=size, precision=precision,
                         device=device, cuda_graph=cuda_graph, weights=for_model(alias),
                         model_record={"alias": alias, "name": info.name, "reduced": bool(small)}, threads=threads)

    def _wrap(self, module):
        return module


class TorchCompileBackend(TorchBackend):
    """`torch.compile` in its default mode; compilation happens in the first (untimed) call per batch shape."""

    name = "torch-compile"

    def describe(self) -> dict:
        return {**super().describe(), "compile_mode": "default"}

    def _wrap(self, module):
        import torch

        return torch.compile(module)


def _tensors(out):
    """Output tensors of a model (tensor, tuple, or HF ModelOutput)."""
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    values = out.values() if hasattr(out, "values") else out
    return [v for v in values if isinstance(v, torch.Tensor)]
