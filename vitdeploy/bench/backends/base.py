"""What every backend offers the runner, and the two clocks they time with."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, NamedTuple


class Sample(NamedTuple):
    latency_ms: float
    enqueue_ms: float | None = None  # host time to submit the work (async backends only)


@dataclass
class Prepared:
    """One batch ready to run: `step()` does one timed iteration."""

    step: Callable[[], Sample]
    cuda_graph: dict = field(default_factory=lambda: {"used": False})
    close: Callable[[], None] = lambda: None


class Backend:
    """Base class: subclasses set `name`, `clock`, `precision`, `model` and implement `prepare`."""

    name = "?"
    clock = "perf_counter"
    device = "cpu"
    precision = "fp32"
    model = "?"
    artifact: str | None = None

    def unsupported_batch(self, batch: int) -> str | None:
        """Why `batch` cannot run (e.g. a static-batch graph), or None."""
        return None

    def prepare(self, batch: int, mode: str) -> Prepared:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> dict:
        return {"clock": self.clock}

    def identity(self) -> dict:
        """What this backend measures (see `vitdeploy.bench.schema`); subclasses fill in what they know."""
        from vitdeploy.bench.schema import make_identity

        return make_identity(artifact_sha256=None, input=None, batch_profile=None,
                             model={"alias": self.model, "name": None, "reduced": None}, weights={"kind": "unknown"})

    def warnings(self) -> list[str]:
        """Why this run's figures do not measure what their labels suggest (printed and recorded)."""
        ident = self.identity()
        out = []
        n = ident["plugins"]["reference_executed"]
        if n:
            ops = ", ".join(f"{op}×{c}" for op, c in ident["plugins"]["nodes"].items())
            out.append(f"{n} plugin node{'s' if n != 1 else ''} ({ops}) run on ONNX Runtime's CPU Python reference: "
                       "this times the reference, not the plugin; bench the engine (--backend trt) for plugin latency")
        if ident["fp16_on_cpu"]:
            out.append("FP16 graph on the CPU: ONNX Runtime's CPU provider has few FP16 kernels and inserts casts, so this "
                       "is not FP16 speed; bench FP16 on a GPU")
        return out


def usable_cores() -> int:
    """CPU cores this process may run on (taskset/cgroup affinity), which bounds every thread pool."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def host_step(fn: Callable[[], object]) -> Callable[[], Sample]:
    """Time a synchronous call with perf_counter (CPU backends, synchronous runtimes)."""

    def step() -> Sample:
        t0 = time.perf_counter()
        fn()
        return Sample((time.perf_counter() - t0) * 1e3)

    return step


def torch_cuda_step(fn: Callable[[], object]) -> Callable[[], Sample]:
    """Time `fn` on the current CUDA stream with events; spin on the end event (no sleep jitter).

    The host time from recording the start event to recording the end event is the enqueue time:
    when it approaches the GPU latency, the run is CPU bound (CUDA graphs fix that).
    """
    import torch

    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)

    def step() -> Sample:
        t0 = time.perf_counter()
        start.record()
        fn()
        end.record()
        enqueue = (time.perf_counter() - t0) * 1e3
        while not end.query():
            pass
        return Sample(start.elapsed_time(end), enqueue)

    return step
