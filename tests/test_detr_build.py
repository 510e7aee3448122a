"""Issue 8: `vitdeploy build --model deformable_detr --fp16` up to the engine step, then `vitdeploy infer`
on that artifact prints boxes with scores that agree with PyTorch.

The reduced configuration (2 encoder + 2 decoder layers, d_model 64, ResNet-18, 64x64) keeps every
deformable-attention core and the detection head; the full model takes minutes to export here.
"""
import json

import numpy as np
import pytest
import torch

from vitdeploy.models import build_model, get_info


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    from PIL import Image
    from skimage import data

    p = tmp_path_factory.mktemp("img") / "chelsea.png"
    Image.fromarray(data.chelsea()).save(p)  # 451x300
    return p


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from click.testing import CliRunner

    from vitdeploy.cli import cli

    out = tmp_path_factory.mktemp("detr") / "build"
    res = CliRunner().invoke(cli, ["build", "--model", "deformable_detr", "--reduced", "--img-size", "64", "--fp16",
                                   "--no-engine", "-o", str(out)], catch_exceptions=False)
    return out, res


def test_build_rewrites_every_core_to_the_stock_plugin_and_converts_to_fp16(built):
    import onnx

    out, res = built
    assert res.exit_code == 0, res.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["model"]["alias"] == "deformable_detr" and m["model"]["reduced"] is True
    msda = next(p for p in m["rewrite"]["passes"] if p["pass"] == "msda")
    assert msda["found"] == msda["replaced"] == 4  # 2 encoder + 2 decoder layers
    assert m["plugins"] == [{"op": "MultiscaleDeformableAttnPlugin_TRT", "domain": "trt.plugins", "namespace": "",
                             "version": "1", "count": 4, "kind": "TensorRT stock"}]
    # no TensorRT here: version 1, which every TensorRT registers (v2 only from 10.11), and the manifest says why
    stock = m["rewrite"]["stock_plugins"]["MultiscaleDeformableAttnPlugin_TRT"]
    assert stock["version"] == "1" and "no TensorRT here" in stock["reason"]
    assert m["precision"]["applied"] == "fp16" and m["files"]["onnx"]["path"] == "model.fp16.onnx"
    ops = [n.op_type for n in onnx.load(str(out / "model.fp16.onnx")).graph.node]
    assert "GridSample" not in ops and ops.count("MultiscaleDeformableAttnPlugin_TRT") == 4
    # Issue 15 item 4: a detection measure (boxes and scores), not top-1 over flattened query x class logits
    acc = m["accuracy"]
    assert acc["task"] == "detection" and "top1_agreement" not in acc
    assert acc["detection_agreement"] >= 90.0 and acc["matched_iou_mean"] > 0.99 and acc["query_box_iou_min"] > 0.95
    assert acc["score_delta_max"] < 0.01 and acc["reference_detections"]["count"] > 0
    assert "detection agreement" in res.output
    # Issue 15 item 14: the listed checkpoint's 91-class COCO head, its label map and the box format
    labels, post = m["labels"], m["postprocessing"]
    assert labels["num_classes"] == 91 and len(labels["names"]) == 91 and labels["source"] == "config.id2label"
    assert labels["names"][1] == "person" and labels["names"][90] == "toothbrush" and labels["names"][0] == "N/A"
    assert post["task"] == "detection" and post["boxes"]["format"] == "cxcywh" and post["boxes"]["normalized"] is True
    logits = next(o for o in m["export"]["outputs"] if o["name"] == "logits")
    assert logits["shape"][-1] == 91
    assert "skipped: --no-engine" in res.output


def test_infer_on_the_built_artifact_prints_boxes_matching_pytorch(built, photo):
    from click.testing import CliRunner
    from transformers import DeformableDetrImageProcessor
    from types import SimpleNamespace

    from vitdeploy.cli import cli
    from vitdeploy.deploy.preprocess import load_image

    out, res = built
    assert res.exit_code == 0, res.output
    r = CliRunner().invoke(cli, ["infer", str(out), "--image", str(photo), "--threshold", "0", "--topk", "5", "--json"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)  # the random-weights banner goes to stderr, JSON alone to stdout
    dets = result["detections"]
    assert len(dets) == 5
    names = json.loads((out / "manifest.json").read_text())["labels"]["names"]
    assert all(d["name"] == names[d["label"]] for d in dets)
    assert result["box_format"].startswith("x0, y0, x1, y1 in pixels") and result["weights"]["kind"] == "random"

    # PyTorch truth: the same random weights, the manifest's preprocessing, transformers' post-processing.
    torch.manual_seed(0)
    model = build_model(get_info("deformable_detr"), img_size=(64, 64), small=True).eval()
    x, (w, h) = load_image(photo, json.loads((out / "manifest.json").read_text())["preprocessing"])
    with torch.no_grad():
        o = model(torch.from_numpy(x))
    ref = DeformableDetrImageProcessor().post_process_object_detection(
        SimpleNamespace(logits=o.logits, pred_boxes=o.pred_boxes), threshold=0.0, target_sizes=[(h, w)], top_k=5)[0]
    ref_rows = list(zip(ref["labels"].tolist(), ref["scores"].tolist(), ref["boxes"].tolist()))
    for d in dets:  # FP16 may swap near-equal scores, so match rows rather than positions
        assert any(d["label"] == lab and abs(d["score"] - s) < 2e-3 and np.abs(np.subtract(d["box"], b)).max() < 1.5
                   for lab, s, b in ref_rows), (d, ref_rows)
    assert all(0 <= d["box"][0] <= d["box"][2] <= w and 0 <= d["box"][1] <= d["box"][3] <= h for d in dets)

    table = CliRunner().invoke(cli, ["infer", str(out), "--image", str(photo), "--threshold", "0"], catch_exceptions=False)
    assert table.exit_code == 0 and "score" in table.output and "box (x0, y0, x1, y1)" in table.output
    assert "boxes: x0, y0, x1, y1 in pixels of the input image" in table.output and dets[0]["name"] in table.output
