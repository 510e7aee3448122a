"""`vitdeploy bench` end to end on the CPU: ORT on an exported vit_t, PyTorch eager on vit_t.

Durations are tiny; nothing here asserts speed, only that the numbers are
measured, consistent and recorded in the versioned JSON.
"""
from __future__ import annotations

import pytest

from vitdeploy.bench import schema


@pytest.fixture(scope="module")
def vit_t_static(tmp_path_factory):
    """vit_t exported with a static batch of 1 (and its manifest)."""
    from vitdeploy.deploy.export import BatchSpec
    from vitdeploy.pipeline.export import run_export

    out = tmp_path_factory.mktemp("vit_t")
    run_export("vit_t", str(out), batch=BatchSpec.static(1), exporter="torchscript")
    return out


FAST = ("--duration-s", "0.2", "--warmup-ms", "0", "--min-iters", "3", "--quiet")


def _check_result(r, batch):
    s = r["latency_ms"]
    assert r["batch"] == batch and r["iterations"] >= 3 and s["count"] == r["iterations"]
    assert 0 < s["min"] <= s["median"] <= s["p90"] <= s["p95"] <= s["p99"] <= s["max"]
    assert s["min"] <= s["mean"] <= s["max"]
    assert r["throughput_ips"] == pytest.approx(batch * 1000 / s["median"])
    assert len(r["samples_ms"]) == r["iterations"] == r["samples_total"]


def test_ort_backend_on_artifact_dir(cli_run, vit_t_static, tmp_path):
    out = tmp_path / "ort.json"
    res = cli_run("bench", str(vit_t_static), "--batch-sizes", "1,4", "--json", str(out), *FAST)
    assert res.exit_code == 0, res.output
    assert "static batch of 1 and cannot run batch 4" in res.output
    doc = schema.read(out)
    run = doc["runs"][0]
    assert (run["model"], run["backend"], run["precision"], run["device"], run["mode"]) == ("vit_t", "ort", "fp32", "cpu", "compute")
    assert run["artifact"].endswith("model.onnx") and run["timing"]["clock"] == "perf_counter"
    assert [r["batch"] for r in run["results"]] == [1]
    _check_result(run["results"][0], 1)
    assert run["skipped"] == [{"batch": 4, "reason": "the graph has a static batch of 1 and cannot run batch 4 (export with --dynamic-batch)"}]
    env = doc["environment"]
    assert env["versions"]["onnxruntime"] and env["cpu"]["cores"] >= 1


def test_ort_static_batch_only_other_batches_is_an_error(cli_run, vit_t_static, tmp_path):
    out = tmp_path / "b.json"
    res = cli_run("bench", str(vit_t_static / "model.onnx"), "--batch-sizes", "2", "--json", str(out), *FAST)
    assert res.exit_code == 2
    assert "no batch size could be measured" in res.output and "static batch of 1" in res.output
    assert not out.exists()  # a failed run leaves no result file for 'compare' to pick up


def test_torch_backend_on_vit_t(cli_run, tmp_path):
    out = tmp_path / "torch.json"
    res = cli_run("bench", "--model", "vit_t", "--backend", "torch", "--batch-sizes", "1", "--json", str(out), *FAST)
    assert res.exit_code == 0, res.output
    run = schema.read(out)["runs"][0]
    assert (run["model"], run["backend"], run["device"]) == ("vit_t", "torch", "cpu")
    _check_result(run["results"][0], 1)
    assert run["results"][0]["cuda_graph"] == {"used": False}


def test_two_backends_into_one_result_and_report(cli_run, vit_t_static, tmp_path):
    """ORT on the artifact's graph, then PyTorch on the model the manifest names, in one file."""
    out = tmp_path / "both.json"
    res = cli_run("bench", str(vit_t_static), "--backend", "ort,torch", "--batch-sizes", "1", "--json", str(out), *FAST)
    assert res.exit_code == 0, res.output
    runs = schema.read(out)["runs"]
    assert [(r["backend"], r["model"], r["precision"]) for r in runs] == [("ort", "vit_t", "fp32"), ("torch", "vit_t", "fp32")]
    for r in runs:
        _check_result(r["results"][0], 1)
    rep = tmp_path / "rep"
    assert cli_run("report", str(out), "-o", str(rep)).exit_code == 0
    assert "| vit_t | torch/fp32 cpu |" in (rep / "README.md").read_text()


@pytest.mark.parametrize("args, message", [
    (("--model", "vit_t", "--backend", "trt"), "the trt backend needs TensorRT, which is not installed here"),
    ((), "nothing to benchmark"),
    (("--model", "vit_t", "--precision", "fp16"), "FP16 on the CPU"),
    (("--model", "vit_t", "--batch-sizes", "1,x"), "is not a comma-separated list"),
    (("--model", "nope"), "unknown model 'nope'"),
    (("missing.onnx",), "does not exist"),
    (("--model", "vit_t", "--backend", "torch,onnx"), "unknown backend 'onnx'"),
])
def test_bench_usage_errors(cli_run, args, message):
    res = cli_run("bench", *args, *FAST)
    assert res.exit_code == 2
    assert message in res.output and "Traceback" not in res.output


def test_trt_backend_without_tensorrt_says_so(cli_run, vit_t_static, tmp_path):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is importable here")
    except Exception:
        pass
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"not an engine")
    res = cli_run("bench", str(plan), *FAST)
    assert res.exit_code == 2 and "TensorRT is not installed here" in res.output
    res = cli_run("bench", str(vit_t_static), "--backend", "trt", *FAST)
    assert res.exit_code == 2 and "needs a TensorRT engine" in res.output


def test_run_records_what_it_measured(cli_run, vit_t_static, tmp_path):
    """Issue 15 item 7: the identity `compare` pairs runs on (it used to pair on the alias alone)."""
    from vitdeploy.artifact import sha256_file

    out = tmp_path / "id.json"
    res = cli_run("bench", str(vit_t_static), "--threads", "2", "--json", str(out), *FAST)
    assert res.exit_code == 0, res.output
    assert "⚠ random weights: " in res.output  # export without --checkpoint: said once, on every command
    ident = schema.read(out)["runs"][0]["identity"]
    assert ident["artifact_sha256"] == sha256_file(vit_t_static / "model.onnx")
    assert ident["input"] == {"name": "input", "shape": [3, 224, 224], "dtype": "float32"}
    assert ident["batch_profile"] == {"kind": "static", "batch": 1}
    assert ident["model"] == {"alias": "vit_t", "name": "vit_tiny_patch16_224", "reduced": False}
    assert ident["weights"] == {"kind": "random", "seed": 0}
    assert ident["threads"]["intra_op"] == 2 and ident["threads"]["usable_cores"] >= 1
    assert ident["plugins"] == {"nodes": {}, "reference_executed": 0} and ident["fp16_on_cpu"] is False
    torch_out = tmp_path / "torch.json"
    assert cli_run("bench", "--model", "vit_t", "--img-size", "160", "--json", str(torch_out), *FAST).exit_code == 0
    t = schema.read(torch_out)["runs"][0]["identity"]
    assert t["input"]["shape"] == [3, 160, 160] and t["artifact_sha256"] is None and t["weights"]["kind"] == "random"


@pytest.fixture(scope="module")
def vit_t_fp16_dir(vit_t_static, tmp_path_factory):
    """A build-like directory: the plain export plus its FP16 conversion as the final graph."""
    import json
    import shutil

    import onnx

    from vitdeploy.calibration.precision import convert_fp16

    d = tmp_path_factory.mktemp("vit_t_fp16")
    shutil.copy(vit_t_static / "model.onnx", d / "model.onnx")
    fp16, _ = convert_fp16(onnx.load(str(d / "model.onnx")), keep_io_fp32=True)
    onnx.save(fp16, str(d / "model.fp16.onnx"))
    m = json.loads((vit_t_static / "manifest.json").read_text())
    m["files"] = {"onnx_exported": {"path": "model.onnx"}, "onnx": {"path": "model.fp16.onnx"}}
    m["precision"] = {"applied": "fp16"}
    (d / "manifest.json").write_text(json.dumps(m))
    return d


def test_accuracy_data_never_compares_a_file_with_itself(cli_run, vit_t_static, vit_t_fp16_dir, tmp_path):
    """Issue 15 item 1: `bench DIR/model.int8.onnx --accuracy-data` read 100% (the file against itself)
    while the directory read 94.44%; now both compare with the plain export and agree."""
    pytest.importorskip("vitdeploy.calibration.accuracy", reason="accuracy module not in this tree")
    import numpy as np

    rng = np.random.default_rng(0)
    data = tmp_path / "val.npz"
    np.savez(data, images=rng.standard_normal((6, 3, 224, 224)).astype(np.float32))
    runs = {}
    for name, target in (("file", vit_t_fp16_dir / "model.fp16.onnx"), ("dir", vit_t_fp16_dir)):
        out = tmp_path / f"{name}.json"
        res = cli_run("bench", str(target), "--accuracy-data", str(data), "--json", str(out), *FAST)
        assert res.exit_code == 0, res.output
        runs[name] = schema.read(out)["runs"][0]
    for run in runs.values():
        acc = run["accuracy"]
        assert acc["reference"].endswith("model.onnx") and acc["candidate"].endswith("model.fp16.onnx")
        assert acc["figures"]["max_abs_error"] > 0  # two different graphs really ran
        assert acc["headline"]["name"] == "top1_agreement" and acc["data_role"] == "held-out"
        assert acc["headline"]["label"] == "top-1 agreement vs the FP32 export, held-out data"
        assert run["precision"] == "fp16"  # one label from the graph, file or directory
        assert "fp16_on_cpu" in run["identity"] and run["identity"]["fp16_on_cpu"] is True
        assert any("FP16 graph on the CPU" in w for w in run["warnings"])
    assert runs["file"]["accuracy"]["figures"] == runs["dir"]["accuracy"]["figures"]
    # random weights: no ✔ for the figure, a neutral mark instead
    res = cli_run("bench", str(vit_t_fp16_dir), "--accuracy-data", str(data), *FAST)
    line = next(ln for ln in res.output.splitlines() if ln.split()[1:2] == ["accuracy"] and not ln.startswith("…"))
    assert line.startswith("•") and "random weights: not judged" in line
    # The plain export alone: no reference, so labels only, or a one-line refusal without labels.
    res = cli_run("bench", str(vit_t_static / "model.onnx"), "--accuracy-data", str(data), *FAST)
    assert res.exit_code == 2 and "no plain export beside it to compare with" in res.output
    np.savez(tmp_path / "lab.npz", images=np.load(data)["images"], labels=np.arange(6) % 3)
    out = tmp_path / "lab.json"
    assert cli_run("bench", str(vit_t_static), "--accuracy-data", str(tmp_path / "lab.npz"), "--json", str(out), *FAST).exit_code == 0
    acc = schema.read(out)["runs"][0]["accuracy"]
    assert acc["reference"] is None and "top1_agreement" not in acc["figures"]
    assert acc["headline"]["name"] == "candidate_top1"


def test_accuracy_data_needs_an_onnx_artifact(cli_run, tmp_path):
    pytest.importorskip("vitdeploy.calibration.accuracy", reason="accuracy module not in this tree")
    res = cli_run("bench", "--model", "vit_t", "--accuracy-data", str(tmp_path), *FAST)
    assert res.exit_code == 2 and "needs an artifact with an ONNX graph" in res.output


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["compute", "end-to-end"])
def test_torch_backend_on_cuda_replays_a_graph(cli_run, tmp_path, mode):
    out = tmp_path / "cuda.json"
    res = cli_run("bench", "--model", "vit_t", "--device", "cuda", "--precision", "fp16", "--batch-sizes", "1,8",
                  "--mode", mode, "--json", str(out), *FAST)
    assert res.exit_code == 0, res.output
    doc = schema.read(out)
    run = doc["runs"][0]
    assert run["timing"]["clock"] == "cuda_events" and doc["environment"]["gpu"]["name"]
    for r in run["results"]:
        assert r["cuda_graph"] == {"used": True}, r["cuda_graph"]
        assert r["host_enqueue_ms"]["median"] > 0
        _check_result(r, r["batch"])


def test_reference_executed_plugins_are_warned_and_never_compared_with_a_real_run(cli_run, tmp_path):
    """Issue 15 item 10: a rewritten Swin timed on the plugins' CPU Python reference (347 ms vs 81 ms) was
    recorded without a word and compared with the plain export as if it were a real plugin run."""
    import timm
    import torch

    from vitdeploy.artifact import atomic_write_json, new_manifest, sha256_file
    from vitdeploy.deploy.export import BatchSpec, export_onnx

    torch.manual_seed(0)
    model = timm.create_model("swin_tiny_patch4_window7_224", depths=(1, 1, 2, 1), embed_dim=32,
                              num_heads=(1, 2, 4, 8), num_classes=10).eval()
    export_onnx(model, torch.randn(1, 3, 224, 224), tmp_path / "model.onnx", exporter="torchscript", batch=BatchSpec(1, 1, 1))
    m = new_manifest()
    m["model"] = {"alias": "swin_t", "family": "swin", "weights": "checkpoint", "checkpoint": {"sha256": "d" * 64}}
    m["files"] = {"onnx": {"path": "model.onnx", "sha256": sha256_file(tmp_path / "model.onnx")}}
    atomic_write_json(tmp_path / "manifest.json", m)
    assert cli_run("rewrite", str(tmp_path / "model.onnx"), "-o", str(tmp_path / "model.rewritten.onnx")).exit_code == 0
    outs = {}
    for name in ("model", "model.rewritten"):
        outs[name] = tmp_path / f"{name}.json"
        res = cli_run("bench", str(tmp_path / f"{name}.onnx"), "--json", str(outs[name]), *FAST)
        assert res.exit_code == 0, res.output
    run = schema.read(outs["model.rewritten"])["runs"][0]
    assert run["identity"]["plugins"] == {"nodes": {"WindowAttention": 5}, "reference_executed": 5}
    assert "5 plugin nodes (WindowAttention×5) run on ONNX Runtime's CPU Python reference" in run["warnings"][0]
    assert schema.read(outs["model"])["runs"][0]["warnings"] == []
    res = cli_run("compare", str(outs["model"]), str(outs["model.rewritten"]))
    assert res.exit_code == 2, res.output
    assert "swin_t ort/fp32 (cpu, compute): plugin nodes on the CPU reference differs (baseline no, candidate yes)" in res.output
