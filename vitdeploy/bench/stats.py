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


def _noise_fix(device: str) -> str:
    fix = ("lock GPU clocks (nvidia-smi -lgc, or jetson_clocks on Jetson)" if device == "cuda"
           else "set the CPU governor to performance")
    return f"{fix}, stop other work, or raise --duration-s"


def cv_warning(stats: LatencyStats, device: str = "cuda") -> str | None:
    """The warning one batch record carries (in the JSON) when its CV is above `CV_WARN`."""
    if stats.cv <= CV_WARN:
        return None
    return f"latency CV {stats.cv:.1%} is above {CV_WARN:.1%}: results are noisy; {_noise_fix(device)}"


def is_cv_warning(text: str) -> bool:
    """Whether a batch record's warning is the one `cv_warning` wrote (shown once per run by `noise_warning`)."""
    return text.startswith("latency CV ")


def noise_warning(results: list[dict], device: str = "cuda") -> str | None:
    """One line for a whole run naming every noisy batch, instead of the same advice once per batch."""
    noisy = [r for r in results if r["latency_ms"]["cv"] > CV_WARN]
    if not noisy:
        return None
    which = ", ".join(f"{r['batch']} ({r['latency_ms']['cv']:.1%})" for r in noisy)
    return (f"latency CV above {CV_WARN:.1%} at batch {which}: results are noisy; {_noise_fix(device)}")


def downsample(samples, cap: int) -> list[float]:
    """At most `cap` samples, evenly spaced in measurement order, so plots keep the distribution's shape."""
    if len(samples) <= cap:
        return [float(s) for s in samples]
    idx = np.linspace(0, len(samples) - 1, cap).round().astype(int)
    return [float(samples[i]) for i in idx]


BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def median_ratio_ci(base_ms, cand_ms, confidence: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
                    seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float]:
    """(ratio, low, high): candidate median / baseline median and its percentile-bootstrap interval.

    Each side is resampled with replacement `resamples` times (seeded, so the same files always
    give the same interval); the interval holds `confidence` of the resampled median ratios. It
    widens with the spread of either side and narrows with more samples, which a bare ratio of
    medians cannot tell. Samples are treated as independent: drift during a run (clocks, heat)
    is not modelled, so lock clocks rather than trust a narrow interval from a drifting machine.
    """
    b = np.asarray(base_ms, dtype=np.float64)
    c = np.asarray(cand_ms, dtype=np.float64)
    if b.size == 0 or c.size == 0:
        raise ValueError("need samples on both sides")
    ratio = float(np.median(c) / np.median(b))
    rng = np.random.default_rng(seed)
    alpha = (1.0 - confidence) / 2.0
    ratios = np.empty(resamples)
    step = max(1, int(4e6 // max(b.size, c.size)))  # bounded memory: ~32 MB of indices per chunk
    for lo in range(0, resamples, step):
        n = min(step, resamples - lo)
        mb = np.median(b[rng.integers(0, b.size, size=(n, b.size), dtype=np.int32)], axis=1)
        mc = np.median(c[rng.integers(0, c.size, size=(n, c.size), dtype=np.int32)], axis=1)
        ratios[lo : lo + n] = mc / mb
    low, high = np.quantile(ratios, [alpha, 1.0 - alpha])
    return ratio, float(low), float(high)
