#!/usr/bin/env python
"""Wall time of `vitdeploy matrix`: serial here vs `--ray` on a local cluster, recorded as JSON.

    python benchmarks/matrix_cluster.py                       # CPU: serial vs a 2-node x 1-CPU cluster
    python benchmarks/matrix_cluster.py --mode gpu --out benchmarks/results/matrix_gpu   # GPU machine

cpu: the tiny ORT-CPU matrix (vit_t, deit_t x FP32/FP16, batches 1 and 2, 32x32 inputs) runs twice
from scratch, with nothing cached: once without Ray (one cell at a time) and once on a local Ray
cluster of two worker processes with one CPU each. Both runs do the same 4 prepares and 4 cells;
the cluster runs two at a time. The machine's load average before and after is recorded, because
on a shared machine it decides the result more than the code does.

gpu: `benchmarks/matrix_gpu.toml` (PyTorch and ONNX Runtime on the GPU) through a one-node Ray
cluster holding this machine's GPU(s), as a fleet node would; results under --out.

Every file records the commit, the machine and the command line.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TINY = """
[defaults]
batches = [1, 2]
dynamic_batch = "1:2:2"
warmup_ms = 50
duration_s = 0.5
min_iters = 10
img_size = 32
exporter = "torchscript"

[[suite]]
name = "ort-cpu"
backend = "ort"
prepare = "build"
models = ["vit_t", "deit_t"]
precisions = ["fp32", "fp16"]
"""


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict:
    from vitdeploy.bench.environment import cpu, git_commit

    mem = None
    try:
        mem = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    return {"host": platform.node(), "cpu": cpu(), "memory_gib": mem, "python": platform.python_version(),
            "git": git_commit(ROOT)}


def run_matrix(args: list[str], env: dict) -> tuple[float, int, dict]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "vitdeploy", "matrix", *args], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    out = Path(args[args.index("-o") + 1])
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").is_file() else {}
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
    return seconds, proc.returncode, summary


def cpu_mode(ns) -> dict:
    from vitdeploy.matrix.local_cluster import LocalCluster, NodeSpec

    tmp = Path(tempfile.mkdtemp(prefix="vd-matrix-bench-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    (tmp / "tiny.toml").write_text(TINY)
    record: dict = {"benchmark": "matrix_cluster_cpu", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "machine": machine(), "matrix": TINY.strip(), "command": sys.argv, "load_before": load()}
    try:
        s_serial, rc, summary = run_matrix([str(tmp / "tiny.toml"), "-o", str(tmp / "serial"), "--work",
                                            str(tmp / "work-serial")], env)
        record["serial"] = {"seconds": round(s_serial, 2), "exit": rc, "counts": summary.get("counts"),
                            "prepare_seconds": {k: v["seconds"] for k, v in summary.get("prepares", {}).items()}}
        record["load_between"] = load()
        started = time.perf_counter()
        cluster = LocalCluster([NodeSpec(num_cpus=1), NodeSpec(num_cpus=1)], env={"PYTHONPATH": str(ROOT)})
        cluster.start()
        try:
            start_s = time.perf_counter() - started
            s_ray, rc, summary = run_matrix([str(tmp / "tiny.toml"), "--ray", cluster.address, "-o", str(tmp / "ray"),
                                             "--work", str(tmp / "work-ray")], env)
        finally:
            cluster.stop()
        record["ray"] = {"seconds": round(s_ray, 2), "cluster_start_seconds": round(start_s, 2), "exit": rc,
                         "nodes": 2, "cpus_per_node": 1, "counts": summary.get("counts"),
                         "prepare_seconds": {k: v["seconds"] for k, v in summary.get("prepares", {}).items()},
                         "cells_per_node": _per_node(summary)}
        record["load_after"] = load()
        record["speedup"] = round(s_serial / s_ray, 2) if s_ray else None
        cores = os.cpu_count() or 1
        busy = max(record["load_before"][0], record["load_after"][0])
        record["note"] = (
            f"{cores} cores; 1-minute load average {record['load_before'][0]} before, {record['load_between'][0]} "
            f"between, {record['load_after'][0]} after. "
            + ("Other processes were loading the machine: both wall times are inflated, by different amounts as the "
               "load changed between the runs, and two cluster workers get two fair shares of the contended cores "
               "where the serial run gets one; on an idle machine two 1-CPU nodes can at most halve the serial time."
               if busy > 0.5 * cores else "The machine was otherwise idle."))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return record


def _per_node(summary: dict) -> dict:
    out: dict = {}
    for c in summary.get("cells", []):
        nid = ((c.get("node") or {}).get("id") or "?")[:8]
        out[nid] = out.get(nid, 0) + 1
    return out


def gpu_mode(ns) -> dict:
    from vitdeploy.matrix.local_cluster import LocalCluster, NodeSpec

    out = Path(ns.out)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    record: dict = {"benchmark": "matrix_gpu_one_node", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "machine": machine(), "matrix": str(ns.matrix), "command": sys.argv, "load_before": load()}
    started = time.perf_counter()
    # The node declares what Ray detects: its CPUs, its GPUs and their accelerator_type label.
    cluster = LocalCluster([NodeSpec(num_cpus=None, num_gpus=None, object_store_mb=4096)], env={"PYTHONPATH": str(ROOT)})
    cluster.start()
    try:
        record["nodes"] = cluster.nodes()
        record["cluster_start_seconds"] = round(time.perf_counter() - started, 2)
        work = tempfile.mkdtemp(prefix="vd-matrix-work-")  # the prepared ONNX stay out of the results
        args = [str(ns.matrix), "--ray", cluster.address, "-o", str(out), "--work", work]
        for s in ns.suite or []:
            args += ["--suite", s]
        seconds, rc, summary = run_matrix(args, env)
    finally:
        cluster.stop()
        if "work" in locals():
            shutil.rmtree(work, ignore_errors=True)
    record.update(seconds=round(seconds, 2), exit=rc, counts=summary.get("counts"), load_after=load(),
                  results=str(out / "bench.json"), summary=str(out / "summary.json"))
    return record


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--out", default=None, help="cpu: the JSON file; gpu: the results directory.")
    p.add_argument("--matrix", type=Path, default=ROOT / "benchmarks" / "matrix_gpu.toml", help="gpu mode's matrix.")
    p.add_argument("--suite", action="append", help="gpu mode: only this suite (repeatable).")
    ns = p.parse_args(argv)
    if ns.mode == "cpu":
        path = Path(ns.out or ROOT / "benchmarks" / "results" / "matrix_cluster_cpu.json")
        record = cpu_mode(ns)
    else:
        ns.out = ns.out or str(ROOT / "benchmarks" / "results" / "matrix_gpu")
        path = Path(ns.out) / "timing.json"
        Path(ns.out).mkdir(parents=True, exist_ok=True)
        record = gpu_mode(ns)
    from vitdeploy.artifact import atomic_write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, record)
    print(json.dumps({k: record.get(k) for k in ("serial", "ray", "speedup", "seconds", "exit", "note") if k in record},
                     indent=1))
    print(f"wrote {path}")
    ok = record.get("exit", 0) == 0 and all(record.get(k, {}).get("exit", 0) == 0 for k in ("serial", "ray"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
