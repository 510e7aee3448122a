"""Issue 5: `vitdeploy infer` on ONNX artifacts with a real photo; preprocessing from the manifest."""
import json

import numpy as np
import pytest

from vitdeploy.errors import EXIT_USAGE


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    from PIL import Image
    from skimage import data

    p = tmp_path_factory.mktemp("img") / "chelsea.png"
    Image.fromarray(data.chelsea()).save(p)  # scikit-image's sample photo of a cat, 451x300
    return p


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """vit_t at 64x64 (same graph structure, cheap), exported and verified, with its manifest."""
    from vitdeploy.pipeline.export import run_export

    out = tmp_path_factory.mktemp("vit64")
    run_export("vit_t", str(out), img_size=(64, 64), exporter="torchscript")
    return out


def test_infer_onnx_topk_matches_onnxruntime(cli_run, artifact, photo):
    from vitdeploy.deploy.preprocess import load_image
    from vitdeploy.onnxrt import session

    res = cli_run("infer", str(artifact / "model.onnx"), "--image", str(photo), "--topk", "3", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)  # banners go to stderr
    assert out["runtime"] == "ONNX Runtime" and len(out["topk"]) == 3
    # The same numbers by hand: manifest preprocessing, ORT, softmax.
    pp = json.loads((artifact / "manifest.json").read_text())["preprocessing"]
    x, size = load_image(photo, pp)
    assert x.shape == (1, 3, 64, 64) and size == (451, 300)
    logits = session(artifact / "model.onnx").run(None, {"input": x})[0][0].astype(np.float64)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    want = np.argsort(-p)[:3]
    assert [r["class"] for r in out["topk"]] == want.tolist()
    assert [r["probability"] for r in out["topk"]] == pytest.approx(p[want].tolist(), rel=1e-5)
    assert out["topk"][0]["name"]  # ImageNet class names for a 1000-class timm model
    assert out["weights"] == {"kind": "random", "seed": 0} and out["input_shape"] == [1, 3, 64, 64]
    assert set(out["latency_ms"]) == {"preprocess", "load", "inference", "postprocess"}
    assert all(v >= 0 for v in out["latency_ms"].values())


def test_infer_table_on_a_build_directory(cli_run, artifact, photo):
    res = cli_run("infer", str(artifact), "--image", str(photo))
    assert res.exit_code == 0, res.output
    assert "ONNX Runtime" in res.output and "probability" in res.output
    assert "random weights" in res.output  # honest about what the classes mean
    import re

    assert re.search(r"^Speed: [\d.]+ ms preprocess, [\d.]+ ms inference, [\d.]+ ms postprocess per image at shape "
                     r"\(1, 3, 64, 64\)", res.output, re.M)


def test_preprocessing_equals_timm_eval_transform(photo):
    """Our image path is timm's eval transform: resize by crop_pct, center crop, normalise."""
    from PIL import Image
    from timm.data import create_transform

    from vitdeploy.deploy.preprocess import load_image

    pp = {"input_size": [3, 224, 224], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
          "interpolation": "bicubic", "crop_pct": 0.875, "crop_mode": "center"}
    x, _ = load_image(photo, pp)
    ref = create_transform(input_size=(3, 224, 224), interpolation="bicubic", crop_pct=0.875,
                           mean=pp["mean"], std=pp["std"])(Image.open(photo).convert("RGB")).numpy()
    np.testing.assert_allclose(x[0], ref, atol=1e-6)


def test_infer_bad_inputs(cli_run, artifact, photo, tmp_path):
    bad = tmp_path / "not_an_image.png"
    bad.write_bytes(b"nope")
    res = cli_run("infer", str(artifact / "model.onnx"), "--image", str(bad))
    assert res.exit_code == EXIT_USAGE and "cannot read image not_an_image.png" in res.output
    res = cli_run("infer", str(tmp_path / "missing.onnx"), "--image", str(photo))
    assert res.exit_code == EXIT_USAGE and "does not exist" in res.output
    res = cli_run("infer", str(artifact / "model.onnx"), "--image", str(photo), "--topk", "0")
    assert res.exit_code == EXIT_USAGE and "--topk must be at least 1" in res.output
    res = cli_run("infer", str(artifact / "model.onnx"), "--image", str(tmp_path))
    assert res.exit_code == EXIT_USAGE and "is a directory" in res.output
    plan = tmp_path / "garbage.plan"  # an engine without its manifest: say so, not "input size unknown"
    plan.write_bytes(bytes(range(256)) * 4)
    res = cli_run("infer", str(plan), "--image", str(photo))
    assert res.exit_code == EXIT_USAGE and "no manifest.json next to" in res.output


def test_infer_engine_without_tensorrt_names_the_problem(cli_run, artifact, photo, tmp_path):
    """A plan file whose manifest is intact but TensorRT absent: refused by the manifest check."""
    from vitdeploy.artifact import sha256_file
    from vitdeploy.machine import tensorrt_version

    if tensorrt_version() is not None:
        pytest.skip("TensorRT is installed here: tests/test_trt_engine.py covers real engines")
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"\x00" * 64)
    entry = {"path": "model.plan", "bytes": 64, "sha256": sha256_file(plan)}
    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest["files"] = {"engine": entry}
    manifest["engine"] = {"tensorrt": "10.9.0.34", "gpu": {"name": "NVIDIA H100", "compute_capability": "9.0"}, "plan": entry}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    res = cli_run("infer", str(plan), "--image", str(photo))
    assert res.exit_code == EXIT_USAGE
    assert "engine cannot run here" in res.output and "TensorRT is not importable here" in res.output


def test_infer_detections_in_image_pixels(cli_run, photo, tmp_path):
    """A graph with Deformable DETR's outputs (fixed values): boxes come back scaled to the photo."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    logits = np.full((1, 3, 4), -6.0, np.float32)
    logits[0, 1, 2] = 2.0  # query 1, class 2: sigmoid 0.881
    logits[0, 0, 0] = 0.5  # query 0, class 0: sigmoid 0.622
    boxes = np.array([[[0.5, 0.5, 0.2, 0.4], [0.25, 0.5, 0.5, 1.0], [0.5, 0.5, 1.0, 1.0]]], np.float32)
    zero = helper.make_node("ReduceMean", ["input"], ["m"], keepdims=0)  # ties the outputs to the input
    nodes = [zero, helper.make_node("Mul", ["m", "z"], ["mz"]),
             helper.make_node("Add", ["L", "mz"], ["logits"]), helper.make_node("Add", ["B", "mz"], ["pred_boxes"])]
    graph = helper.make_graph(
        nodes, "detr_like",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 4]),
         helper.make_tensor_value_info("pred_boxes", TensorProto.FLOAT, [1, 3, 4])],
        [numpy_helper.from_array(logits, "L"), numpy_helper.from_array(boxes, "B"),
         numpy_helper.from_array(np.zeros((), np.float32), "z")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(tmp_path / "model.onnx"))
    (tmp_path / "manifest.json").write_text(json.dumps({"schema": 1, "model": {"family": "deformable_detr"}, "preprocessing": {
        "input_size": [3, 32, 32], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
        "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "squash"}}))
    res = cli_run("infer", str(tmp_path / "model.onnx"), "--image", str(photo), "--threshold", "0.5", "--json")
    assert res.exit_code == 0, res.output
    dets = json.loads(res.stdout)["detections"]
    assert [(d["label"], round(d["score"], 3)) for d in dets] == [(2, 0.881), (0, 0.622)]
    # photo is 451 wide, 300 high: query 1 = cx .25 cy .5 w .5 h 1 -> x 0..225.5, y 0..300
    assert dets[0]["box"] == pytest.approx([0.0, 0.0, 225.5, 300.0], abs=1e-3)
    assert dets[1]["box"] == pytest.approx([180.4, 90.0, 270.6, 210.0], abs=1e-3)


@pytest.mark.parametrize("content", [b"", b"\x08\x07garbage\xff\xfe" * 50], ids=["empty", "corrupt"])
def test_infer_unreadable_onnx_is_one_line(cli_run, photo, tmp_path, content):
    """Zero bytes parse as an empty ModelProto, garbage does not parse: both are bad input, not a traceback."""
    bad = tmp_path / "model.onnx"
    bad.write_bytes(content)
    res = cli_run("infer", str(bad), "--image", str(photo))
    assert res.exit_code == EXIT_USAGE, res.output
    assert "model.onnx is not a readable ONNX model" in res.output


def test_infer_says_which_preprocessing_it_assumed(cli_run, artifact, photo, tmp_path):
    """An ONNX imported with 'build --onnx' has a manifest but no preprocessing: say that, not 'no manifest'."""
    from vitdeploy.artifact import atomic_write_json, new_manifest, sha256_file

    (tmp_path / "model.onnx").write_bytes((artifact / "model.onnx").read_bytes())
    manifest = new_manifest()
    manifest["files"] = {"onnx": {"path": "model.onnx", "sha256": sha256_file(tmp_path / "model.onnx")}}
    atomic_write_json(tmp_path / "manifest.json", manifest)
    res = cli_run("infer", str(tmp_path), "--image", str(photo))
    assert res.exit_code == 0, res.output
    assert "the manifest records no preprocessing: ImageNet preprocessing assumed" in res.output
    (tmp_path / "manifest.json").unlink()
    res = cli_run("infer", str(tmp_path / "model.onnx"), "--image", str(photo))
    assert res.exit_code == 0 and "no manifest: ImageNet preprocessing assumed" in res.output


def test_the_transform_is_built_once_before_the_timed_preprocessing(tmp_path, monkeypatch):
    """infer's 'Speed: ... ms preprocess' once included importing timm and torch (2.6 s for one image):
    the loader builds timm's transform up front, and each image only runs it (same numbers as load_image)."""
    import numpy as np
    from PIL import Image

    from vitdeploy.deploy import preprocess

    img = tmp_path / "x.png"
    Image.fromarray((np.arange(40 * 60 * 3) % 251).astype(np.uint8).reshape(40, 60, 3)).save(img)
    pp = {"input_size": [3, 32, 32]}
    want, size = preprocess.load_image(img, pp)
    built = []
    real = preprocess.transform
    monkeypatch.setattr(preprocess, "transform", lambda *a, **k: built.append(1) or real(*a, **k))
    load = preprocess.image_loader(pp)
    assert built == [1]
    for _ in range(2):
        x, got_size = load(img)
        assert np.array_equal(x, want) and got_size == size == (60, 40) and x.shape == (1, 3, 32, 32)
    assert built == [1]
