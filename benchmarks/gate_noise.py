#!/usr/bin/env python
"""False alarms and misses of `vitdeploy compare`'s latency gate on this machine.

    python benchmarks/gate_noise.py --runs 8 --duration-s 1.5 --out benchmarks/results/gate_noise_cpu.json
    python benchmarks/gate_noise.py --device cuda --precision fp16 --out benchmarks/results/gate_noise_gpu.json

Times the same model `--runs` times with the same code (PyTorch backend), then compares
every ordered pair of runs twice: as measured (any "regression" is a false alarm) and
with the candidate's samples slowed by each `--slowdowns` factor (any "ok" is a miss).
Each pair is judged by the gate's rule (bootstrap interval of the median ratio:
regression / ok / inconclusive) and by the bare ratio of medians the gate used before
(regression when the ratio exceeds 1 + limit). Writes the counts as JSON.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vit_t")
    p.add_argument("--img-size", type=int, default=None)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--runs", type=int, default=8)
    p.add_argument("--duration-s", type=float, default=1.5)
    p.add_argument("--warmup-ms", type=float, default=200)
    p.add_argument("--limit", type=float, default=0.05, help="--max-latency-regression as a fraction")
    p.add_argument("--slowdowns", default="0.10,0.20", help="Injected candidate slowdowns (fractions)")
    p.add_argument("--out", type=Path, required=True)
    return p.parse_args(argv)


def judge(base: list[float], cand: list[float], limit: float) -> tuple[str, str, float, tuple[float, float]]:
    """(gate verdict, old bare-ratio verdict, ratio, interval)."""
    import numpy as np

    from vitdeploy.bench.stats import median_ratio_ci

    ratio, lo, hi = median_ratio_ci(base, cand)
    gate = "regression" if lo > 1 + limit else "ok" if hi <= 1 + limit else "inconclusive"
    old = "regression" if float(np.median(cand) / np.median(base)) > 1 + limit else "ok"
    return gate, old, ratio, (lo, hi)


def main(argv=None) -> int:
    args = parse_args(argv)
    from vitdeploy.bench import environment
    from vitdeploy.bench.backends.pytorch import TorchBackend
    from vitdeploy.bench.runner import Settings, run_batches

    size = args.img_size
    be = TorchBackend(args.model, device=args.device, precision=args.precision, img_size=(size, size) if size else None)
    settings = Settings(warmup_ms=args.warmup_ms, duration_s=args.duration_s, min_iters=10)
    runs = []
    for i in range(args.runs):
        run = run_batches(be, [args.batch], "compute", settings, progress=False)
        res = run["results"][0]
        runs.append(res["samples_ms"])
        print(f"run {i + 1}/{args.runs}: median {res['latency_ms']['median']:.3f} ms, CV {res['latency_ms']['cv']:.1%}, "
              f"{res['iterations']} iterations", flush=True)
    slowdowns = [float(s) for s in args.slowdowns.split(",") if s.strip()]
    cases = {"no_change": 0.0, **{f"slowdown_{s:+.0%}": s for s in slowdowns}}
    out_cases = {}
    for name, s in cases.items():
        counts = {"gate": {"regression": 0, "ok": 0, "inconclusive": 0}, "bare_ratio": {"regression": 0, "ok": 0}}
        pairs = []
        for i, j in itertools.permutations(range(len(runs)), 2):
            cand = [v * (1 + s) for v in runs[j]]
            gate, old, ratio, ci = judge(runs[i], cand, args.limit)
            counts["gate"][gate] += 1
            counts["bare_ratio"][old] += 1
            pairs.append({"base": i, "cand": j, "ratio": ratio, "ci": list(ci), "gate": gate, "bare_ratio": old})
        wrong = "regression" if s <= args.limit else "ok"  # a false alarm, or a miss
        out_cases[name] = {"slowdown": s, "pairs": len(pairs), "counts": counts,
                           f"gate_{'false_alarms' if s <= args.limit else 'misses'}": counts["gate"][wrong],
                           f"bare_ratio_{'false_alarms' if s <= args.limit else 'misses'}": counts["bare_ratio"][wrong],
                           "detail": pairs}
        print(f"{name}: gate {counts['gate']}, bare ratio {counts['bare_ratio']}")
    doc = {"benchmark": "gate_noise", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
           "environment": environment.collect(args.device), "load_average": list(os.getloadavg()),
           "runs": [{"samples": len(r)} for r in runs],
           "cases": out_cases}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
