"""What a precision change costs: a candidate graph against its reference on the same inputs.

Top-1 agreement and logit similarity need no labels; with labels, top-1/top-5
accuracy of both and the drop in points. Both graphs run in ONNX Runtime
(`vitdeploy.onnxrt.session`), so FP16 and Q/DQ graphs are measured exactly as written.
"""
from __future__ import annotations

import numpy as np

from vitdeploy.calibration.data import check_shape, model_input, progress
from vitdeploy.errors import VitdeployError


class _Runner:
    """One ONNX Runtime session that accepts any batch size, even on a static-batch graph."""

    def __init__(self, model, threads: int | None = None):
        from vitdeploy.onnxrt import session

        self.sess = session(model, threads=threads)
        inp = self.sess.get_inputs()[0]
        self.name, self.shape = inp.name, inp.shape
        self.static = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None
        self.dtype = np.float16 if inp.type == "tensor(float16)" else np.float32  # `convert --no-keep-io-fp32` graphs

    def __call__(self, x: np.ndarray) -> np.ndarray:
        check_shape(x, "the images", self.shape)
        x = x.astype(self.dtype, copy=False)
        if self.static is None:
            return np.asarray(self.sess.run(None, {self.name: x})[0], dtype=np.float32)
        outs = []
        for i in range(0, len(x), self.static):  # whole static batches; the last one padded, then trimmed
            chunk = x[i : i + self.static]
            n = len(chunk)
            if n < self.static:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.static - n, axis=0)])
            outs.append(np.asarray(self.sess.run(None, {self.name: chunk})[0], dtype=np.float32)[:n])
        return np.concatenate(outs)


def run_models(models: list, data, batch: int = 32, description: str = "running", show_progress: bool = False,
               threads: int | None = None) -> list[np.ndarray]:
    """First output of each model (path or ModelProto) on all of `data`, in one pass over the data.

    `data` is anything with `batches(n)` and `len()`: in-memory `CalibrationData` or a
    streamed `ImageFolder` (decoded once, whatever the number of models).
    """
    runners = [_Runner(m, threads) for m in models]
    outs: list[list[np.ndarray]] = [[] for _ in runners]
    with progress(len(data), description, show_progress) as advance:
        for x in data.batches(batch):
            for r, o in zip(runners, outs):
                o.append(r(x))
            advance(len(x))
    if not outs[0]:
        raise VitdeployError("no images to run", "pass a folder or array file with images")
    return [np.concatenate(o) for o in outs]


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


def compare_models(reference, candidate, data, labels: np.ndarray | None = None, batch: int = 32,
                   show_progress: bool = False) -> dict:
    """Run both ONNX graphs (paths or ModelProtos) on `data` and compare their first outputs.

    `data`: `CalibrationData` or a streamed `ImageFolder`; `labels` default to `data.labels`.
    """
    if labels is None:
        labels = getattr(data, "labels", None)
    ref, cand = run_models([reference, candidate], data, batch, "comparing", show_progress)
    return compare_logits(ref, cand, labels)


def input_shape(model_path) -> list:
    from vitdeploy.deploy.artifacts import load_onnx

    return model_input(load_onnx(model_path, load_external_data=False))[1]
