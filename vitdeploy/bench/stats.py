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


# ----------------------------------------------------------------------------- paired (interleaved) gate
MIN_PAIRS = 6  # below this no two-sided 95 % signed-rank interval exists


def _signed_rank_cdf(n: int) -> np.ndarray:
    """P(T <= t), t = 0..n(n+1)/2, of the Wilcoxon signed-rank statistic under symmetry about 0 (exact)."""
    counts = np.zeros(n * (n + 1) // 2 + 1, dtype=np.float64)
    counts[0] = 1.0
    top = 0
    for r in range(1, n + 1):  # each rank is in the positive sum or not
        counts[r : top + r + 1] += counts[: top + 1].copy()
        top += r
        counts /= 2.0  # keep probabilities, not 2^n counts
    return np.cumsum(counts)


def _signed_rank_k(n: int, confidence: float) -> int:
    """The number of Walsh averages cut from each end for a two-sided `confidence` interval."""
    alpha = (1.0 - confidence) / 2.0
    if n <= 200:
        cdf = _signed_rank_cdf(n)
        return int(np.searchsorted(cdf, alpha, side="right"))  # largest k with P(T <= k - 1) <= alpha
    from statistics import NormalDist

    m = n * (n + 1) / 4.0
    sd = (n * (n + 1) * (2 * n + 1) / 24.0) ** 0.5
    return max(0, int(np.floor(m - NormalDist().inv_cdf(1.0 - alpha) * sd + 0.5)))


def paired_ratio_ci(base_blocks, cand_blocks, confidence: float = 0.95) -> tuple[float, float, float]:
    """(ratio, low, high) of candidate over baseline from paired blocks measured side by side.

    Each pair is one round of an interleaved session: a block of baseline iterations and a block of
    candidate iterations run back to back (in random order), summarised by their medians. Load that
    changes during the session changes both blocks of a round alike, so the log of each round's
    ratio keeps the difference between the two artifacts and loses most of the drift. The estimate
    is the Hodges-Lehmann median of the Walsh averages of those logs, and the interval is the
    distribution-free Wilcoxon signed-rank interval (exact up to 200 pairs, normal beyond): it
    assumes only that a round's log ratio is symmetric about the true one, which the randomised
    order within a round provides. Deterministic: the same blocks give the same verdict.
    """
    b = np.asarray(base_blocks, dtype=np.float64)
    c = np.asarray(cand_blocks, dtype=np.float64)
    if b.shape != c.shape or b.ndim != 1:
        raise ValueError("need the same number of baseline and candidate blocks")
    if b.size < MIN_PAIRS:
        raise ValueError(f"need at least {MIN_PAIRS} pairs of blocks, got {b.size}")
    if np.any(b <= 0) or np.any(c <= 0):
        raise ValueError("block latencies must be positive")
    d = np.log(c) - np.log(b)
    i, j = np.triu_indices(d.size)
    walsh = np.sort((d[i] + d[j]) / 2.0)
    k = _signed_rank_k(d.size, confidence)
    est = float(np.median(walsh))
    lo, hi = (walsh[k - 1], walsh[walsh.size - k]) if k >= 1 else (-np.inf, np.inf)
    return float(np.exp(est)), float(np.exp(lo)), float(np.exp(hi))
