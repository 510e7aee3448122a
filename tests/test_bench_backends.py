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
    from vitdeploy.deploy.export_flow import run_export

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


def test_accuracy_data_adds_figures(cli_run, vit_t_static, tmp_path):
    pytest.importorskip("vitdeploy.calibration.accuracy", reason="accuracy module not in this tree")
    import numpy as np

    rng = np.random.default_rng(0)
    data = tmp_path / "val.npz"
    np.savez(data, images=rng.standard_normal((6, 3, 224, 224)).astype(np.float32), labels=np.arange(6) % 3)
    out = tmp_path / "acc.json"
    res = cli_run("bench", str(vit_t_static), "--accuracy-data", str(data), "--json", str(out), *FAST)
    assert res.exit_code == 0, res.output
    acc = schema.read(out)["runs"][0]["accuracy"]
    figures = acc["figures"]
    assert figures["images"] == 6 and figures["top1_agreement"] == 100.0  # final graph == plain export here
    assert acc["headline"] == {"name": "candidate_top1", "value": figures["candidate_top1"], "unit": "%"}
    assert 0.0 <= figures["candidate_top1"] <= 100.0 and acc["reference"] == acc["candidate"]


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
