"""Deformable DETR outputs -> labelled boxes in pixels, as transformers' image processor does it.

`DeformableDetrImageProcessor.post_process_object_detection` scores every
(query, class) pair independently with a sigmoid (the model is trained with a
focal loss, so there is no softmax and no "no object" class), keeps the top-k
pairs over all of them, and converts the matching normalized (cx, cy, w, h)
boxes to (x0, y0, x1, y1) pixels. This is the same computation in NumPy, so the
runtime can post-process ONNX Runtime or TensorRT outputs without torch.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np


class Detection(NamedTuple):
    label: int
    score: float
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels of the network input


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free logistic


def postprocess_detr(logits, pred_boxes, img_size: tuple[int, int] | Sequence[tuple[int, int]],
                     threshold: float = 0.5, topk: int = 100) -> list[list[Detection]]:
    """logits [B, Q, C], pred_boxes [B, Q, 4] (normalized cx, cy, w, h) -> per image, detections by descending score.

    `img_size` is (H, W) for every image or one (H, W) per image. Only the `topk`
    best (query, class) pairs are considered; of those, pairs scoring above
    `threshold` are returned.
    """
    logits = np.asarray(logits, dtype=np.float32)
    boxes = np.asarray(pred_boxes, dtype=np.float32)
    if logits.ndim != 3 or boxes.ndim != 3 or boxes.shape[:2] != logits.shape[:2] or boxes.shape[2] != 4:
        raise ValueError(f"expected logits [B, Q, C] and pred_boxes [B, Q, 4], got {logits.shape} and {boxes.shape}")
    b, _, c = logits.shape
    sizes = [tuple(img_size)] * b if np.ndim(img_size) == 1 else [tuple(s) for s in img_size]
    if len(sizes) != b:
        raise ValueError(f"{len(sizes)} image sizes for a batch of {b}")
    prob = _sigmoid(logits).reshape(b, -1)
    k = min(int(topk), prob.shape[1])
    cx, cy, w, h = np.moveaxis(boxes, -1, 0)
    xyxy = np.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)
    results = []
    for i in range(b):
        order = np.argsort(-prob[i], kind="stable")[:k]
        ih, iw = sizes[i]
        scale = np.array([iw, ih, iw, ih], dtype=np.float32)
        dets = []
        for flat in order:
            score = float(prob[i, flat])
            if score <= threshold:
                break  # sorted: nothing after this passes either
            q, label = divmod(int(flat), c)
            dets.append(Detection(label, score, tuple(float(v) for v in xyxy[i, q] * scale)))
        results.append(dets)
    return results
