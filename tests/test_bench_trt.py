"""The TensorRT backend on a real engine (needs TensorRT and a GPU; skipped elsewhere with the reason)."""
from __future__ import annotations

import pytest

from vitdeploy.bench import schema

pytestmark = [pytest.mark.trt, pytest.mark.gpu]


@pytest.fixture(scope="module")
def vit_t_engine(tmp_path_factory):
    """vit_t with a dynamic batch 1..4, built into an FP32 engine with the plain TensorRT builder."""
    import tensorrt as trt

    from vitdeploy.deploy.export import BatchSpec
    from vitdeploy.pipeline.export import run_export

    out = tmp_path_factory.mktemp("vit_t_trt")
    run_export("vit_t", str(out), batch=BatchSpec(1, 2, 4), exporter="torchscript")
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse_from_file(str(out / "model.onnx")), parser.get_error(0)
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    name = network.get_input(0).name
    profile.set_shape(name, (1, 3, 224, 224), (2, 3, 224, 224), (4, 3, 224, 224))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    path = tmp_path_factory.mktemp("plan") / "model.plan"  # no manifest beside it: nothing to check against
    path.write_bytes(bytes(plan))
    return path


@pytest.mark.parametrize("mode", ["compute", "end-to-end"])
def test_trt_backend_measures_with_cuda_events(cli_run, vit_t_engine, tmp_path, mode):
    out = tmp_path / "trt.json"
    res = cli_run("bench", str(vit_t_engine), "--batch-sizes", "1,4,8", "--mode", mode, "--duration-s", "0.3",
                  "--warmup-ms", "50", "--min-iters", "10", "--json", str(out), "--quiet")
    assert res.exit_code == 0, res.output
    run = schema.read(out)["runs"][0]
    assert run["backend"] == "trt" and run["device"] == "cuda" and run["timing"]["clock"] == "cuda_events"
    assert [r["batch"] for r in run["results"]] == [1, 4]
    assert "outside the engine's optimization profile (1..4)" in run["skipped"][0]["reason"]
    for r in run["results"]:
        s = r["latency_ms"]
        assert 0 < s["min"] <= s["median"] <= s["p99"] <= s["max"] and r["iterations"] >= 10
        assert r["host_enqueue_ms"]["median"] > 0
        assert "used" in r["cuda_graph"]
    assert "gpu" in schema.read(out)["environment"]
