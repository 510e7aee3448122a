"""What a precision change costs: a candidate graph against its reference on the same inputs.

Classifiers: top-1 agreement and logit similarity need no labels; with labels, top-1/top-5
accuracy of both and the drop in points. Detectors (Deformable DETR: `logits` [N, Q, C] and
`pred_boxes` [N, Q, 4]) get a detection measure instead: per-query box IoU and sigmoid score
deltas between the two graphs, the share of the reference's detections the candidate
reproduces (same class, IoU >= 0.5), and with box labels COCO-style mAP of both. Both graphs
run in ONNX Runtime (`vitdeploy.onnxrt.session`), so FP16 and Q/DQ graphs are measured
exactly as written.
"""
from __future__ import annotations

import numpy as np

from vitdeploy.calibration.data import check_shape, progress

from vitdeploy.errors import VitdeployError
from vitdeploy.onnxgraph import model_input


class _Runner:
    """One ONNX Runtime session that accepts any batch size, even on a static-batch graph."""

    def __init__(self, model, threads: int | None = None):
        from vitdeploy.onnxrt import session

        self.sess = session(model, threads=threads)
        inp = self.sess.get_inputs()[0]
        self.name, self.shape = inp.name, inp.shape
        self.static = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None
        self.dtype = np.float16 if inp.type == "tensor(float16)" else np.float32  # `convert --no-keep-io-fp32` graphs

        self.output_names = [o.name for o in self.sess.get_outputs()]

    def run_all(self, x: np.ndarray) -> list[np.ndarray]:
        """Every output, as FP32."""
        check_shape(x, "the images", self.shape)
        x = x.astype(self.dtype, copy=False)
        if self.static is None:
            return [np.asarray(o, dtype=np.float32) for o in self.sess.run(None, {self.name: x})]
        outs: list[list[np.ndarray]] = []
        for i in range(0, len(x), self.static):  # whole static batches; the last one padded, then trimmed
            chunk = x[i : i + self.static]
            n = len(chunk)
            if n < self.static:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.static - n, axis=0)])
            outs.append([np.asarray(o, dtype=np.float32)[:n] for o in self.sess.run(None, {self.name: chunk})])
        return [np.concatenate(parts) for parts in zip(*outs)]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.run_all(x)[0]


def run_models(models: list, data, batch: int = 32, description: str = "running", show_progress: bool = False,
               threads: int | None = None) -> list[np.ndarray]:
    """First output of each model (path or ModelProto) on all of `data`, in one pass over the data.

    `data` is anything with `batches(n)` and `len()`: in-memory `CalibrationData` or a
    streamed `ImageFolder` (decoded once, whatever the number of models).
    """
    return [outs[0] for outs in run_models_all(models, data, batch, description, show_progress, threads)[0]]


def run_models_all(models: list, data, batch: int = 32, description: str = "running", show_progress: bool = False,
                   threads: int | None = None) -> tuple[list[list[np.ndarray]], list[list[str]]]:
    """Every output of each model on all of `data`: ([per model: [per output: array]], [per model: output names])."""
    runners = [_Runner(m, threads) for m in models]
    outs: list[list[list[np.ndarray]]] = [[] for _ in runners]
    with progress(len(data), description, show_progress) as advance:
        for x in data.batches(batch):
            for r, o in zip(runners, outs):
                o.append(r.run_all(x))
            advance(len(x))
    if not outs[0]:
        raise VitdeployError("no images to run", "pass a folder or array file with images")
    return [[np.concatenate(parts) for parts in zip(*o)] for o in outs], [r.output_names for r in runners]


def run_model(model, data, batch: int = 32, description: str = "running", show_progress: bool = False,
              threads: int | None = None) -> np.ndarray:
    """First output of `model` (path or ModelProto) on all of `data`, as FP32 (N, ...)."""
    return run_models([model], data, batch, description, show_progress, threads)[0]


def _topk(logits: np.ndarray, k: int) -> np.ndarray:
    k = min(k, logits.shape[1])
    return np.argsort(-logits, axis=1, kind="stable")[:, :k]


def accuracy_points(logits: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Top-k accuracy in percent."""
    return float((_topk(logits, k) == labels[:, None]).any(axis=1).mean() * 100.0)


def compare_logits(ref: np.ndarray, cand: np.ndarray, labels: np.ndarray | None = None) -> dict:
    """Agreement and error statistics of two (N, classes) logit arrays."""
    if ref.shape != cand.shape:
        raise VitdeployError(f"the models' outputs differ in shape: {ref.shape} vs {cand.shape}", "compare variants of one model")
    ref2 = ref.reshape(len(ref), -1).astype(np.float64)
    cand2 = cand.reshape(len(cand), -1).astype(np.float64)
    num = (ref2 * cand2).sum(1)
    den = np.linalg.norm(ref2, axis=1) * np.linalg.norm(cand2, axis=1)
    cos = np.where(den > 0, num / np.maximum(den, 1e-300), 1.0)
    finite = bool(np.isfinite(cand2).all())
    out = {
        "images": int(len(ref)),
        "top1_agreement": float((ref2.argmax(1) == cand2.argmax(1)).mean() * 100.0),
        "cosine_mean": float(cos.mean()) if finite else 0.0,
        "cosine_min": float(cos.min()) if finite else 0.0,
        "max_abs_error": float(np.abs(ref2 - cand2).max()) if finite else float("inf"),
        "mean_abs_error": float(np.abs(ref2 - cand2).mean()) if finite else float("inf"),
        "finite": finite,
    }
    if labels is not None:
        if len(labels) != len(ref):
            raise VitdeployError(f"{len(labels)} labels for {len(ref)} images", "pass one label per image")
        if labels.max(initial=0) >= ref2.shape[1] or labels.min(initial=0) < 0:
            raise VitdeployError(f"labels must be class ids in 0..{ref2.shape[1] - 1}", "check the labels file")
        for k in (1, 5):
            r, c = accuracy_points(ref2, labels, k), accuracy_points(cand2, labels, k)
            out[f"reference_top{k}"] = r
            out[f"candidate_top{k}"] = c
            out[f"top{k}_drop"] = r - c
    return out


def evaluate_logits(logits: np.ndarray, labels: np.ndarray) -> dict:
    """Top-1/top-5 accuracy of one model against labels (no reference: nothing to agree with)."""
    logits2 = logits.reshape(len(logits), -1).astype(np.float64)
    if len(labels) != len(logits2):
        raise VitdeployError(f"{len(labels)} labels for {len(logits2)} images", "pass one label per image")
    if labels.max(initial=0) >= logits2.shape[1] or labels.min(initial=0) < 0:
        raise VitdeployError(f"labels must be class ids in 0..{logits2.shape[1] - 1}", "check the labels file")
    return {"images": int(len(logits2)), **{f"candidate_top{k}": accuracy_points(logits2, labels, k) for k in (1, 5)}}


# Detection comparison: reference detections are its top-k (query, class) pairs above DET_THRESHOLD
# (COCO evaluates at most 100 detections per image); the candidate may reproduce each anywhere in its top-k.
DET_THRESHOLD = 0.5
DET_TOPK = 100
DET_MATCH_IOU = 0.5


def is_detection(names: list[str], outputs: list[np.ndarray]) -> bool:
    """Deformable DETR's outputs: logits [N, Q, C] and pred_boxes [N, Q, 4]."""
    if "logits" in names and "pred_boxes" in names:
        return True
    return (len(outputs) >= 2 and outputs[0].ndim == 3 and outputs[1].ndim == 3 and outputs[1].shape[-1] == 4
            and outputs[0].shape[:2] == outputs[1].shape[:2])


def _detection_outputs(names: list[str], outputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    if "logits" in names and "pred_boxes" in names:
        return outputs[names.index("logits")], outputs[names.index("pred_boxes")]
    return outputs[0], outputs[1]


def compare_detections(ref_logits: np.ndarray, ref_boxes: np.ndarray, cand_logits: np.ndarray, cand_boxes: np.ndarray,
                       truths: list | None = None, *, threshold: float = DET_THRESHOLD, topk: int = DET_TOPK) -> dict:
    """Detection agreement of two DETR output sets (logits [N, Q, C], boxes [N, Q, 4] normalized cx, cy, w, h).

    - per query (the same slot in both graphs): IoU of the two boxes, |sigmoid score| difference per class;
    - per detection: the reference's detections (top-k above `threshold`; its top-k when no score passes,
      as with random weights) matched one-to-one to the candidate's top-k by class and IoU >= 0.5;
    - with `truths` (per image a list of (label, normalized x0, y0, x1, y1)): mAP@0.5 and @0.5:0.95 of both.
    """
    from vitdeploy.calibration.detection import average_precision, cxcywh_to_xyxy, match_detections, paired_iou, postprocess_detr

    if ref_logits.shape != cand_logits.shape or ref_boxes.shape != cand_boxes.shape:
        raise VitdeployError(f"the models' outputs differ in shape: {ref_logits.shape}/{ref_boxes.shape} vs "
                             f"{cand_logits.shape}/{cand_boxes.shape}", "compare variants of one model")
    finite = bool(np.isfinite(cand_logits).all() and np.isfinite(cand_boxes).all())
    n = ref_logits.shape[0]
    q_iou = paired_iou(cxcywh_to_xyxy(ref_boxes), cxcywh_to_xyxy(cand_boxes))
    sig = lambda z: 0.5 * (1.0 + np.tanh(0.5 * z.astype(np.float64)))  # noqa: E731
    dscore = np.abs(sig(ref_logits) - sig(cand_logits))
    ref_dets = postprocess_detr(ref_logits, ref_boxes, (1, 1), threshold=threshold, topk=topk)
    fallback = not any(ref_dets)
    if fallback:
        ref_dets = postprocess_detr(ref_logits, ref_boxes, (1, 1), threshold=-1.0, topk=topk)
    pool = postprocess_detr(cand_logits, cand_boxes, (1, 1), threshold=-1.0, topk=topk)
    total = sum(len(d) for d in ref_dets)
    ious, deltas = [], []
    for r, c in zip(ref_dets, pool):
        for i, j, iou in match_detections(r, c, DET_MATCH_IOU):
            ious.append(iou)
            deltas.append(abs(r[i].score - c[j].score))
    out = {
        "images": int(n),
        "task": "detection",
        "detection_agreement": 100.0 * len(ious) / total if total and finite else 0.0,
        "reference_detections": {"count": int(total), "threshold": threshold, "topk": topk,
                                 "selection": f"top-{topk}, no score above {threshold}" if fallback
                                 else f"top-{topk} above score {threshold}"},
        "matched_iou_mean": float(np.mean(ious)) if ious else 0.0,
        "matched_score_delta_mean": float(np.mean(deltas)) if deltas else 0.0,
        "matched_score_delta_max": float(np.max(deltas)) if deltas else 0.0,
        "query_box_iou_mean": float(q_iou.mean()) if finite else 0.0,
        "query_box_iou_min": float(q_iou.min()) if finite else 0.0,
        "score_delta_mean": float(dscore.mean()) if finite else float("inf"),
        "score_delta_max": float(dscore.max()) if finite else float("inf"),
        "box_max_abs_error": float(np.abs(ref_boxes - cand_boxes).max()) if finite else float("inf"),
        "finite": finite,
    }
    if truths is not None:
        if len(truths) != n:
            raise VitdeployError(f"{len(truths)} box label lists for {n} images", "pass one list of boxes per image")
        every = lambda lg, bx: postprocess_detr(lg, bx, (1, 1), threshold=-1.0, topk=topk)  # noqa: E731
        r_ap = average_precision(every(ref_logits, ref_boxes), truths)
        c_ap = average_precision(every(cand_logits, cand_boxes), truths)
        out.update(reference_map50=r_ap["map50"], candidate_map50=c_ap["map50"], map50_drop=r_ap["map50"] - c_ap["map50"],
                   reference_map50_95=r_ap["map50_95"], candidate_map50_95=c_ap["map50_95"],
                   map50_95_drop=r_ap["map50_95"] - c_ap["map50_95"], labelled_classes=r_ap["classes"])
    return out


def evaluate_detections(logits: np.ndarray, boxes: np.ndarray, truths: list, topk: int = DET_TOPK) -> dict:
    from vitdeploy.calibration.detection import average_precision, postprocess_detr

    if len(truths) != len(logits):
        raise VitdeployError(f"{len(truths)} box label lists for {len(logits)} images", "pass one list of boxes per image")
    ap = average_precision(postprocess_detr(logits, boxes, (1, 1), threshold=-1.0, topk=topk), truths)
    return {"images": int(len(logits)), "task": "detection", "candidate_map50": ap["map50"],
            "candidate_map50_95": ap["map50_95"], "labelled_classes": ap["classes"]}


def compare_models(reference, candidate, data, labels=None, batch: int = 32, show_progress: bool = False) -> dict:
    """Run both ONNX graphs (paths or ModelProtos) on `data` and compare their outputs.

    `data`: `CalibrationData` or a streamed `ImageFolder`; `labels` default to `data.labels`
    (class ids for classifiers; for detectors a list per image of (label, normalized box)).
    `reference` None evaluates `candidate` against the labels alone (no agreement figures):
    a graph is never compared with itself.
    """
    if labels is None:
        labels = getattr(data, "labels", None)
    if isinstance(labels, np.ndarray) and labels.dtype == object:
        labels = list(labels)
    if reference is None:
        if labels is None:
            raise VitdeployError("no reference graph and no labels: nothing to measure",
                                 "pass the plain export as the reference, or labels")
        (outs,), (names,) = run_models_all([candidate], data, batch, "evaluating", show_progress)
        if is_detection(names, outs):
            return evaluate_detections(*_detection_outputs(names, outs), _box_truths(labels))
        return {"task": "classification", **evaluate_logits(outs[0], np.asarray(labels))}
    (ref, cand), (rnames, cnames) = run_models_all([reference, candidate], data, batch, "comparing", show_progress)
    if is_detection(rnames, ref):
        if not is_detection(cnames, cand):
            raise VitdeployError("the reference is a detector and the candidate is not", "compare variants of one model")
        truths = None if labels is None else _box_truths(labels)
        return compare_detections(*_detection_outputs(rnames, ref), *_detection_outputs(cnames, cand), truths)
    return {"task": "classification", **compare_logits(ref[0], cand[0], None if labels is None else np.asarray(labels))}


def _box_truths(labels) -> list:
    if isinstance(labels, np.ndarray) or (labels and not isinstance(labels[0], (list, tuple))):
        raise VitdeployError("class-id labels do not fit a detector", "pass box labels as JSON (see 'vitdeploy accuracy --help')")
    return list(labels)


def load_box_labels(path) -> list[list[tuple[int, tuple]]]:
    """Detection labels from JSON: one list per image (in the data's order) of
    {"label": class id, "box": [x0, y0, x1, y1]} with coordinates as fractions of the image's width/height."""
    import json
    from pathlib import Path

    p = Path(path)
    try:
        raw = json.loads(p.read_text())
        out = [[(int(b["label"]), tuple(float(v) for v in b["box"])) for b in image] for image in raw]
    except FileNotFoundError:
        raise VitdeployError(f"labels file {p} does not exist", "check the --labels path") from None
    except (ValueError, TypeError, KeyError) as e:
        raise VitdeployError(f"cannot read box labels from {p.name} ({type(e).__name__})",
                             'one list per image of {"label": id, "box": [x0, y0, x1, y1]} (fractions of the image)') from None
    if any(len(b) != 4 or not (0 <= b[0] <= b[2] <= 1 and 0 <= b[1] <= b[3] <= 1) for image in out for _, b in image):
        raise VitdeployError(f"{p.name} has a box outside [0, 1] or with x1 < x0",
                             "boxes are [x0, y0, x1, y1] as fractions of the image's width and height")
    return out


def input_shape(model_path) -> list:
    from vitdeploy.artifact import load_onnx

    return model_input(load_onnx(model_path, load_external_data=False))[1]
