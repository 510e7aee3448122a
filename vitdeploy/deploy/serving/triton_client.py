#!/usr/bin/env python3
"""Send one image to the Triton model in this folder and print what it predicts.

Written by `vitdeploy package` as REPO/NAME/client.py. Triton receives tensors, not
JPEGs, so this file preprocesses exactly as `vitdeploy infer` does -- with the same code:
vitdeploy's image_transform module is inlined below when the file is written (timm's eval
transform step for step: resize by crop_pct in the center / squash / border mode, centre
crop, /255, per-channel mean/std, RGB, NCHW float32) -- from `preprocess.json` beside it,
and calls the server with tritonclient's HTTP client. Needs only numpy, pillow and
`tritonclient[http]`.

    python client.py cat.jpg                       # server on localhost:8000
    python client.py cat.jpg --url triton:8000 --topk 3
    python client.py cat.jpg --ensemble            # send the JPEG bytes (package --ensemble)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from vitdeploy.image_transform import open_image, preprocess  # vitdeploy:inline image_transform

HERE = Path(__file__).resolve().parent
_NUMPY = {"FP32": np.float32, "FP16": np.float16, "INT64": np.int64, "INT32": np.int32, "UINT8": np.uint8}


def load_spec(path: str | Path = HERE / "preprocess.json") -> dict:
    return json.loads(Path(path).read_text())


def batch_for(x: np.ndarray, spec: dict) -> np.ndarray:
    """A static-batch model (max_batch_size 0) takes its full batch: repeat the image, keep the first result."""
    n = spec["input"].get("static_batch")
    return np.repeat(x, n, axis=0) if n and n > 1 else x


def labels(spec: dict) -> list[str] | None:
    name = spec.get("labels_file")
    if not name or not (HERE / name).is_file():
        return None
    return (HERE / name).read_text().splitlines()


def classify(logits: np.ndarray, k: int, names: list[str] | None) -> list[dict]:
    z = logits.astype(np.float64).reshape(-1)
    p = np.exp(z - z.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")[:k]
    return [{"class": int(i), "name": names[i] if names else None, "probability": float(p[i])} for i in order]


def detect(logits: np.ndarray, boxes: np.ndarray, size: tuple[int, int], k: int, threshold: float,
           names: list[str] | None, activation: str = "sigmoid") -> list[dict]:
    """Sigmoid scores per (query, class) -- or, for DETR/YOLOS heads ("softmax"), a softmax whose last class is
    "no object" and the best other class per query --, top-k pairs, normalised cxcywh -> x0, y0, x1, y1 pixels."""
    logits = logits.astype(np.float64)
    if activation == "softmax":
        z = np.exp(logits - logits.max(-1, keepdims=True))
        p = (z / z.sum(-1, keepdims=True))[..., :-1]
        best = p.argmax(-1)[..., None]
        prob = np.zeros_like(p)
        np.put_along_axis(prob, best, np.take_along_axis(p, best, -1), -1)
        classes = p.shape[-1]
        prob = prob.reshape(-1)
    else:
        prob = (0.5 * (1.0 + np.tanh(0.5 * logits))).reshape(-1)
        classes = logits.shape[-1]
    w, h = size
    out = []
    for flat in np.argsort(-prob, kind="stable")[:k]:
        if prob[flat] <= threshold:
            break
        q, c = divmod(int(flat), classes)
        cx, cy, bw, bh = boxes.reshape(-1, 4)[q].astype(np.float64)
        box = [(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h]
        out.append({"class": c, "name": names[c] if names and c < len(names) else None,
                    "score": float(prob[flat]), "box": box})
    return out


def encoded_request(image: str | Path, spec: dict) -> tuple[np.ndarray, tuple[int, int]]:
    """--ensemble: the file's bytes as the ensemble's IMAGE tensor (the server preprocesses), and the image size."""
    data = Path(image).read_bytes()
    size = open_image(data).size
    ens = spec["ensemble"]
    n = 1 if ens["max_batch_size"] > 0 else int(ens["dims"][0])
    shape = [1, *ens["dims"]] if ens["max_batch_size"] > 0 else list(ens["dims"])
    return np.array([data] * n, dtype=object).reshape(shape), size


def infer(image: str | Path, url: str = "localhost:8000", model: str | None = None, k: int = 5,
          threshold: float = 0.5, spec: dict | None = None, ensemble: bool = False) -> dict:
    import tritonclient.http as httpclient

    spec = spec or load_spec()
    client = httpclient.InferenceServerClient(url=url)
    if ensemble:
        if "ensemble" not in spec:
            raise SystemExit("this model was packaged without --ensemble")
        name = model or spec["ensemble"]["model"]
        x, size = encoded_request(image, spec)
        inp = httpclient.InferInput(spec["ensemble"]["input"], list(x.shape), "BYTES")
    else:
        name = model or spec["model"]
        x, size = preprocess(image, spec)
        x = batch_for(x, spec).astype(_NUMPY[spec["input"]["datatype"]])
        inp = httpclient.InferInput(spec["input"]["name"], list(x.shape), spec["input"]["datatype"])
    inp.set_data_from_numpy(x, binary_data=True)
    outputs = [httpclient.InferRequestedOutput(o["name"], binary_data=True) for o in spec["outputs"]]
    result = client.infer(name, inputs=[inp], outputs=outputs)
    got = {o["name"]: result.as_numpy(o["name"])[:1] for o in spec["outputs"]}
    post = spec.get("postprocessing") or {}
    if post.get("task") == "detection":
        scores, boxes = got[post["scores"]["output"]], got[post["boxes"]["output"]]
        return {"model": name, "detections": detect(scores[0], boxes[0], size, k, threshold, labels(spec),
                                                    post["scores"].get("activation", "sigmoid"))}
    first = got[(post.get("scores") or {}).get("output") or spec["outputs"][0]["name"]]
    return {"model": name, "topk": classify(first[0], k, labels(spec))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("image", help="JPEG/PNG file")
    ap.add_argument("--url", default="localhost:8000", help="Triton's HTTP endpoint (default localhost:8000)")
    ap.add_argument("--model", help="model name on the server (default: this folder's)")
    ap.add_argument("--topk", type=int, default=5)
    ap.add_argument("--threshold", type=float, default=0.5, help="detection score threshold")
    ap.add_argument("--json", action="store_true", help="print JSON")
    ap.add_argument("--ensemble", action="store_true",
                    help="send the encoded image to NAME_ensemble, which preprocesses on the server")
    args = ap.parse_args(argv)
    res = infer(args.image, args.url, args.model, args.topk, args.threshold, ensemble=args.ensemble)
    if args.json:
        print(json.dumps(res, indent=2))
    elif "detections" in res:
        for d in res["detections"]:
            print(f"{d['score']:.3f}  {d['name'] or d['class']}  " + ", ".join(f"{v:.1f}" for v in d["box"]))
    else:
        for r in res["topk"]:
            print(f"{r['probability']:.4f}  {r['class']:>5}  {r['name'] or ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
