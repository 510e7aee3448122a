"""What every kernel benchmark records the same way: the environment and the CPU dry-run timer."""
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


def time_cpu(fn, reps: int = 1) -> dict:
    """Dry-run stand-in (wall clock, interpreter): exercises the code path, means nothing."""
    samples = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1e6)
    return {"median_us": statistics.median(samples), "min_us": min(samples), "p90_us": max(samples), "reps": reps}
