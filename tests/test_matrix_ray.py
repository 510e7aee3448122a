"""`vitdeploy matrix --ray` on a real cluster: a head and a worker node started with `ray start` on
127.0.0.1, each holding one custom resource that stands for a device type (devtype_a, devtype_b).

The tiny ORT-CPU matrix (vit_t and deit_t, FP32/FP16, batches 1 and 2, 32x32 inputs) runs through the
CLI exactly as a user would start it, with two cells meant to fail (an engine cell on nodes without
TensorRT, a model at an input size it cannot take) and one Ray worker killed mid-cell. The cluster
is stopped at the end whatever happens, by its own process groups, never by the machine-wide
`ray stop`.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="the cluster tests need Ray: pip install 'vitdeploy[cluster]'")

from vitdeploy.bench import schema  # noqa: E402
from vitdeploy.matrix.ray_test_cluster import LocalCluster, NodeSpec  # noqa: E402

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[1]
MATRIX = """
[defaults]
batches = [1, 2]
dynamic_batch = "1:2:2"
warmup_ms = 0
duration_s = 0.05
min_iters = 3
img_size = 32
exporter = "torchscript"

[devices.devtype_a]
resources = { devtype_a = 1 }

[devices.devtype_b]
resources = { devtype_b = 1 }

[[suite]]
name = "ort-cpu"
backend = "ort"
prepare = "build"
models = ["vit_t", "deit_t"]
precisions = ["fp32", "fp16"]
devices = ["devtype_a", "devtype_b"]

# Shares vit_t/fp16's prepare; its engine step needs TensorRT, which no node here has.
[[suite]]
name = "trt"
backend = "trt"
prepare = "build"
models = ["vit_t"]
precisions = ["fp16"]
devices = ["devtype_a"]

# A 40x40 input does not fit 16x16 patches: the prepare fails, and only this cell with it.
[[suite]]
name = "bad-size"
backend = "ort"
prepare = "build"
models = ["vit_t"]
precisions = ["fp32"]
img_size = 40
devices = ["devtype_b"]
"""
GOOD = [f"ort-cpu/{m}/{p}@{d}" for m in ("vit_t", "deit_t") for p in ("fp32", "fp16") for d in ("devtype_a", "devtype_b")]
ENV = {"PYTHONPATH": str(ROOT), "COLUMNS": "200"}


def _cmdlines() -> dict[int, tuple[int, str]]:
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            out[int(d)] = (ppid, cmd)
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def matrix(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vitdeploy", "matrix", *map(str, args)], env={**os.environ, **ENV},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


@pytest.fixture(scope="module")
def cluster():
    c = LocalCluster([NodeSpec(num_cpus=1, resources={"devtype_a": 1}), NodeSpec(num_cpus=1, resources={"devtype_b": 1})],
                     env=ENV)
    try:
        c.start()
        yield c
    finally:
        c.stop()
        assert not {p for p in c.processes() if _alive(p)}, "cluster processes left behind"


@pytest.fixture(scope="module")
def ray_run(cluster, tmp_path_factory):
    """The matrix on the cluster, with the Ray worker of the first bench cell seen killed once."""
    tmp = tmp_path_factory.mktemp("matrix")
    (tmp / "m.toml").write_text(MATRIX)
    work = tmp / "work"
    killed: dict = {}

    def kill_first_bench_worker(stop: threading.Event) -> None:
        while not stop.is_set() and not killed:
            for pid, (ppid, cmd) in _cmdlines().items():
                if "vitdeploy.matrix.child bench" in cmd and str(work) in cmd and "/ort-cpu/" in cmd:
                    killed.update(child=pid, worker=ppid, json=cmd.split("--json ")[1].strip())
                    os.kill(ppid, signal.SIGKILL)  # the worker dies mid-cell, as with a lost node
                    break
            time.sleep(0.1)

    stop = threading.Event()
    watcher = threading.Thread(target=kill_first_bench_worker, args=(stop,), daemon=True)
    watcher.start()
    started = time.time()
    proc = matrix(tmp / "m.toml", "--ray", cluster.address, "-o", tmp / "out", "--work", work, "--max-retries", 2)
    out, _ = proc.communicate(timeout=240)
    stop.set()
    watcher.join()
    summary = json.loads((tmp / "out" / "summary.json").read_text())
    return {"tmp": tmp, "work": work, "rc": proc.returncode, "out": out, "seconds": time.time() - started,
            "summary": summary, "cells": {c["id"]: c for c in summary["cells"]}, "killed": killed,
            "nodes": cluster.nodes()}


def _node_with(nodes: list[dict], resource: str) -> str:
    (nid,) = [n["id"] for n in nodes if n["resources"].get(resource)]
    return nid


def test_each_cell_ran_on_the_node_with_its_resource(ray_run):
    cells, nodes = ray_run["cells"], ray_run["nodes"]
    assert ray_run["rc"] == 1, ray_run["out"]  # two cells fail (on purpose), the other eight are done
    assert [cid for cid in GOOD if cells[cid]["status"] != "done"] == [], ray_run["out"]
    merged = schema.read(ray_run["tmp"] / "out" / "bench.json")
    assert len(merged["runs"]) == len(GOOD)
    for run in merged["runs"]:
        dt = run["node"]["device_type"]
        assert run["node"]["id"] == _node_with(nodes, dt), run["node"]
        assert run["device"] == "cpu" and run["environment"]["versions"]["vitdeploy"]
        assert [r["batch"] for r in run["results"]] == [1, 2]
        assert all(r["latency_ms"]["median"] > 0 and r["iterations"] >= 3 for r in run["results"])
    for cid in GOOD:
        cell = cells[cid]
        assert cell["node"]["id"] == _node_with(nodes, cell["device_type"])
        d = Path(cell["dir"])
        assert (d / "bench.json").is_file() and (d / "manifest.json").is_file() and (d / "bench.log").is_file()
    by_key = {schema.run_key(r) for r in merged["runs"]}
    assert len(by_key) == len(GOOD)  # devtype_a and devtype_b runs of a model stay apart


def test_prepare_ran_once_per_model_and_precision_not_per_device(ray_run):
    s, cells = ray_run["summary"], ray_run["cells"]
    done = {pid: p for pid, p in s["prepares"].items() if p["status"] == "done"}
    assert sorted((p["model"], p["precision"]) for p in done.values()) == sorted(
        (m, p) for m in ("vit_t", "deit_t") for p in ("fp32", "fp16"))
    assert all(p["attempts"] == 1 for p in done.values())  # one task each, never re-run for the second device
    for pid, p in done.items():
        users = [c for c in cells.values() if c["prepare"] == pid]
        assert {c["device_type"] for c in users if c["suite"] == "ort-cpu"} == {"devtype_a", "devtype_b"}
        log = (ray_run["tmp"] / "out" / "prepare" / pid / "prepare.log").read_text()
        assert log.count("export     model.onnx (opset") == 1, log  # exported for real, once
        for c in users:
            if c["status"] == "done":
                manifest = json.loads((Path(c["dir"]) / "manifest.json").read_text())
                assert manifest["files"]["onnx"]["sha256"] == p["onnx_sha256"]  # the very graph prepared once


def test_a_failing_cell_fails_alone_and_is_not_retried(ray_run):
    cells, s = ray_run["cells"], ray_run["summary"]
    trt = cells["trt/vit_t/fp16@devtype_a"]
    assert trt["status"] == "failed" and trt["reason"].startswith("no TensorRT on ")
    assert "TensorRT is not installed here" in trt["log_tail"] and trt["attempts"] == 1
    assert trt["prepare"] == cells["ort-cpu/vit_t/fp16@devtype_a"]["prepare"]  # shared with the ORT cells
    bad = cells["bad-size/vit_t/fp32@devtype_b"]
    assert bad["status"] == "failed" and "does not fit vit_t" in bad["reason"] and "multiple of 16" in bad["reason"]
    bad_prep = s["prepares"][bad["prepare"]]
    assert bad_prep["status"] == "failed" and bad_prep["attempts"] == 1 and "does not fit vit_t" in bad_prep["log_tail"]
    assert s["counts"] == {"done": 8, "failed": 2}
    assert "✘ trt/vit_t/fp16@devtype_a failed: no TensorRT" in ray_run["out"]
    assert "--resume" in ray_run["out"]  # the Next: block says how to rerun only these


def test_a_cell_whose_worker_dies_is_retried(ray_run):
    k = ray_run["killed"]
    assert k, "no bench cell was seen running"
    victim = next(c for c in ray_run["cells"].values() if c["dir"].endswith(str(Path(k["json"]).parent.relative_to(ray_run["work"]))))
    assert victim["status"] == "done" and victim["attempts"] == 2, victim
    deadline = time.time() + 10
    while _alive(k["child"]) and time.time() < deadline:  # the cell's child went with its worker
        time.sleep(0.2)
    assert not _alive(k["child"])
    assert "restarted" in ray_run["out"] and "(retry)" in ray_run["out"]


def _shape(obj):
    """The structure of a JSON value: keys of objects all the way down, not the values."""
    if isinstance(obj, dict):
        return {k: _shape(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_shape(obj[0])] if obj and isinstance(obj[0], (dict, list)) else "list"
    return "value"


def test_merged_json_matches_a_local_serial_run(ray_run):
    """One cell of the same matrix, run here without Ray: same layout, same fields, all the way down."""
    tmp = ray_run["tmp"]
    one = MATRIX.split("# Shares")[0].replace('models = ["vit_t", "deit_t"]', 'models = ["vit_t"]').replace(
        'precisions = ["fp32", "fp16"]', 'precisions = ["fp16"]')
    (tmp / "one.toml").write_text(one)
    proc = matrix(tmp / "one.toml", "-o", tmp / "local", "--work", ray_run["work"])
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    local = schema.read(tmp / "local" / "bench.json")
    ray = schema.read(tmp / "out" / "bench.json")
    assert {k: _shape(v) for k, v in local.items() if k != "runs"} == {k: _shape(v) for k, v in ray.items() if k != "runs"}
    (lr,) = local["runs"]
    assert lr["node"]["id"] is None and lr["node"]["device_type"] is None and schema.run_key(lr)[3] == "cpu"
    twins = [r for r in ray["runs"] if schema.run_key(r)[:3] == schema.run_key(lr)[:3]]
    assert sorted(r["node"]["device_type"] for r in twins) == ["devtype_a", "devtype_b"]
    for r in twins:
        assert _shape({**r, "node": None}) == _shape({**lr, "node": None})
        assert set(r["node"]) == set(lr["node"])
    (prep,) = json.loads((tmp / "local" / "summary.json").read_text())["prepares"]
    assert prep == ray_run["cells"]["ort-cpu/vit_t/fp16@devtype_a"]["prepare"]  # same content, same prepare
    assert "model.onnx (cached)" in (tmp / "local" / "prepare" / prep / "prepare.log").read_text()  # the step cache


def test_resume_reruns_nothing(ray_run, cluster):
    out_dir = ray_run["tmp"] / "out"
    before = {p: p.stat().st_mtime_ns for p in out_dir.glob("cells/ort-cpu/*/*/*")}
    proc = matrix(ray_run["tmp"] / "m.toml", "--suite", "ort-cpu", "--ray", cluster.address, "-o", out_dir, "--resume")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "nothing to run" in out and "8 resumed" in out
    assert {p: p.stat().st_mtime_ns for p in out_dir.glob("cells/ort-cpu/*/*/*")} == before
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["counts"] == {"resumed": 8} and summary["prepares"] == {}
    assert len(schema.read(out_dir / "bench.json")["runs"]) == 8


def test_ctrl_c_cancels_the_graph_and_keeps_finished_cells(ray_run, cluster):
    tmp = ray_run["tmp"]
    out_dir = tmp / "interrupted"
    shutil.copytree(tmp / "out", out_dir)
    work = tmp / "work2"
    proc = matrix(tmp / "m.toml", "--ray", cluster.address, "-o", out_dir, "--work", work, "--resume")
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:  # Ctrl-C once a rerun cell's command is running
        if any(str(work) in cmd and "vitdeploy.matrix.child" in cmd for _, cmd in _cmdlines().values()):
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "interrupted" in out
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["interrupted"] is True
    statuses = {c["id"]: c["status"] for c in summary["cells"]}
    assert all(statuses[c] == "resumed" for c in GOOD)
    assert statuses["trt/vit_t/fp16@devtype_a"] == "cancelled"
    assert len(schema.read(out_dir / "bench.json")["runs"]) == 8  # the finished cells are kept
    deadline = time.time() + 15
    while time.time() < deadline and any(str(work) in c for _, c in _cmdlines().values()):
        time.sleep(0.2)
    assert not [c for _, c in _cmdlines().values() if str(work) in c], "a cancelled cell's process is still running"
