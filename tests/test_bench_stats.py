"""Latency statistics, the measurement loop and the batch sweep (no real model: a scripted step)."""
from __future__ import annotations

import numpy as np
import pytest

from vitdeploy.bench import stats
from vitdeploy.bench.backends.base import Backend, Prepared, Sample
from vitdeploy.bench.runner import Settings, batch_record, measure, run_batches


def test_percentiles_on_1_to_100_match_numpy():
    a = np.arange(1, 101, dtype=float)
    rng = np.random.default_rng(0)
    s = stats.summarize(rng.permutation(a))  # order must not matter
    assert s.count == 100 and s.min == 1 and s.max == 100
    assert s.median == pytest.approx(50.5)
    assert s.mean == pytest.approx(50.5)
    for q in (90, 95, 99):
        assert getattr(s, f"p{q}") == pytest.approx(np.percentile(a, q))
    assert s.p90 == pytest.approx(90.1) and s.p99 == pytest.approx(99.01)
    assert s.std == pytest.approx(np.std(a, ddof=1))


def test_cv_and_its_warning():
    s = stats.summarize([9.0, 11.0])
    assert s.cv == pytest.approx(np.sqrt(2) / 10)
    assert "lock GPU clocks" in stats.cv_warning(s) and "governor" in stats.cv_warning(s, "cpu")
    steady = stats.summarize([10.0, 10.1, 9.9, 10.0])
    assert steady.cv < stats.CV_WARN and stats.cv_warning(steady) is None
    one = stats.summarize([3.0])
    assert one.std == 0 and one.cv == 0 and one.p99 == 3.0


def test_summarize_rejects_empty():
    with pytest.raises(ValueError):
        stats.summarize([])


def test_throughput_and_downsample():
    assert stats.throughput(8, 4.0) == pytest.approx(2000.0)
    samples = list(range(10_000))
    kept = stats.downsample(samples, 100)
    assert len(kept) == 100 and kept[0] == 0 and kept[-1] == 9999 and kept == sorted(kept)
    assert stats.downsample([1, 2, 3], 100) == [1.0, 2.0, 3.0]


class Scripted:
    """A step returning latencies from a list (cycled) and counting calls."""

    def __init__(self, values, enqueue=None):
        self.values, self.enqueue, self.calls = list(values), enqueue, 0

    def __call__(self):
        v = self.values[self.calls % len(self.values)]
        self.calls += 1
        return Sample(v, self.enqueue)


def test_measure_honours_min_iters_and_warms_up():
    step = Scripted([1.0, 2.0, 3.0])
    lat, enq = measure(step, Settings(warmup_ms=0, duration_s=0, min_iters=7))
    assert len(lat) == 7 and enq == []
    assert step.calls == 8  # one warm-up call, never timed
    assert lat[:3] == [2.0, 3.0, 1.0]


def test_measure_runs_for_the_duration():
    import time

    def slow():
        time.sleep(0.005)
        return Sample(5.0, 0.1)

    t0 = time.perf_counter()
    lat, enq = measure(slow, Settings(warmup_ms=20, duration_s=0.1, min_iters=1))
    assert time.perf_counter() - t0 >= 0.12
    assert len(lat) >= 2 and len(enq) == len(lat)


def test_batch_record_fields_and_cpu_bound_warning():
    rec = batch_record(4, [2.0, 2.0, 2.0, 2.0], [1.9] * 4, {"used": False})
    assert rec["iterations"] == 4 and rec["throughput_ips"] == pytest.approx(2000.0)
    assert rec["host_enqueue_ms"]["median"] == pytest.approx(1.9)
    assert any("CPU-bound" in w for w in rec["warnings"])
    assert rec["samples_ms"] == [2.0] * 4 and rec["samples_total"] == 4


class FakeBackend(Backend):
    """Batch 3 is 'static-batch unsupported', batch 5 fails at run time, batch 7 is Ctrl-C."""

    name, model = "fake", "toy"

    def unsupported_batch(self, batch):
        return "static batch of 1" if batch == 3 else None

    def prepare(self, batch, mode):
        if batch == 7:
            raise KeyboardInterrupt
        if batch == 5:
            def boom():
                raise RuntimeError("CUDA out of memory\nmore detail")
            return Prepared(boom)
        return Prepared(Scripted([float(batch)]), cuda_graph={"used": batch == 2})


def test_run_batches_skips_with_reasons_and_keeps_batches_on_ctrl_c():
    run = run_batches(FakeBackend(), [1, 2, 3, 5, 7, 8], "compute", Settings(0, 0, 3), progress=False)
    assert [r["batch"] for r in run["results"]] == [1, 2]
    assert run["results"][1]["cuda_graph"] == {"used": True}
    assert run["results"][1]["latency_ms"]["median"] == 2.0
    assert {s["batch"]: s["reason"] for s in run["skipped"]} == {
        3: "static batch of 1", 5: "RuntimeError: CUDA out of memory"}
    assert run["interrupted"] is True  # batch 8 was never reached
