"""Bench a baseline and a candidate side by side in one process window, for a gate that holds on shared machines.

Two separate runs see different load: a shared CI runner shifts a whole run by tens of
percent, which no interval built from one run's samples can see. Here both artifacts are
prepared in one process, with the same threads and the same input tensor, and timed in
alternating short blocks (`block_ms` each, the same iteration count on both sides, the order
inside each round drawn at random from a seeded generator). Whatever the machine does during
the session it does to both sides of a round, and the gate reads the paired ratio of each
round's block medians (`stats.paired_ratio_ci`).

    session = interleave(base_backend, cand_backend, batches, "compute", settings)
    doc = session_document(session, environment)     # a bench result (schema /3) with both runs
    cmp = compare.compare_interleaved(doc)           # the verdict, per batch

Each run's batch records are ordinary bench records (every sample of that side, its own
conditions), plus `paired`: the session, this side's role, block size, and the block medians
in round order, so the verdict can be recomputed from the JSON alone.

Beside each block's latency, the process CPU time of its iterations is recorded. On a CPU
shared with other work, an iteration's wall time is mostly waiting for a core (the scheduler
hands it out in slices of a few milliseconds), which no pairing removes; the CPU time the
iteration itself consumed is several times steadier there, and a slower code path shows in it
one to one. `compare --run --gate-on cpu-time` gates on it (CPU backends with their threads
pinned, e.g. --threads 1: a runtime's spinning worker threads add their own CPU time).
"""
from __future__ import annotations

import random
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from vitdeploy.bench import conditions
from vitdeploy.bench.backends.base import Backend, Sample
from vitdeploy.bench.runner import Settings, batch_record, new_run
from vitdeploy.bench.stats import MIN_PAIRS
from vitdeploy.errors import VitdeployError

ROLES = ("baseline", "candidate")
DEFAULT_BLOCK_MS = 50.0


@dataclass(frozen=True)
class PairedSettings:
    block_ms: float = DEFAULT_BLOCK_MS  # target duration of one block (at least one iteration)
    seed: int = 0  # order of the two blocks in each round
    min_rounds: int = 2 * MIN_PAIRS

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Blocks:
    """What one batch size's session measured."""

    samples: tuple[list[float], list[float]]  # every iteration, per side, in time order
    enqueues: tuple[list[float], list[float]]
    medians: tuple[list[float], list[float]]  # one per round, per side
    cpu_medians: tuple[list[float], list[float]]  # the process CPU time of the same blocks' iterations
    first: list[int]  # per round: 0 when the baseline block ran first, 1 when the candidate's did
    block_iters: int
    conditions: dict | None = None


WARM_ITERS = 3  # per side at least, after the first call: enough for a median that sizes the blocks


def _warm(steps, settings: Settings) -> list[float]:
    """Both steps once (compilation, autotuning), then alternately for `warmup_ms` and at least
    WARM_ITERS times; the median warm latency of each side."""
    for s in steps:
        s()
    seen: list[list[float]] = [[] for _ in steps]
    end = time.perf_counter() + settings.warmup_ms / 1e3
    while time.perf_counter() < end or len(seen[0]) < WARM_ITERS:
        for i, s in enumerate(steps):
            seen[i].append(s().latency_ms)
    return [float(np.median(v)) for v in seen]


def measure_pair(steps: tuple[Callable[[], Sample], Callable[[], Sample]], settings: Settings,
                 paired: PairedSettings, *, device: str = "cpu",
                 on_progress: Callable[[float], None] | None = None) -> Blocks:
    """Alternate blocks of the two steps until each side has been timed for `duration_s`, has
    `min_iters` iterations, and there are `min_rounds` rounds."""
    per_iter = max(max(_warm(steps, settings)), 1e-3)
    k = max(1, int(round(paired.block_ms / per_iter)))
    rng = random.Random(paired.seed)
    samples: tuple[list[float], list[float]] = ([], [])
    enqueues: tuple[list[float], list[float]] = ([], [])
    medians: tuple[list[float], list[float]] = ([], [])
    cpu_medians: tuple[list[float], list[float]] = ([], [])
    first: list[int] = []
    timed = [0.0, 0.0]
    last_report = time.perf_counter()
    with conditions.Probe(device) as probe:
        while True:
            order = (0, 1) if rng.random() < 0.5 else (1, 0)
            first.append(order[0])
            for side in order:
                block, cpu = [], []
                for _ in range(k):
                    c0 = time.process_time()
                    s = steps[side]()
                    cpu.append((time.process_time() - c0) * 1e3)
                    block.append(s.latency_ms)
                    if s.enqueue_ms is not None:
                        enqueues[side].append(s.enqueue_ms)
                samples[side].extend(block)
                medians[side].append(float(np.median(block)))
                cpu_medians[side].append(float(np.median(cpu)))
                timed[side] += sum(block) / 1e3
            now = time.perf_counter()
            done = min(timed) / settings.duration_s if settings.duration_s > 0 else 1.0
            if on_progress and now - last_report > 0.1:
                last_report = now
                on_progress(min(1.0, done))
            if (done >= 1.0 and len(first) >= paired.min_rounds
                    and min(len(samples[0]), len(samples[1])) >= settings.min_iters):
                break
    return Blocks(samples, enqueues, medians, cpu_medians, first, k, probe.record)


def interleave(base: Backend, cand: Backend, batches: list[int], mode: str, settings: Settings,
               paired: PairedSettings = PairedSettings(), *, progress: bool = True) -> dict:
    """Time both backends at every batch size, interleaved; {"runs": [baseline, candidate], ...}.

    A batch size either side cannot run is skipped on both with the reason; Ctrl-C keeps the
    batch sizes already finished and marks both runs interrupted.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from vitdeploy.console import console

    if base.device != cand.device:
        raise VitdeployError(f"the baseline runs on {base.device} and the candidate on {cand.device}",
                             "interleave two artifacts on the same device")
    session = uuid.uuid4().hex[:12]
    runs = [new_run(b, mode, settings) for b in (base, cand)]
    for role, run in zip(ROLES, runs):
        run["interleaved"] = {"session": session, "role": role, **paired.to_dict()}
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TimeRemainingColumn(),
                   console=console, transient=True, disable=not progress or not console.is_terminal)
    with bar:
        for batch in batches:
            reason = base.unsupported_batch(batch) or cand.unsupported_batch(batch)
            if reason:
                for run in runs:
                    run["skipped"].append({"batch": batch, "reason": reason})
                continue
            task = bar.add_task(f"{base.model} baseline ⇄ candidate batch {batch}", total=1.0)
            prepared = []
            try:
                prepared = [b.prepare(batch, mode) for b in (base, cand)]
                blocks = measure_pair((prepared[0].step, prepared[1].step), settings, paired, device=base.device,
                                      on_progress=lambda f: bar.update(task, completed=f))
            except KeyboardInterrupt:
                for run in runs:
                    run["interrupted"] = True
                break
            finally:
                for p in prepared:
                    p.close()
                bar.remove_task(task)
            for side, run in enumerate(runs):
                rec = batch_record(batch, blocks.samples[side], blocks.enqueues[side], prepared[side].cuda_graph,
                                   base.device)
                rec["conditions"] = blocks.conditions
                rec["paired"] = {"session": session, "role": ROLES[side], "block_iters": blocks.block_iters,
                                 "block_medians_ms": blocks.medians[side],
                                 "block_cpu_medians_ms": blocks.cpu_medians[side],
                                 "ran_first": [f == side for f in blocks.first]}
                run["results"].append(rec)
    return {"session": session, "runs": runs}


FIGURES = {"latency": "block_medians_ms", "cpu-time": "block_cpu_medians_ms"}


def pairs(base_result: dict, cand_result: dict, figure: str = "latency") -> tuple[list[float], list[float]]:
    """The paired block medians of one batch size (of latency, or of the process CPU time the
    iterations took), checked to come from one session."""
    pb, pc = base_result.get("paired"), cand_result.get("paired")
    if not pb or not pc or pb.get("session") != pc.get("session"):
        raise VitdeployError("these results were not measured in one interleaved session",
                             "compare two bench files without --run, or rerun 'vitdeploy compare --run'")
    key = FIGURES[figure]
    if key not in pb or key not in pc:
        raise VitdeployError(f"this session recorded no {figure} per block", "rerun 'vitdeploy compare --run'")
    b, c = pb[key], pc[key]
    if len(b) != len(c):
        raise VitdeployError("an interleaved session has unequal block counts", "rerun 'vitdeploy compare --run'")
    return b, c


def session_document(session: dict, environment: dict) -> dict:
    """The session as a bench result (current schema): `report` plots it, `compare --run` gates it."""
    from vitdeploy.bench.schema import new_document, validate

    return validate(new_document(environment, session["runs"]))
