"""Accuracy comparison: the figures on known logits, and the `accuracy` command end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest

from vitdeploy.calibration.accuracy import accuracy_points, compare_logits
from vitdeploy.errors import VitdeployError


def test_compare_logits_figures():
    ref = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 5.0], [0.0, 1.0, 0.5]], np.float32)
    cand = ref.copy()
    cand[3] = [0.0, 0.4, 0.5]  # flips the top-1 of image 3 (1 -> 2)
    labels = np.array([0, 1, 2, 0])
    r = compare_logits(ref, cand, labels)
    assert r["images"] == 4
    assert r["top1_agreement"] == pytest.approx(75.0)
    assert r["reference_top1"] == pytest.approx(75.0) and r["candidate_top1"] == pytest.approx(75.0)
    assert r["top1_drop"] == pytest.approx(0.0)
    assert r["max_abs_error"] == pytest.approx(0.6)
    cos3 = (0.0 * 0 + 1 * 0.4 + 0.5 * 0.5) / (np.sqrt(1.25) * np.sqrt(0.41))
    assert r["cosine_min"] == pytest.approx(cos3, rel=1e-6)
    assert r["cosine_mean"] == pytest.approx((3 + cos3) / 4, rel=1e-6)
    # top-5 with 3 classes: every label is in the top-3
    assert r["reference_top5"] == 100.0
    assert accuracy_points(ref, np.array([1, 1, 2, 1]), k=2) == pytest.approx(100.0)
    with pytest.raises(VitdeployError, match="2 labels for 4 images"):
        compare_logits(ref, cand, labels[:2])
    with pytest.raises(VitdeployError, match="differ in shape"):
        compare_logits(ref, cand[:, :2])
    bad = cand.copy()
    bad[0, 0] = np.nan
    assert compare_logits(ref, bad)["finite"] is False


def test_cli_accuracy(tmp_path, capsys):
    import onnx
    import torch
    from timm.models.vision_transformer import VisionTransformer
    from test_precision import run_cli

    from vitdeploy.calibration.precision import convert_fp16
    from vitdeploy.deploy.export import BatchSpec, export_onnx

    torch.manual_seed(0)
    model = VisionTransformer(img_size=16, patch_size=8, num_classes=4, embed_dim=16, depth=1, num_heads=2).eval()
    ref = tmp_path / "ref.onnx"
    export_onnx(model, torch.randn(2, 3, 16, 16), ref, batch=BatchSpec.parse("1:2:8"), exporter="torchscript")
    fp16, _ = convert_fp16(onnx.load(str(ref)))
    cand = tmp_path / "cand.onnx"
    onnx.save(fp16, str(cand))
    x = np.random.default_rng(0).standard_normal((10, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).argmax(1).numpy()  # labels = FP32 predictions: reference top-1 is 100 %
    np.savez(tmp_path / "val.npz", images=x, labels=y)
    out = tmp_path / "new_dir" / "acc.json"  # --json into a folder that does not exist yet
    code, stdout, err = run_cli(["accuracy", str(ref), str(cand), "--accuracy-data", str(tmp_path / "val.npz"), "--run-batch", "4",
                                 "--json", str(out)], capsys)
    assert code == 0, err
    assert "top-1 agreement" in stdout and "top-5 drop" in stdout
    res = json.loads(out.read_text())
    assert res["images"] == 10 and res["reference_top1"] == 100.0
    assert res["cosine_min"] > 0.999 and res["top1_agreement"] >= 90.0
    # A folder of photos is streamed (decoded once for both graphs), unreadable files are counted.
    from PIL import Image
    from skimage import data as samples

    photos = tmp_path / "photos" / "nested"
    photos.mkdir(parents=True)
    for name in ("astronaut", "coffee", "chelsea"):
        Image.fromarray(getattr(samples, name)()).save(photos / f"{name}.jpg")
    (photos / "broken.png").write_bytes(b"nope")
    code, stdout, err = run_cli(["accuracy", str(ref), str(cand), "--accuracy-data", str(tmp_path / "photos"), "--run-batch", "2",
                                 "--json", str(out)], capsys)
    assert code == 0, err
    assert "3 images" in stdout and "1 unreadable files skipped" in stdout
    assert json.loads(out.read_text())["images"] == 3
    np.save(tmp_path / "labels.npy", y[:5])
    code, _, err = run_cli(["accuracy", str(ref), str(cand), "--accuracy-data", str(tmp_path / "val.npz"),
                            "--labels", str(tmp_path / "labels.npy")], capsys)
    assert code == 2 and "5 labels for 10 images" in err


@pytest.mark.parametrize("content", [b"", b"\x08\x07garbage\xff\xfe" * 50], ids=["empty", "corrupt"])
def test_cli_accuracy_unreadable_onnx_is_one_line(tmp_path, capsys, content):
    from test_precision import run_cli

    bad = tmp_path / "ref.onnx"
    bad.write_bytes(content)
    np.savez(tmp_path / "val.npz", images=np.zeros((2, 3, 16, 16), np.float32))
    code, _, err = run_cli(["accuracy", str(bad), str(bad), "--accuracy-data", str(tmp_path / "val.npz")], capsys)
    assert code == 2, err
    assert err.strip().startswith("error: ref.onnx is not a readable ONNX model") and "Traceback" not in err


@pytest.fixture(scope="module")
def two_vits(tmp_path_factory):
    """REF (tiny ViT), its FP16 copy, an unrelated model with the same head (like vit_t vs swin_t), val.npz."""
    import onnx
    import torch
    from timm.models.vision_transformer import VisionTransformer

    from vitdeploy.calibration.precision import convert_fp16
    from vitdeploy.deploy.export import BatchSpec, export_onnx

    d = tmp_path_factory.mktemp("acc")
    paths = {}
    for name, seed in (("ref", 0), ("other", 7)):
        torch.manual_seed(seed)
        model = VisionTransformer(img_size=16, patch_size=8, num_classes=4, embed_dim=16, depth=1, num_heads=2).eval()
        paths[name] = d / f"{name}.onnx"
        export_onnx(model, torch.randn(2, 3, 16, 16), paths[name], batch=BatchSpec.parse("1:2:8"), exporter="torchscript")
        if name == "ref":
            x = np.random.default_rng(0).standard_normal((12, 3, 16, 16)).astype(np.float32)
            with torch.no_grad():
                y = model(torch.from_numpy(x)).argmax(1).numpy()
            np.savez(d / "val.npz", images=x, labels=y)
    fp16, _ = convert_fp16(onnx.load(str(paths["ref"])))
    paths["fp16"] = d / "fp16.onnx"
    onnx.save(fp16, str(paths["fp16"]))
    paths["val"] = d / "val.npz"
    return paths


def test_accuracy_gates_exit_1_like_polygraphy_check(two_vits, tmp_path, capsys):
    """Issue 15 item 5: two unrelated models gave "top-1 agreement 0.00 %" and exit 0."""
    from test_precision import run_cli

    p = two_vits
    code, out, err = run_cli(["accuracy", str(p["ref"]), str(p["other"]), "--accuracy-data", str(p["val"]),
                              "--min-agreement", "95", "--json", str(tmp_path / "a.json")], capsys)
    assert code == 1, err
    assert "top-1 agreement" in out and "< --min-agreement 95%" in out
    rec = json.loads((tmp_path / "a.json").read_text())
    assert rec["checks"]["failed"] and rec["weights"] == {"kind": "unknown"}
    code, out, err = run_cli(["accuracy", str(p["ref"]), str(p["fp16"]), "--accuracy-data", str(p["val"]), "--min-agreement", "95",
                              "--max-drop", "5"], capsys)
    assert code == 0, err
    assert "✔ top-1 agreement" in out and "--min-agreement, --max-drop passed" in out
    code, out, err = run_cli(["accuracy", str(p["ref"]), str(p["other"]), "--accuracy-data", str(p["val"]), "--max-drop", "1"], capsys)
    assert code == 1 and "top-1 drop" in out and "> --max-drop 1" in out
    np.savez(tmp_path / "nolabels.npz", images=np.load(p["val"])["images"])
    code, _, err = run_cli(["accuracy", str(p["ref"]), str(p["fp16"]), "--accuracy-data", str(tmp_path / "nolabels.npz"),
                            "--max-drop", "1"], capsys)
    assert code == 2 and "--max-drop needs labels" in err
    code, out, _ = run_cli(["accuracy", str(p["ref"]), str(p["other"]), "--accuracy-data", str(p["val"])], capsys)
    assert code == 0 and "not gated" in out and "✔" not in out.splitlines()[-1]  # no gate asked for: neutral, exit 0


def test_accuracy_refuses_to_compare_a_graph_with_itself(two_vits, tmp_path, capsys):
    from test_precision import run_cli

    p = two_vits
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(p["ref"].read_bytes())
    for cand in (p["ref"], copy):
        code, _, err = run_cli(["accuracy", str(p["ref"]), str(cand), "--accuracy-data", str(p["val"])], capsys)
        assert code == 2 and "are the same graph" in err


def test_accuracy_names_random_weights(two_vits, tmp_path, capsys):
    from test_precision import run_cli

    from vitdeploy.artifact import atomic_write_json, new_manifest

    d = tmp_path / "art"
    d.mkdir()
    for name in ("ref", "fp16"):
        (d / f"{name}.onnx").write_bytes(two_vits[name].read_bytes())
    atomic_write_json(d / "manifest.json", {**new_manifest(), "model": {"alias": "tiny", "weights": "random"}})
    code, out, err = run_cli(["accuracy", str(d / "ref.onnx"), str(d / "fp16.onnx"), "--accuracy-data", str(two_vits["val"]),
                              "--json", str(tmp_path / "a.json")], capsys)
    assert code == 0
    assert "⚠ random weights: tiny" in err and "random weights, not judged" in out
    assert json.loads((tmp_path / "a.json").read_text())["weights"] == {"kind": "random", "seed": 0}


def _detr_outputs(rng, n=3, q=6, c=5):
    logits = rng.normal(-4.0, 0.5, size=(n, q, c)).astype(np.float32)  # below score 0.5
    logits[:, :2, 1] = 4.0  # two confident detections of class 1 per image
    boxes = np.concatenate([rng.uniform(0.3, 0.6, size=(n, q, 2)), rng.uniform(0.1, 0.3, size=(n, q, 2))], -1).astype(np.float32)
    return logits, boxes


def test_detection_measure_uses_boxes_and_scores():
    """Issue 15 item 4: DETR accuracy used top-1 over flattened query x class logits and ignored the boxes."""
    from vitdeploy.calibration.accuracy import compare_detections

    rng = np.random.default_rng(0)
    logits, boxes = _detr_outputs(rng)
    same = compare_detections(logits, boxes, logits.copy(), boxes.copy())
    assert same["task"] == "detection" and same["detection_agreement"] == 100.0
    assert same["reference_detections"]["count"] == 6 and same["matched_iou_mean"] == pytest.approx(1.0)
    assert same["score_delta_max"] == 0.0 and same["query_box_iou_min"] == pytest.approx(1.0)
    moved = boxes.copy()
    moved[0, 0, :2] += 0.5  # image 0, query 0: the box moves far away, the class logits stay identical
    r = compare_detections(logits, boxes, logits, moved)
    assert r["detection_agreement"] == pytest.approx(100.0 * 5 / 6)
    assert r["query_box_iou_min"] == 0.0 and r["score_delta_max"] == 0.0  # a logits-only measure could not see it
    # boxes identical, one score falls below the candidate's top-k competition: a score delta
    dimmed = logits.copy()
    dimmed[1, 1, 1] = 0.0
    r = compare_detections(logits, boxes, dimmed, boxes)
    assert r["score_delta_max"] == pytest.approx(1 / (1 + np.exp(-4.0)) - 0.5, rel=1e-6)


def test_average_precision_by_hand():
    from vitdeploy.calibration.detection import Detection, average_precision

    truths = [[(1, (0.0, 0.0, 0.5, 0.5)), (1, (0.5, 0.5, 1.0, 1.0))]]
    dets = [[Detection(1, 0.9, (0.0, 0.0, 0.5, 0.5)), Detection(1, 0.8, (0.0, 0.5, 0.4, 1.0)),
             Detection(1, 0.7, (0.5, 0.5, 1.0, 1.0))]]
    # TP, FP, TP: recall 0.5, 0.5, 1; precision envelope 1, 2/3, 2/3 -> 51 recall points at 1, 50 at 2/3
    ap = average_precision(dets, truths, iou_thresholds=(0.5,))
    assert ap["map50"] == pytest.approx(100 * (51 + 50 * 2 / 3) / 101)
    perfect = average_precision([[Detection(1, 0.9, b) for _, b in truths[0]]], truths)
    assert perfect["map50"] == perfect["map50_95"] == pytest.approx(100.0)
    assert average_precision([[]], truths)["map50"] == 0.0


def test_detection_with_box_labels_reports_map(tmp_path):
    from vitdeploy.calibration.accuracy import compare_detections, load_box_labels

    rng = np.random.default_rng(1)
    logits, boxes = _detr_outputs(rng, n=2)
    from vitdeploy.calibration.detection import cxcywh_to_xyxy

    xyxy = np.clip(cxcywh_to_xyxy(boxes), 0, 1)
    labels = [[{"label": 1, "box": list(map(float, xyxy[i, j]))} for j in range(2)] for i in range(2)]
    (tmp_path / "boxes.json").write_text(json.dumps(labels))
    truths = load_box_labels(tmp_path / "boxes.json")
    r = compare_detections(logits, boxes, logits, boxes, truths)
    assert r["reference_map50"] == pytest.approx(100.0) and r["map50_drop"] == 0.0
    (tmp_path / "bad.json").write_text(json.dumps([[{"label": 1, "box": [0.5, 0.5, 0.2, 0.9]}]]))
    with pytest.raises(VitdeployError, match="outside \\[0, 1\\] or with x1 < x0"):
        load_box_labels(tmp_path / "bad.json")
