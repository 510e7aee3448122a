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


def box_iou(a, b) -> np.ndarray:
    """IoU of every box in `a` [N, 4] with every box in `b` [M, 4], both (x0, y0, x1, y1) -> [N, M]."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def paired_iou(a, b) -> np.ndarray:
    """IoU of a[..., i] with b[..., i] (same shape [..., 4], x0, y0, x1, y1): one value per pair."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    lt = np.maximum(a[..., :2], b[..., :2])
    rb = np.minimum(a[..., 2:], b[..., 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    union = np.clip(a[..., 2:] - a[..., :2], 0, None).prod(-1) + np.clip(b[..., 2:] - b[..., :2], 0, None).prod(-1) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def cxcywh_to_xyxy(boxes) -> np.ndarray:
    cx, cy, w, h = np.moveaxis(np.asarray(boxes, dtype=np.float64), -1, 0)
    return np.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)


def match_detections(ref: Sequence[Detection], cand: Sequence[Detection],
                     iou_threshold: float = 0.5) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching, best reference score first: (ref index, cand index, IoU) for
    each reference detection that has an unmatched candidate of the same label with IoU >= threshold."""
    if not ref or not cand:
        return []
    iou = box_iou([d.box for d in ref], [d.box for d in cand])
    same = np.array([[r.label == c.label for c in cand] for r in ref])
    iou = np.where(same, iou, -1.0)
    taken: set[int] = set()
    pairs = []
    for i in sorted(range(len(ref)), key=lambda k: -ref[k].score):
        row = iou[i].copy()
        if taken:
            row[list(taken)] = -1.0
        j = int(row.argmax())
        if row[j] >= iou_threshold:
            taken.add(j)
            pairs.append((i, j, float(row[j])))
    return pairs


COCO_IOU_THRESHOLDS = tuple(np.round(np.arange(0.5, 0.96, 0.05), 2))


def average_precision(detections: Sequence[Sequence[Detection]], truths: Sequence[Sequence[tuple[int, tuple]]],
                      iou_thresholds: Sequence[float] = COCO_IOU_THRESHOLDS) -> dict:
    """COCO-style mean average precision (percent) of per-image detections against (label, box) truths.

    Per class and IoU threshold: detections of all images sorted by score, each matched to the
    unmatched truth of its class with the highest IoU above the threshold, precision made
    monotone, then sampled at 101 recall points. The mean runs over classes that have truths.
    Returns {"map50", "map50_95", "classes"}.
    """
    if len(detections) != len(truths):
        raise ValueError(f"{len(detections)} detection lists for {len(truths)} images")
    classes = sorted({lab for t in truths for lab, _ in t})
    recall_points = np.linspace(0.0, 1.0, 101)
    per_threshold = []
    for thr in iou_thresholds:
        aps = []
        for c in classes:
            gts = [[np.asarray(b, dtype=np.float64) for lab, b in t if lab == c] for t in truths]
            n_gt = sum(len(g) for g in gts)
            scored = sorted(((d.score, img, d.box) for img, dets in enumerate(detections) for d in dets if d.label == c),
                            key=lambda x: -x[0])
            used = [np.zeros(len(g), bool) for g in gts]
            tp = np.zeros(len(scored))
            for k, (_, img, box) in enumerate(scored):
                if not gts[img]:
                    continue
                ious = box_iou([box], gts[img])[0]
                ious[used[img]] = -1.0
                j = int(ious.argmax())
                if ious[j] >= thr:
                    used[img][j] = True
                    tp[k] = 1
            if not scored:
                aps.append(0.0)
                continue
            ctp = np.cumsum(tp)
            recall = ctp / n_gt
            precision = ctp / np.arange(1, len(scored) + 1)
            precision = np.maximum.accumulate(precision[::-1])[::-1]  # monotone envelope
            idx = np.searchsorted(recall, recall_points, side="left")
            aps.append(float(np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0).mean()))
        per_threshold.append(float(np.mean(aps)) if aps else 0.0)
    thresholds = [float(t) for t in iou_thresholds]
    out = {"classes": len(classes)}
    if 0.5 in thresholds:
        out["map50"] = 100.0 * per_threshold[thresholds.index(0.5)]
    out["map50_95"] = 100.0 * float(np.mean(per_threshold))
    return out
