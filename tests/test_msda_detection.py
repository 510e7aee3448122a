"""Deformable DETR post-processing (`vitdeploy.calibration.detection`) against transformers' image processor."""
import numpy as np
import pytest
import torch

from vitdeploy.calibration.detection import Detection, postprocess_detr


def transformers_results(logits, boxes, sizes, threshold, topk):
    from types import SimpleNamespace

    from transformers import DeformableDetrImageProcessor

    proc = DeformableDetrImageProcessor()
    out = SimpleNamespace(logits=torch.from_numpy(logits), pred_boxes=torch.from_numpy(boxes))
    return proc.post_process_object_detection(out, threshold=threshold, target_sizes=sizes, top_k=topk)


@pytest.mark.parametrize("threshold,topk", [(0.5, 100), (0.3, 7), (0.99, 100)])
def test_matches_transformers_post_process_object_detection(threshold, topk):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, size=(2, 30, 5)).astype(np.float32)
    boxes = rng.uniform(0.1, 0.9, size=(2, 30, 4)).astype(np.float32)
    sizes = [(480, 640), (512, 512)]
    ours = postprocess_detr(logits, boxes, sizes, threshold=threshold, topk=topk)
    theirs = transformers_results(logits, boxes, sizes, threshold, topk)
    assert len(ours) == 2
    for mine, ref in zip(ours, theirs):
        assert [d.label for d in mine] == ref["labels"].tolist()
        np.testing.assert_allclose([d.score for d in mine], ref["scores"].numpy(), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(np.array([d.box for d in mine]).reshape(-1, 4), ref["boxes"].numpy(), rtol=1e-5, atol=1e-3)


def test_box_is_xyxy_in_pixels_and_scores_are_per_class_sigmoids():
    logits = np.full((1, 2, 3), -20.0, np.float32)
    logits[0, 1, 2] = 2.0  # query 1, class 2
    boxes = np.array([[[0.5, 0.5, 0.2, 0.2], [0.25, 0.5, 0.5, 1.0]]], np.float32)  # cx, cy, w, h
    (dets,) = postprocess_detr(logits, boxes, (100, 200), threshold=0.5)
    assert len(dets) == 1 and isinstance(dets[0], Detection)
    d = dets[0]
    assert d.label == 2 and d.score == pytest.approx(1 / (1 + np.exp(-2.0)))
    assert d.box == pytest.approx((0.0, 0.0, 100.0, 100.0))  # W=200, H=100


def test_rejects_mismatched_shapes_and_sizes():
    with pytest.raises(ValueError, match="pred_boxes"):
        postprocess_detr(np.zeros((1, 4, 3)), np.zeros((1, 5, 4)), (32, 32))
    with pytest.raises(ValueError, match="image sizes"):
        postprocess_detr(np.zeros((2, 4, 3)), np.zeros((2, 4, 4)), [(32, 32)] * 3)
