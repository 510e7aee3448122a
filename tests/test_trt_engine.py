"""Issue 5 on a machine with TensorRT and a GPU: engine build, run, cache, manifest refusal.

Marked `trt` and `gpu`: they skip (with the reason) where `import tensorrt` fails or there is no CUDA GPU.
"""
import json

import numpy as np
import pytest

pytestmark = [pytest.mark.trt, pytest.mark.gpu]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """vit_t at 64x64, FP32, dynamic batch 1:2:4, engine built here."""
    from vitdeploy.deploy.export import BatchSpec
    from vitdeploy.pipeline import BuildOptions, run_build

    out = tmp_path_factory.mktemp("trt_vit")
    opts = BuildOptions(out_dir=out, alias="vit_t", img_size=(64, 64), exporter="torchscript",
                        batch=BatchSpec(1, 2, 4), timing_cache=out / "timing.cache")
    return run_build(opts)


def test_engine_is_built_and_described(built):
    import tensorrt as trt

    m = built.manifest
    assert built.engine is not None and built.engine.name == "model.plan" and built.skipped_reason is None
    eng = m["engine"]
    assert eng["built"] is True and eng["tensorrt"] == trt.__version__ and eng["strongly_typed"] is True
    assert eng["gpu"]["compute_capability"]
    assert eng["plan"]["bytes"] == built.engine.stat().st_size
    assert m["files"]["engine"]["sha256"] == eng["plan"]["sha256"]
    assert eng["profiles"][0]["input"]["max"] == [4, 3, 64, 64]
    assert (built.out_dir / "timing.cache").stat().st_size > 0


def test_engine_matches_onnxruntime_at_two_batch_sizes(built):
    import vitdeploy
    from vitdeploy.onnxrt import session
    from vitdeploy.parity import random_images

    sess = session(built.final_onnx)
    with vitdeploy.Engine(built.out_dir) as engine:
        for b in (1, 3):
            x = random_images(b, (64, 64), seed=b)
            got = engine(x)["logits"]
            ref = sess.run(None, {"input": x})[0]
            assert got.shape == ref.shape
            np.testing.assert_allclose(got, ref, atol=2e-3, rtol=1e-3)


def test_engine_buffers_are_reused_and_torch_in_gives_torch_out(built):
    import torch

    import vitdeploy

    with vitdeploy.Engine(built.engine) as engine:
        before = dict(engine._buffers)
        a = engine(torch.zeros(2, 3, 64, 64))["logits"]
        b = engine(torch.zeros(2, 3, 64, 64, device="cuda"))["logits"]
        assert isinstance(a, torch.Tensor) and a.shape == (2, 1000)
        torch.testing.assert_close(a, b)
        assert engine._buffers == before


def test_rerun_reuses_the_engine(built):
    from vitdeploy.deploy.export import BatchSpec
    from vitdeploy.pipeline import BuildOptions, run_build

    again = run_build(BuildOptions(out_dir=built.out_dir, alias="vit_t", img_size=(64, 64), exporter="torchscript",
                                   batch=BatchSpec(1, 2, 4), timing_cache=built.out_dir / "timing.cache"))
    assert again.manifest["steps"] == built.manifest["steps"]
    assert again.manifest["engine"]["plan"]["sha256"] == built.manifest["engine"]["plan"]["sha256"]


def test_manifest_from_another_tensorrt_is_refused(built, tmp_path):
    import shutil

    import vitdeploy
    from vitdeploy.errors import VitdeployError

    d = tmp_path / "copy"
    shutil.copytree(built.out_dir, d)
    m = json.loads((d / "manifest.json").read_text())
    m["engine"]["tensorrt"] = "8.6.1.6"
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(VitdeployError, match="TensorRT .* here, engine built with TensorRT 8.6.1.6"):
        vitdeploy.Engine(d)


def test_garbage_plan_without_checks_is_a_clear_error(tmp_path):
    import vitdeploy
    from vitdeploy.errors import VitdeployError

    p = tmp_path / "model.plan"
    p.write_bytes(b"ftrt" + bytes(range(256)) * 8)
    with pytest.raises(VitdeployError, match="could not deserialize"):
        vitdeploy.Engine(p, check=False)


def test_infer_with_the_engine(built, cli_run, tmp_path):
    from PIL import Image
    from skimage import data

    img = tmp_path / "cat.png"
    Image.fromarray(data.chelsea()).save(img)
    res = cli_run("infer", str(built.engine), "--image", str(img), "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["runtime"] == "TensorRT" and len(out["topk"]) == 5
