"""`vitdeploy infer`: one image through an engine or any vitdeploy ONNX."""
from __future__ import annotations

from pathlib import Path

import click

from vitdeploy.commands.options import emit_json, json_option, json_to_stdout


def resolve_artifact(path: Path) -> tuple[str, Path, dict | None, str | None]:
    """ARTIFACT -> (kind "engine"|"onnx", file, manifest or None, note).

    A build directory runs its engine where TensorRT is importable, else its final ONNX.
    """
    from vitdeploy.artifact import load_manifest, manifest_beside, manifest_file
    from vitdeploy.errors import VitdeployError
    from vitdeploy.machine import tensorrt_version

    if path.is_dir():
        manifest = load_manifest(path)
        engine, final = manifest_file(manifest, path, "engine"), manifest_file(manifest, path, "onnx")
        if engine is not None and tensorrt_version() is not None:
            return "engine", engine, manifest, None
        if final is None:
            raise VitdeployError(f"{path} has neither an engine nor an ONNX graph", "point at a directory written by vitdeploy")
        note = "TensorRT is not installed here: running the ONNX graph with ONNX Runtime" if engine is not None else None
        return "onnx", final, manifest, note
    if not path.is_file():
        raise VitdeployError(f"{path} does not exist", "pass an engine (.plan), an ONNX file or a build directory")
    manifest = manifest_beside(path, strict=True)
    if path.suffix == ".onnx":
        return "onnx", path, manifest, None
    return "engine", path, manifest, None


def detection_labels(manifest: dict | None) -> dict[int, str]:
    """class id -> name from the manifest's label map (COCO's 91 for Deformable DETR)."""
    names = ((manifest or {}).get("labels") or {}).get("names")
    return {i: str(n) for i, n in enumerate(names)} if isinstance(names, list) else {}


def class_names(manifest: dict | None, num_classes: int) -> list[str] | None:
    """The manifest's label map; for older manifests, ImageNet-1k names for timm classifiers with 1000 classes."""
    labels = (manifest or {}).get("labels") or {}
    if labels.get("names") and len(labels["names"]) == num_classes:
        return [str(n) for n in labels["names"]]
    if "labels" in (manifest or {}):  # recorded without names: do not invent them
        return None
    model = (manifest or {}).get("model") or {}
    if num_classes != 1000 or model.get("source") != "timm":
        return None
    try:
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        return [info.index_to_description(i) for i in range(1000)]
    except Exception:  # metadata missing from the timm install: indices only
        return None


def _input_size_from_onnx(path: Path) -> tuple[int, int] | None:
    from vitdeploy.artifact import load_onnx
    from vitdeploy.onnxgraph import model_input

    _, shape = model_input(load_onnx(path, load_external_data=False))
    h, w = shape[-2:]
    return (h, w) if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0 else None


def load(kind: str, file: Path):
    """A callable x -> {name: array} for an engine (TensorRT) or an ONNX graph (ONNX Runtime), and its closer."""
    import numpy as np

    if kind == "engine":
        from vitdeploy.deploy.runtime import Engine

        engine = Engine(file)
        return engine, engine.close
    from vitdeploy.onnxrt import session

    sess = session(file)
    inp = sess.get_inputs()[0]
    dtype = np.float16 if "float16" in inp.type else np.float32
    batch = inp.shape[0]

    def call(x):
        feed = x.astype(dtype)
        if isinstance(batch, int) and batch > 1:  # a static batch > 1: pad with copies, keep the first
            feed = np.repeat(feed, batch, axis=0)
        outs = sess.run(None, {inp.name: feed})
        return {o.name: np.asarray(v)[:1] for o, v in zip(sess.get_outputs(), outs)}

    return call, lambda: None


def run(kind: str, file: Path, x):
    """Outputs as {name: array} from an engine (TensorRT) or an ONNX graph (ONNX Runtime)."""
    call, close = load(kind, file)
    try:
        return call(x)
    finally:
        close()


def topk(logits, k: int, names: list[str] | None) -> list[dict]:
    import numpy as np

    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    p = np.exp(z - z.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")[:k]
    return [{"rank": r + 1, "class": int(i), "name": names[i] if names else None, "probability": float(p[i])}
            for r, i in enumerate(order)]


# What `postprocess_detr` returns: the model's normalized (cx, cy, w, h) scaled to the image given.
BOX_FORMAT = "x0, y0, x1, y1 in pixels of the input image (the model outputs normalized cx, cy, w, h)"


@click.command("infer")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--image", required=True, type=click.Path(path_type=Path), help="Image file (JPEG/PNG).")
@click.option("--topk", "k", type=int, default=5, show_default=True, help="How many classes (or boxes) to show.")
@click.option("--threshold", type=float, default=0.5, show_default=True, help="Detection score threshold (Deformable DETR).")
@json_option("the predictions, latency and weights")
def command(artifact, image, k, threshold, json_out):
    """Classify an image (or detect objects, for Deformable DETR) with ARTIFACT.

    ARTIFACT is an engine (model.plan, run with TensorRT), any ONNX vitdeploy
    wrote (run with ONNX Runtime, plugin nodes included), or a build directory.
    Preprocessing comes from the manifest next to it.

    \b
    Examples:
      vitdeploy infer build/swin_t/model.plan --image cat.jpg
      vitdeploy infer build/vit_t/model.onnx --image cat.jpg --topk 3
    """
    from rich.table import Table

    from vitdeploy.console import console
    from vitdeploy.deploy.preprocess import check_image, image_loader
    from vitdeploy.errors import VitdeployError

    import time

    as_json = json_to_stdout(json_out)
    if k < 1:
        raise VitdeployError(f"--topk must be at least 1, got {k}", "e.g. --topk 5")
    check_image(image)
    kind, file, manifest, note = resolve_artifact(artifact)
    if kind == "engine" and manifest is None:  # preprocessing and the engine check both need it
        raise VitdeployError(f"no manifest.json next to {file}", "keep the manifest 'vitdeploy build' wrote beside the engine")
    pp = (manifest or {}).get("preprocessing")
    size = None
    from vitdeploy.deploy.preprocess import is_known

    if not is_known(pp):
        size = (tuple(pp["input_size"][-2:]) if pp and pp.get("input_size") else
                _input_size_from_onnx(file) if kind == "onnx" else None)
        why = ("no manifest" if manifest is None else "the manifest records no preprocessing" if not pp else
               "the build does not state its preprocessing (build or package with --preprocess FILE.json)")
        note = (note + "; " if note else "") + f"{why}: ImageNet preprocessing assumed"
        pp = None
    from vitdeploy.weights import banner, from_manifest, is_random

    weights = from_manifest(manifest)  # random (seed) / checkpoint sha256 / pretrained tag / unknown
    if is_random(weights):
        banner(str(artifact))
    load_image = image_loader(pp or {}, size)  # set-up, not preprocessing time
    t0 = time.perf_counter()
    x, (width, height) = load_image(image)
    t1 = time.perf_counter()
    call, close = load(kind, file)
    try:
        t2 = time.perf_counter()
        outputs = call(x)
        t3 = time.perf_counter()
    finally:
        close()
    result: dict = {"artifact": str(file), "runtime": "TensorRT" if kind == "engine" else "ONNX Runtime", "image": str(image),
                    "weights": weights}
    if "pred_boxes" in outputs:
        from vitdeploy.calibration.detection import postprocess_detr

        activation = (((manifest or {}).get("postprocessing") or {}).get("scores") or {}).get("activation", "sigmoid")
        dets = postprocess_detr(outputs["logits"], outputs["pred_boxes"], (height, width), threshold=threshold, topk=k,
                                activation=activation)[0]
        names = detection_labels(manifest)
        result["box_format"] = BOX_FORMAT
        result["detections"] = [{"label": d.label, "name": names.get(d.label), "score": d.score, "box": list(d.box)}
                                for d in dets]
    else:
        logits = next(iter(outputs.values()))
        result["topk"] = topk(logits[0], k, class_names(manifest, int(logits.shape[-1])))
    t4 = time.perf_counter()
    # One image, one run: the first run includes warm-up (ONNX Runtime's, TensorRT's); `bench` measures steady state.
    result["latency_ms"] = {"preprocess": round((t1 - t0) * 1e3, 3), "load": round((t2 - t1) * 1e3, 3),
                            "inference": round((t3 - t2) * 1e3, 3), "postprocess": round((t4 - t3) * 1e3, 3)}
    result["input_shape"] = list(x.shape)
    emit_json(result, json_out)
    if as_json:
        return
    if note:
        console.print(f"[yellow]{note}[/]")
    console.print(f"{result['runtime']}: {file}")
    if "detections" in result:
        console.print(f"boxes: {BOX_FORMAT}")
        table = Table("score", "class", "name", "box (x0, y0, x1, y1)")
        for d in result["detections"]:
            table.add_row(f"{d['score']:.3f}", str(d["label"]), d["name"] or "", ", ".join(f"{v:.1f}" for v in d["box"]))
        if not result["detections"]:
            console.print(f"no detection scores above --threshold {threshold}")
    else:
        table = Table("rank", "class", "name", "probability")
        for row in result["topk"]:
            table.add_row(str(row["rank"]), str(row["class"]), row["name"] or "", f"{row['probability']:.4f}")
    console.print(table)
    lat = result["latency_ms"]
    console.print(f"Speed: {lat['preprocess']:.1f} ms preprocess, {lat['inference']:.1f} ms inference, "
                  f"{lat['postprocess']:.1f} ms postprocess per image at shape {tuple(x.shape)} "
                  f"(first run; loading took {lat['load']:.0f} ms)")
