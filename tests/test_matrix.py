"""`vitdeploy matrix` without a cluster: the matrix file, the plan, resume records, moving a prepared
artifact to a node, the `node` field of bench runs, and the CLI's one-line errors."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from vitdeploy.bench import schema
from vitdeploy.bench.runner import Settings, batch_record
from vitdeploy.errors import VitdeployError
from vitdeploy.matrix import execute, plan
from vitdeploy.matrix.ray_runner import offers
from vitdeploy.matrix.results import Store

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "benchmarks" / "matrix.toml"

TINY = """
[defaults]
batches = [1, 2]
dynamic_batch = "1:2:2"

[devices.devtype_a]
resources = { devtype_a = 1 }

[[suite]]
name = "ort-cpu"
backend = "ort"
prepare = "build"
models = ["vit_t"]
precisions = ["fp32"]
devices = ["devtype_a"]
"""


def write(tmp_path, text: str) -> Path:
    p = tmp_path / "m.toml"
    p.write_text(text)
    return p


def test_shipped_matrix_shares_prepares_across_device_types_and_suites():
    from vitdeploy.models import REGISTRY

    p = plan.expand(SHIPPED)
    assert {c.model for c in p.cells} <= set(REGISTRY)
    trt = [c for c in p.cells if c.suite == "trt" and c.model == "swin_t" and c.precision == "fp16"]
    assert sorted(c.device_type.name for c in trt) == ["a100", "h100", "l4", "orin"]
    assert len({c.prepare for c in trt}) == 1  # one export/rewrite/precision for every GPU type
    prep = p.prepares[trt[0].prepare]
    ort_gpu = [c for c in p.cells if c.suite == "ort-gpu" and c.model == "swin_t"]
    assert {c.prepare for c in ort_gpu} == {prep.id}  # and for the other suite that needs the same graph
    assert prep.args == ["build", "--model", "swin_t", "--dynamic-batch", "1:8:64", "--fp16", "--no-engine"]
    # the engine step reruns build (every earlier step is a cache hit) and exits 4 where no engine can be built
    assert trt[0].engine_args == [*prep.args[:-1], "--require-engine"]
    assert ort_gpu[0].engine_args is None
    h100 = next(c for c in trt if c.device_type.name == "h100").device_type.ray_options()
    assert h100 == {"num_cpus": 1, "num_gpus": 1, "accelerator_type": "H100"}
    orin = next(c for c in trt if c.device_type.name == "orin").device_type.ray_options()
    assert orin == {"num_cpus": 1, "num_gpus": 1, "resources": {"jetson_orin": 1.0}}
    torch_cells = [c for c in p.cells if c.backend == "torch"]
    assert torch_cells and all(c.prepare is None and c.engine_args is None for c in torch_cells)
    b = torch_cells[0].bench_args
    assert b[:6] == ["--model", torch_cells[0].model, "--backend", "torch", "--precision", torch_cells[0].precision]
    assert b[b.index("--device") + 1] == "cuda" and b[b.index("--batch-sizes") + 1] == "1,8,32,64"
    for pr in p.prepares.values():  # every prepare is used, and ids do not collide
        assert p.cells_of(pr.id)
    # Without Ray: one cell per suite, model and precision, and the same prepares.
    here = plan.expand(SHIPPED, local=True)
    assert len(here.cells) == len({(c.suite, c.model, c.precision) for c in p.cells})
    assert {c.device_type.name for c in here.cells} == {"local"} and set(here.prepares) == set(p.prepares)


def test_int8_needs_calibration_data(tmp_path):
    p = plan.expand(SHIPPED, suites=["trt"], models=["vit_s"])
    int8 = [c for c in p.cells if c.precision == "int8"]
    assert int8 and all("calibration data" in c.problem and c.prepare is None for c in int8)
    assert any("int8 needs calibration data" in w for w in p.warnings)
    calib = tmp_path / "calib.npz"
    p = plan.expand(SHIPPED, suites=["trt"], models=["vit_s"], calib_data=str(calib))
    cell = next(c for c in p.cells if c.precision == "int8")
    assert cell.problem is None
    assert p.prepares[cell.prepare].args[-4:] == ["--int8", "--calib-data", str(calib), "--no-engine"]


@pytest.mark.parametrize("edit, message", [
    (("batches = [1, 2]", "batchez = [1, 2]"), "unknown key 'batchez' (did you mean 'batches'?)"),
    (('models = ["vit_t"]', 'models = ["vit_tt"]'), "unknown model 'vit_tt' (did you mean 'vit_t'?)"),
    (('devices = ["devtype_a"]', 'devices = ["devtype_c"]'), "unknown device type 'devtype_c'"),
    (('dynamic_batch = "1:2:2"', 'dynamic_batch = "1:1:1"'), "batches: 2 outside dynamic_batch 1:1:1"),
    (('backend = "ort"', 'backend = "trt"\ndevice = "cuda"'), None),  # valid: trt with prepare = build
    (('prepare = "build"', 'prepare = "export"\nbackend2 = 1'), "unknown key 'backend2'"),
    (('precisions = ["fp32"]', 'precisions = ["bf16"]'), 'prepare = "build" cannot make bf16'),
    (('prepare = "build"', 'prepare = "none"'), 'prepare = "none" makes none'),
    (("resources = { devtype_a = 1 }", "resources = { GPU = 1 }"), "is a built-in resource (use num_cpus / num_gpus)"),
    (('backend = "ort"', 'backend = "onnx"'), "unknown backend 'onnx'"),
])
def test_bad_matrix_is_refused_in_one_line(tmp_path, edit, message):
    path = write(tmp_path, TINY.replace(*edit))
    if message is None:
        assert plan.expand(path).cells[0].engine_args is not None
        return
    with pytest.raises(VitdeployError) as e:
        plan.expand(path)
    assert message in e.value.one_line() and "\n" not in e.value.one_line()
    assert e.value.message.startswith("m.toml: ")


def test_unreadable_matrix_files(tmp_path):
    with pytest.raises(VitdeployError, match="does not exist"):
        plan.expand(tmp_path / "missing.toml")
    with pytest.raises(VitdeployError, match="not valid TOML"):
        plan.expand(write(tmp_path, "[[suite]\n"))
    with pytest.raises(VitdeployError, match="no \\[\\[suite\\]\\] tables"):
        plan.expand(write(tmp_path, "[defaults]\nbatches = [1]\n"))
    with pytest.raises(VitdeployError, match="no suite 'ort' in m.toml") as e:
        plan.expand(write(tmp_path, TINY), suites=["ort"])
    assert e.value.hint == "did you mean 'ort-cpu'?"


def test_cli_refuses_before_running(cli_run, tmp_path, monkeypatch):
    r = cli_run("matrix", str(tmp_path / "nope.toml"))
    assert r.exit_code == 2 and "matrix file" in r.output and "does not exist" in r.output
    r = cli_run("matrix", str(SHIPPED), "--suite", "trtt", "-o", str(tmp_path / "o"))
    assert r.exit_code == 2 and "did you mean 'trt'?" in r.output and not (tmp_path / "o").exists()
    pytest.importorskip("ray")
    from vitdeploy.matrix.local_cluster import free_ports

    port = free_ports(1)[0]  # nothing listens there: one line at once, not minutes of ray.init retries
    r = cli_run("matrix", str(SHIPPED), "--suite", "ort-cpu", "--ray", f"127.0.0.1:{port}", "-o", str(tmp_path / "o"))
    assert r.exit_code == 2 and f"cannot reach the Ray cluster at 127.0.0.1:{port}" in r.output
    assert not (tmp_path / "o").exists()
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    r = cli_run("matrix", str(SHIPPED), "--ray", "auto", "-o", str(tmp_path / "o"))
    assert r.exit_code == 2
    assert "--ray needs Ray, which is not installed here (install it with: pip install 'vitdeploy[cluster]')" in r.output
    assert not (tmp_path / "o").exists()


def test_dry_run_prints_every_command(cli_run, tmp_path):
    r = cli_run("matrix", str(SHIPPED), "--dry-run", "--suite", "ort-cpu", "-o", str(tmp_path / "o"))
    assert r.exit_code == 0, r.output
    assert "# prepare vit_t_fp32_b1-8-8_" in r.output and "1 cell uses it" in r.output
    assert "vitdeploy export --model deit_t --dynamic-batch 1:8:8 -o WORK/prepare/deit_t_fp32_b1-8-8_" in r.output
    assert "# ort-cpu/vit_t/fp32@local" in r.output
    assert "vitdeploy bench WORK/prepare/vit_t_fp32_b1-8-8_" in r.output and "--backend ort --device cpu" in r.output
    assert not (tmp_path / "o").exists()  # nothing ran, nothing was written


def test_offers_matches_resources_and_labels():
    node = {"resources": {"CPU": 8.0, "GPU": 2.0, "accelerator_type:H100": 1.0, "jetson_orin": 0.0},
            "labels": {"zone": "a"}}
    assert offers(node, plan.DeviceType("h100", num_gpus=1, accelerator_type="H100"))
    assert not offers(node, plan.DeviceType("a100", num_gpus=1, accelerator_type="A100"))
    assert not offers(node, plan.DeviceType("orin", resources=(("jetson_orin", 1.0),)))
    assert not offers(node, plan.DeviceType("big", num_cpus=16))
    assert offers(node, plan.DeviceType("za", labels=(("zone", "a"),)))
    assert not offers(node, plan.DeviceType("zb", labels=(("zone", "b"),)))


def test_materialize_moves_a_prepared_artifact_to_another_node(tmp_path):
    src = tmp_path / "nodeA" / "prepare" / "p1"
    (src / ".vitdeploy" / "steps").mkdir(parents=True)
    (src / "model.onnx").write_bytes(b"onnx bytes")
    (src / "manifest.json").write_text("{}")
    (src / ".vitdeploy" / "steps" / "export.json").write_text('{"key": "k"}')
    (src / ".model.onnx.123.tmp").write_bytes(b"half")  # a temporary file is never shipped
    files = execute._files(src)
    assert sorted(files) == [".vitdeploy/steps/export.json", "manifest.json", "model.onnx"]
    from vitdeploy.artifact import sha256_file

    digests = {r: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for r, p in files.items()}
    payload = {"id": "p1", "dir": str(src), "files": digests, "data": {r: p.read_bytes() for r, p in files.items()}}
    assert execute.materialize(payload, tmp_path / "nodeB") == src  # the same disk: used where it is
    payload["dir"] = str(tmp_path / "elsewhere" / "p1")  # another node's disk
    got = execute.materialize(payload, tmp_path / "nodeB")
    assert got == tmp_path / "nodeB" / "prepare" / "p1"
    assert (got / ".vitdeploy" / "steps" / "export.json").read_text() == '{"key": "k"}'
    assert execute._intact(got, digests)
    (got / "model.onnx").write_bytes(b"corrupted")  # a stale or damaged copy is replaced
    assert execute.materialize(payload, tmp_path / "nodeB") == got and (got / "model.onnx").read_bytes() == b"onnx bytes"
    del payload["data"]
    (got / "model.onnx").unlink()
    with pytest.raises(FileNotFoundError, match="not on this node"):
        execute.materialize(payload, tmp_path / "nodeB")


def _run(node=None, device="cpu"):
    rec = batch_record(1, [1.0, 1.1, 0.9, 1.0], [], {"used": False}, device)
    from bench_fixtures import identity

    run = {"model": "vit_t", "artifact": None, "backend": "ort", "device": device, "precision": "fp32",
           "mode": "compute", "settings": Settings(0, 0.1, 3).to_dict(), "timing": {}, "results": [rec],
           "identity": identity(), "warnings": [], "skipped": [], "accuracy": None, "interrupted": False}
    if node:
        run["node"] = node
        run["environment"] = {"cpu": {"model": f"cpu of {node['hostname']}"}}
    return run


def test_node_field_in_bench_runs(tmp_path):
    a = {"id": "n" * 56, "hostname": "gpu-a", "ip": "10.0.0.1", "device_type": "devtype_a"}
    b = {"id": "m" * 56, "hostname": "gpu-b", "ip": "10.0.0.2", "device_type": "devtype_b"}
    doc = schema.new_document({"cpu": {"model": "driver cpu"}}, [_run(a), _run(b), _run()])
    schema.validate(doc)
    keys = [schema.run_key(r) for r in doc["runs"]]
    assert [k[3] for k in keys] == ["cpu@devtype_a", "cpu@devtype_b", "cpu"] and len(set(keys)) == 3
    assert schema.run_environment(doc, doc["runs"][1])["cpu"]["model"] == "cpu of gpu-b"
    assert schema.run_environment(doc, doc["runs"][2])["cpu"]["model"] == "driver cpu"
    from vitdeploy.bench import compare, report

    cmp = compare.compare(doc, doc)  # both device types pair up with themselves, neither overwrites the other
    assert sorted({r.config for r in cmp.rows}) == ["ort/fp32 cpu", "ort/fp32 cpu@devtype_a", "ort/fp32 cpu@devtype_b"]
    assert cmp.devices[0] == "cpu of gpu-a, cpu of gpu-b, driver cpu"
    entries = report.entries([("m", doc)])
    assert [e.device for e in entries] == ["cpu of gpu-a", "cpu of gpu-b", "driver cpu"]
    bad = json.loads(json.dumps(doc))
    del bad["runs"][0]["node"]["hostname"]
    with pytest.raises(VitdeployError, match=r"runs\[0\]\.node: has no 'hostname'"):
        schema.validate(bad)
    bad = json.loads(json.dumps(doc))
    bad["runs"][1]["node"]["id"] = 7
    with pytest.raises(VitdeployError, match=r"runs\[1\]\.node\.id: must be a string or null"):
        schema.validate(bad)


def test_resume_skips_only_complete_cells_of_the_same_spec(tmp_path):
    p = plan.expand(write(tmp_path, TINY))
    cell = p.cells[0]
    store = Store(tmp_path / "out", p)
    assert store.finished_before(cell) is None
    doc = schema.new_document({"cpu": {}}, [_run({"id": None, "hostname": "h", "device_type": "devtype_a"})])
    rec = {"id": cell.id, "status": "done", "node": {"hostname": "h"}, "seconds": 1.0, "plan": None,
           "files": {"bench.json": json.dumps(doc).encode(), "bench.log": b"ok\n"}}
    store.save_cell(cell, rec, attempts=1)
    d = store.cell_dir(cell)
    assert sorted(x.name for x in d.iterdir()) == ["bench.json", "bench.log", "cell.json"]
    assert store.finished_before(cell)["attempts"] == 1
    store.cells[cell.id]["status"] = "resumed"
    assert store.merged()["runs"][0]["node"]["hostname"] == "h"
    (d / "bench.json").write_text("{")  # damaged result: rerun
    assert store.finished_before(cell) is None
    store.save_cell(cell, {**rec, "status": "failed", "files": {"bench.log": b"boom\n"}, "reason": "bench failed"})
    assert store.finished_before(cell) is None and not (d / "bench.json").exists()  # a failed cell never looks done
    store.save_cell(cell, rec)
    changed = plan.expand(write(tmp_path, TINY.replace("batches = [1, 2]", "batches = [1]"))).cells[0]
    assert changed.id == cell.id and changed.spec != cell.spec
    assert store.finished_before(changed) is None  # other settings: measured again


def test_plans_come_back_up_to_the_limit(tmp_path):
    art = tmp_path / "artifact"
    art.mkdir()
    assert execute.collect_plan(art, {"hostname": "h"}, 10, {}) is None
    (art / "model.plan").write_bytes(b"x" * 100)
    files: dict = {}
    small = execute.collect_plan(art, {"hostname": "h"}, 100, files)
    assert small["fetched"] and files == {"model.plan": b"x" * 100} and small["bytes"] == 100
    files = {}
    big = execute.collect_plan(art, {"hostname": "gpu-7"}, 99, files)
    assert not big["fetched"] and files == {} and big["path"] == str(art / "model.plan") and big["node"] == "gpu-7"
    assert big["sha256"] == small["sha256"] and len(big["sha256"]) == 64


def test_progress_table_counts_cells_per_device_type(tmp_path):
    from rich.console import Console

    from vitdeploy.matrix.progress import Board

    p = plan.expand(write(tmp_path, TINY.replace('devices = ["devtype_a"]', 'devices = ["devtype_a", "cpu"]')))
    board = Board(p, p.cells, list(p.prepares), label="test")
    a, c = p.cells
    board.prepare_started(a.prepare, "node-1")
    board.started(a.id, "node-1")
    board.started(a.id, "node-2")  # a second start of the same cell is a retry
    assert board.attempts[a.id] == 2
    board.finished(a.id, {"status": "done", "seconds": 1.0})
    board.finished(c.id, {"status": "failed", "reason": "boom", "seconds": 0.5})
    out = Console(record=True, width=150)
    out.print(board.table())
    rows = {line.split()[0]: line.split()[1:5] for line in out.export_text().splitlines()
            if line.strip().startswith(("devtype_a", "cpu", "prepare"))}
    assert rows == {"prepare": ["0", "1", "0", "0"], "devtype_a": ["0", "0", "1", "0"], "cpu": ["0", "0", "0", "1"]}
