#!/usr/bin/env python
"""False alarms and misses of `vitdeploy compare`'s latency gates on this machine, side by side.

    python benchmarks/gate_noise.py --load 8 --img-size 64 --threads 1 --duration-s 4 --out benchmarks/results/gate_noise_cpu_vit_t64_load.json
    python benchmarks/gate_noise.py --idle --img-size 64 --threads 1 --duration-s 4 --out benchmarks/results/gate_noise_cpu_vit_t64_idle.json
    python benchmarks/gate_noise.py --idle --img-size 64 --threads 1 --dry-run   # the idle command in miniature, to a temp dir
    python benchmarks/gate_noise.py --device cuda --precision fp16 --out benchmarks/results/gate_noise_gpu.json

Times the same model with the same code (PyTorch backend, instances with identical weights, the
same threads and inputs) in one schedule that mixes both ways of gating, so both see the same
hours of the machine:

- **two runs**: `--runs` separate runs of `--duration-s`; every ordered pair of runs is one
  baseline/candidate comparison (8 runs -> 56 pairs), judged by `compare` as shipped (bootstrap
  interval, then the runs' recorded conditions), by the bootstrap interval alone (the gate before
  conditions were recorded), and by the bare ratio of medians (the gate before that);
- **interleaved**: as many `compare --run` sessions as there are pairs (56), each timing two fresh
  instances (built in random order) in alternating blocks for `--duration-s` a side, judged by `compare_interleaved` on
  latency and (CPU) on the process CPU time of the same blocks (`--gate-on cpu-time`).
  After every separate run come runs-1 sessions.

Every comparison is judged as measured (any "regression" is a false alarm) and with the
candidate's samples (and block medians) multiplied by 1 + each `--slowdowns` factor (any "ok"
is a miss; "caught" means "regression").

`--load N` starts N busy-loop processes for the whole measurement (killed at the end, by pid)
to put the machine under load; uptime before and after, and the CPU those processes used, are
recorded (other people's work on a shared machine is the rest of `others_share`). `--idle`
waits (up to `--idle-wait-s`) for a quiet machine, records whether every run stayed quiet, and
exits 3 without claiming "idle" when one did not. `--dry-run` runs everything in miniature and
writes to a temporary directory.
"""
from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BUSY = "while True: pass"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vit_t")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads for both sides (default torch's; 1 avoids gang-scheduled iterations under load)")
    p.add_argument("--runs", type=int, default=8)
    p.add_argument("--duration-s", type=float, default=4.0,
                   help="each separate run, and each side of each interleaved session")
    p.add_argument("--warmup-ms", type=float, default=200)
    p.add_argument("--block-ms", type=float, default=None, help="interleaved block length (default: compare --run's)")
    p.add_argument("--limit", type=float, default=0.05, help="--max-latency-regression as a fraction")
    p.add_argument("--slowdowns", default="0.10,0.20", help="Injected candidate slowdowns (fractions)")
    p.add_argument("--load", type=int, default=0, help="busy-loop processes to run meanwhile")
    p.add_argument("--target-load", type=float, default=None,
                   help="instead of --load: start as many busy loops as bring the 1-minute load average to about "
                        "this (other people's work counts; the bench itself adds about 1)")
    p.add_argument("--idle", action="store_true", help="require a quiet machine (wait for it, verify it)")
    p.add_argument("--idle-max-load", type=float, default=0.5, help="--idle: 1-minute load average to wait for")
    p.add_argument("--idle-wait-s", type=float, default=1800)
    p.add_argument("--dry-run", action="store_true", help="everything in miniature, written to a temp dir")
    p.add_argument("--note", default="", help="free text stored in the JSON")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if args.idle and (args.load or args.target_load):
        p.error("--idle and --load/--target-load contradict each other")
    if args.load and args.target_load:
        p.error("pass --load or --target-load, not both")
    if args.dry_run:
        args.runs, args.duration_s, args.warmup_ms = 3, 0.3, 50.0
        args.out = Path(tempfile.mkdtemp(prefix="gate_noise_dry_")) / (args.out.name if args.out else "gate_noise.json")
    elif args.out is None:
        p.error("--out is required (except with --dry-run)")
    if args.runs < 2:
        p.error("--runs must be at least 2")
    return args


def uptime() -> dict:
    text = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip() if os.path.exists("/usr/bin/uptime") else ""
    return {"uptime": text, "load_average": [round(x, 2) for x in os.getloadavg()],
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def start_load(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", BUSY], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL) for _ in range(n)]


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of one process, from /proc (None once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_load(procs: list[subprocess.Popen]) -> float:
    """Kill our own load processes by pid; the CPU seconds they used."""
    used = sum(cpu_seconds(p.pid) or 0.0 for p in procs)
    for p in procs:
        p.kill()
    for p in procs:
        p.wait(timeout=10)
    return used


def wait_for_quiet(max_load: float, wait_s: float, dry_run: bool) -> dict:
    start = time.time()
    while True:
        load = os.getloadavg()[0]
        if load <= max_load:
            return {"waited_s": round(time.time() - start, 1), "load_1m": round(load, 2), "quiet": True}
        if dry_run:
            print(f"dry run: the machine is not quiet (1-minute load {load:.2f} > {max_load}); the real run waits up to "
                  f"{wait_s:.0f} s for it", flush=True)
            return {"waited_s": 0.0, "load_1m": round(load, 2), "quiet": False}
        if time.time() - start > wait_s:
            print(f"error: the machine did not become quiet within {wait_s:.0f} s (1-minute load {load:.2f} > "
                  f"{max_load}): run it when nobody else works here", file=sys.stderr)
            sys.exit(3)
        print(f"waiting for a quiet machine: 1-minute load {load:.2f} > {max_load}", flush=True)
        time.sleep(15)


def slowed(run: dict, factor: float) -> dict:
    """A copy of a run whose samples (and block medians) are `factor` times slower."""
    out = copy.deepcopy(run)
    for res in out["results"]:
        res["samples_ms"] = [v * factor for v in res["samples_ms"]]
        for k in ("min", "mean", "median", "p90", "p95", "p99", "max", "std"):
            res["latency_ms"][k] *= factor
        res["throughput_ips"] /= factor
        if res.get("paired"):
            for key in ("block_medians_ms", "block_cpu_medians_ms"):
                res["paired"][key] = [v * factor for v in res["paired"][key]]
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    import numpy as np

    from vitdeploy.bench import conditions, environment, schema
    from vitdeploy.bench.backends.pytorch import TorchBackend
    from vitdeploy.bench.compare import compare, compare_interleaved
    from vitdeploy.bench.interleave import DEFAULT_BLOCK_MS, PairedSettings, interleave, session_document
    from vitdeploy.bench.runner import Settings, run_batches
    from vitdeploy.bench.stats import median_ratio_ci

    limit = args.limit
    block_ms = args.block_ms or DEFAULT_BLOCK_MS
    idle = wait_for_quiet(args.idle_max_load, args.idle_wait_s, args.dry_run) if args.idle else None
    before = uptime()
    print(f"before: {before['uptime']}", flush=True)
    size = (args.img_size, args.img_size) if args.img_size else None

    def backend():
        return TorchBackend(args.model, device=args.device, precision=args.precision, img_size=size, threads=args.threads)

    import random

    order_rng = random.Random(1)
    runner = backend()  # the separate runs time one instance, as two CI jobs would each load theirs
    env = environment.collect(args.device)
    settings = Settings(warmup_ms=args.warmup_ms, duration_s=args.duration_s, min_iters=10)
    n_pairs = args.runs * (args.runs - 1)
    runs: list[dict] = []
    sessions: list[dict] = []
    if args.target_load is not None:
        args.load = max(0, int(round(args.target_load - os.getloadavg()[0] - 1)))
        print(f"--target-load {args.target_load:g}: 1-minute load {os.getloadavg()[0]:.2f}, starting {args.load} busy loops",
              flush=True)
    load = start_load(args.load)
    t0 = time.time()
    try:
        if load:
            time.sleep(3)  # let the load settle before the first measurement
        for i in range(args.runs):
            run = run_batches(runner, [args.batch], "compute", settings, progress=False)
            runs.append(run)
            res = run["results"][0]
            print(f"run {i + 1}/{args.runs}: median {res['latency_ms']['median']:.3f} ms, CV {res['latency_ms']['cv']:.1%}, "
                  f"{res['iterations']} iterations ({conditions.describe(res['conditions'])})", flush=True)
            for _ in range(args.runs - 1):
                k = len(sessions)
                # a fresh pair per session, as each `compare --run` loads its two artifacts; which one is built
                # first is drawn at random (two instances of one model can differ by a few percent)
                pair = [backend(), backend()]
                if order_rng.random() < 0.5:
                    pair.reverse()
                s = interleave(pair[0], pair[1], [args.batch], "compute", settings,
                               PairedSettings(block_ms=block_ms, seed=k), progress=False)
                del pair
                sessions.append(session_document(s, env))
                cmp = compare_interleaved(sessions[-1], max_latency_regression=limit)
                r = cmp.rows[0]
                print(f"  session {k + 1}/{n_pairs}: paired {r.ratio - 1:+.1%} ({r.ci[0] - 1:+.1%}..{r.ci[1] - 1:+.1%}), "
                      f"{len(r.base['paired']['block_medians_ms'])} rounds -> {r.verdict}", flush=True)
    finally:
        load_cpu_s = stop_load(load)
    wall = time.time() - t0
    after = uptime()
    print(f"after: {after['uptime']}", flush=True)

    docs = [schema.new_document(env, [r]) for r in runs]
    slowdowns = [float(s) for s in args.slowdowns.split(",") if s.strip()]
    cases = {"no_change": 0.0, **{f"slowdown_{s:+.0%}": s for s in slowdowns}}
    gates = ("two_runs_as_shipped", "two_runs_interval_only", "bare_ratio", "interleaved", "interleaved_cpu_time")
    out_cases = {}
    for name, s in cases.items():
        counts = {g: {"regression": 0, "ok": 0, "inconclusive": 0} for g in gates}
        detail = []
        for (i, j), sess in zip(itertools.permutations(range(len(runs)), 2), sessions):
            cand = copy.deepcopy(docs[j])
            cand["runs"] = [slowed(docs[j]["runs"][0], 1 + s)]
            shipped = compare(docs[i], cand, max_latency_regression=limit).rows[0]
            b_s, c_s = runs[i]["results"][0]["samples_ms"], cand["runs"][0]["results"][0]["samples_ms"]
            ratio, lo, hi = median_ratio_ci(b_s, c_s)
            interval = "regression" if lo > 1 + limit else "ok" if hi <= 1 + limit else "inconclusive"
            bare = "regression" if float(np.median(c_s) / np.median(b_s)) > 1 + limit else "ok"
            sdoc = copy.deepcopy(sess)
            sdoc["runs"][1] = slowed(sess["runs"][1], 1 + s)
            inter = compare_interleaved(sdoc, max_latency_regression=limit).rows[0]
            cpu = (compare_interleaved(sdoc, max_latency_regression=limit, figure="cpu-time").rows[0]
                   if args.device == "cpu" else inter)
            for g, v in zip(gates, (shipped.verdict, interval, bare, inter.verdict, cpu.verdict)):
                counts[g][v] += 1
            detail.append({"base": i, "cand": j, "two_runs": {"ratio": ratio, "ci": [lo, hi], "as_shipped": shipped.verdict,
                                                              "interval_only": interval, "bare_ratio": bare},
                           "interleaved": {"ratio": inter.ratio, "ci": list(inter.ci), "verdict": inter.verdict,
                                           "rounds": len(inter.base["paired"]["block_medians_ms"])},
                           "interleaved_cpu_time": {"ratio": cpu.ratio, "ci": list(cpu.ci), "verdict": cpu.verdict}})
        wrong = "regression" if s <= limit else "ok"
        label = "false_alarms" if s <= limit else "misses"
        summary = {g: {label: counts[g][wrong], "caught" if s > limit else "ok": counts[g]["regression" if s > limit else "ok"],
                       "inconclusive": counts[g]["inconclusive"]} for g in gates}
        out_cases[name] = {"slowdown": s, "pairs": len(detail), "counts": counts, "summary": summary, "detail": detail}
        print(f"{name}: " + "; ".join(f"{g} {counts[g]}" for g in gates), flush=True)

    run_conditions = [r["results"][0]["conditions"] for r in runs]
    session_conditions = [d["runs"][0]["results"][0]["conditions"] for d in sessions]
    all_cond = run_conditions + session_conditions
    others = [c.get("others_share") for c in all_cond if c and "others_share" in c]
    cpus = next((c["cpus"] for c in all_cond if c and "cpus" in c), os.cpu_count() or 1)
    doc = {"benchmark": "gate_noise", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "settings": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "block_ms": block_ms},
           "environment": env,
           "machine": {"before": before, "after": after, "wall_s": round(wall, 1),
                       "load_processes": args.load,
                       "load_processes_cpu_share": round(load_cpu_s / (wall * cpus), 3) if load else 0.0,
                       "others_share": {"min": min(others), "median": float(np.median(others)), "max": max(others)} if others else None,
                       "idle": idle},
           "runs": [{"samples": len(r["results"][0]["samples_ms"]), "median_ms": r["results"][0]["latency_ms"]["median"],
                     "cv": r["results"][0]["latency_ms"]["cv"], "conditions": r["results"][0]["conditions"]} for r in runs],
           "sessions": [{"rounds": len(d["runs"][0]["results"][0]["paired"]["block_medians_ms"]),
                         "block_iters": d["runs"][0]["results"][0]["paired"]["block_iters"],
                         "conditions": d["runs"][0]["results"][0]["conditions"]} for d in sessions],
           "cases": out_cases,
           "note": args.note}
    verified = True
    if args.idle:
        disturbed = [conditions.disturbances(c, args.device) for c in all_cond if c]
        verified = bool(idle and idle["quiet"]) and not any(disturbed)
        doc["machine"]["idle_verified"] = verified
        if not verified:
            first = next((d for d in disturbed if d), ["the machine was not quiet at the start"])
            print(f"not idle: {first[0]}; the JSON says idle_verified false", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}")
    print(markdown_rows(doc))
    return 0 if verified or args.dry_run else 3


def markdown_rows(doc: dict) -> str:
    """The docs/benchmarking.md table rows, from the JSON alone."""
    m = doc["machine"]
    load = f"load {m['before']['load_average'][0]:.1f} before, {m['after']['load_average'][0]:.1f} after"
    lines = []
    names = {"interleaved": "`compare --run` (interleaved), latency",
             "interleaved_cpu_time": "`compare --run --gate-on cpu-time`",
             "two_runs_as_shipped": "two files, as shipped (conditions)",
             "two_runs_interval_only": "two files, interval only (before)", "bare_ratio": "two files, bare ratio"}
    slow = [k for k in doc["cases"] if k != "no_change"]
    for g, label in names.items():
        nc = doc["cases"]["no_change"]["summary"][g]
        cells = [f"{nc['false_alarms']} / {doc['cases']['no_change']['pairs']} ({nc['inconclusive']} inconclusive)"]
        for k in slow:
            c = doc["cases"][k]["summary"][g]
            cells.append(f"{c['caught']} / {doc['cases'][k]['pairs']}")
        lines.append(f"| {label} | {' | '.join(cells)} | {load} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
