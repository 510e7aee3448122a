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
