"""What every kernel benchmark records the same way: the environment, the CUDA timer and the CPU dry-run timer."""
from __future__ import annotations

import datetime as _dt
import platform
import statistics
import time

import torch

from vitdeploy.bench.environment import git_commit


def environment(device) -> dict:
    """Versions, date, commit and the device that produced the numbers."""
    import triton

    device = torch.device(device)
    env = {"torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version(),
           "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "git": git_commit()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(device=torch.cuda.get_device_name(device), capability=f"sm_{p.major}{p.minor}",
                   cuda=torch.version.cuda, sm_count=p.multi_processor_count)
    else:
        env.update(device=f"cpu ({platform.processor() or platform.machine()}), Triton interpreter")
    return env


def time_cuda(fn, warmup: int, reps: int, inner: int = 1, graphs: bool = False) -> dict:
    """Median/min/p90 microseconds per call; each sample times `inner` back-to-back calls with CUDA events.

    With `graphs`, the `inner` calls are captured once in a CUDA graph and replayed, so the numbers
    are GPU time without Python launch overhead (as inside a TensorRT engine); if capture fails the
    calls are launched from Python and `mode` says so. Without it each sample includes the launch.
    """
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()

    def launch_all():
        for _ in range(inner):
            fn()

    block, mode = launch_all, "python-launch"
    if graphs:
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    fn()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                launch_all()
            block, mode = graph.replay, "cuda-graph"
        except Exception as e:  # record why, keep measuring without the graph
            mode = f"python-launch (graph capture failed: {type(e).__name__})"
            torch.cuda.synchronize()
    for _ in range(3):
        block()
    torch.cuda.synchronize()
    samples = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        block()
        b.record()
        b.synchronize()
        samples.append(a.elapsed_time(b) * 1000.0 / inner)
    samples.sort()
    return {"median_us": statistics.median(samples), "min_us": samples[0],
            "p90_us": samples[int(0.9 * (len(samples) - 1))], "reps": reps, "inner": inner, "mode": mode}


def time_cpu(fn, reps: int = 1) -> dict:
    """Dry-run stand-in (wall clock, interpreter): exercises the code path, means nothing."""
    samples = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1e6)
    return {"median_us": statistics.median(samples), "min_us": min(samples), "p90_us": max(samples), "reps": reps, "inner": 1}
