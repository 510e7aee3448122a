"""Latency statistics over per-iteration samples (milliseconds)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# Above this coefficient of variation the numbers move with clocks/thermals more than with the model.
CV_WARN = 0.025
PERCENTILES = (90, 95, 99)


@dataclass(frozen=True)
class LatencyStats:
    count: int
    min: float
    mean: float
    median: float
    p90: float
    p95: float
    p99: float
    max: float
    std: float
    cv: float  # std / mean (sample std, ddof=1)

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(samples_ms) -> LatencyStats:
    """Summary of a non-empty sample set; percentiles use linear interpolation (numpy's default)."""
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError("need a non-empty 1-D sample set")
    p90, p95, p99 = np.percentile(a, PERCENTILES)
    mean = float(a.mean())
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    return LatencyStats(
        count=int(a.size),
        min=float(a.min()),
        mean=mean,
        median=float(np.median(a)),
        p90=float(p90),
        p95=float(p95),
        p99=float(p99),
        max=float(a.max()),
        std=std,
        cv=std / mean if mean > 0 else 0.0,
    )


def throughput(batch: int, median_ms: float) -> float:
    """Images per second at the median latency of one batch."""
    return batch * 1000.0 / median_ms if median_ms > 0 else float("inf")


def cv_warning(stats: LatencyStats, device: str = "cuda") -> str | None:
    if stats.cv <= CV_WARN:
        return None
    fix = ("lock GPU clocks (nvidia-smi -lgc, or jetson_clocks on Jetson)" if device == "cuda"
           else "set the CPU governor to performance")
    return f"latency CV {stats.cv:.1%} is above {CV_WARN:.1%}: results are noisy; {fix}, stop other work, or raise --duration-s"


def downsample(samples, cap: int) -> list[float]:
    """At most `cap` samples, evenly spaced in measurement order, so plots keep the distribution's shape."""
    if len(samples) <= cap:
        return [float(s) for s in samples]
    idx = np.linspace(0, len(samples) - 1, cap).round().astype(int)
    return [float(samples[i]) for i in idx]
