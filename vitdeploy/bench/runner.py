"""Run a backend over batch sizes: warm up by time, measure for a duration (and at least N iterations).

Each batch record carries the machine's conditions while it was timed (load, steal, clocks,
other work: `conditions.py`), which `compare` checks before trusting two separate runs.
Ctrl-C stops the batch being measured; the batches already finished are kept and
the run is marked `interrupted`, so a long sweep is never all-or-nothing.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

from vitdeploy.bench import conditions, stats
from vitdeploy.bench.backends.base import Backend, Sample
from vitdeploy.bench.schema import SAMPLES_CAP
from vitdeploy.errors import VitdeployError


@dataclass(frozen=True)
class Settings:
    warmup_ms: float = 200.0
    duration_s: float = 3.0
    min_iters: int = 10

    def to_dict(self) -> dict:
        return asdict(self)


def measure(step: Callable[[], Sample], settings: Settings,
            on_progress: Callable[[float], None] | None = None) -> tuple[list[float], list[float]]:
    """Warm up for `warmup_ms` (at least one call), then time iterations until both the
    duration and the minimum iteration count are reached. Returns (latencies, enqueue times) in ms."""
    step()  # the first call may compile or autotune: the warm-up time starts after it
    warm_end = time.perf_counter() + settings.warmup_ms / 1e3
    while time.perf_counter() < warm_end:
        step()
    latencies: list[float] = []
    enqueues: list[float] = []
    start = time.perf_counter()
    deadline = start + settings.duration_s
    last_report = start
    while True:
        s = step()
        latencies.append(s.latency_ms)
        if s.enqueue_ms is not None:
            enqueues.append(s.enqueue_ms)
        now = time.perf_counter()
        if on_progress and now - last_report > 0.1:
            last_report = now
            on_progress(min(1.0, (now - start) / settings.duration_s) if settings.duration_s > 0 else 1.0)
        if now >= deadline and len(latencies) >= settings.min_iters:
            return latencies, enqueues


def batch_record(batch: int, latencies: list[float], enqueues: list[float], cuda_graph: dict,
                 device: str = "cuda") -> dict:
    lat = stats.summarize(latencies)
    warnings = [w for w in [stats.cv_warning(lat, device)] if w]
    enq = None
    if enqueues:
        e = stats.summarize(enqueues)
        enq = {"median": e.median, "mean": e.mean, "p99": e.p99}
        if e.median > 0.8 * lat.median:
            warnings.append(f"host enqueue ({e.median:.3f} ms) is close to the latency: the run is CPU-bound")
    return {
        "batch": batch,
        "iterations": lat.count,
        "latency_ms": lat.to_dict(),
        "throughput_ips": stats.throughput(batch, lat.median),
        "host_enqueue_ms": enq,
        "cuda_graph": cuda_graph,
        "samples_ms": stats.downsample(latencies, SAMPLES_CAP),
        "samples_total": len(latencies),
        "warnings": warnings,
        "conditions": None,  # the runner fills in what the machine was doing (`conditions.py`)
    }


def new_run(backend: Backend, mode: str, settings: Settings) -> dict:
    return {
        "model": backend.model,
        "artifact": backend.artifact,
        "backend": backend.name,
        "device": backend.device,
        "precision": backend.precision,
        "mode": mode,
        "settings": settings.to_dict(),
        "timing": backend.describe(),
        "identity": backend.identity(),
        "warnings": backend.warnings(),
        "results": [],
        "skipped": [],
        "accuracy": None,
        "interrupted": False,
    }


def run_batches(backend: Backend, batches: list[int], mode: str, settings: Settings, *,
                progress: bool = True, on_batch: Callable[[dict], None] | None = None) -> dict:
    """Measure every batch size; unsupported or failing batches are recorded as skipped with the reason."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from vitdeploy.console import console

    run = new_run(backend, mode, settings)
    # a bar only where it can redraw: in a log or a pipe, rich's stopped bar would leave a blank line
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TimeRemainingColumn(),
                   console=console, transient=True, disable=not progress or not console.is_terminal)
    with bar:
        for batch in batches:
            reason = backend.unsupported_batch(batch)
            if reason:
                run["skipped"].append({"batch": batch, "reason": reason})
                continue
            task = bar.add_task(f"{backend.model} {backend.name} batch {batch}", total=1.0)
            prepared = None
            try:
                prepared = backend.prepare(batch, mode)
                with conditions.Probe(backend.device) as probe:
                    lat, enq = measure(prepared.step, settings, lambda f: bar.update(task, completed=f))
            except KeyboardInterrupt:
                run["interrupted"] = True
                break
            except MemoryError:
                run["skipped"].append({"batch": batch, "reason": "out of host memory"})
                continue
            except VitdeployError:
                raise
            except Exception as e:
                # CUDA OOM or a runtime rejecting one batch size must not lose the others; the reason is recorded.
                first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
                run["skipped"].append({"batch": batch, "reason": f"{type(e).__name__}: {first}"})
                continue
            finally:
                if prepared is not None:
                    prepared.close()
                bar.remove_task(task)
            record = batch_record(batch, lat, enq, prepared.cuda_graph, backend.device)
            record["conditions"] = probe.record
            run["results"].append(record)
            if on_batch:
                on_batch(record)
    return run
