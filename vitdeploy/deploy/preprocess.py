"""Image file -> model input, exactly as the manifest's `preprocessing` says.

The arithmetic is `image_transform`'s, the one implementation `infer`, the accuracy step,
calibration, the generated Triton client and the ensemble's Python model share; it equals
timm's eval transform (resize by crop_pct, centre crop, squash or border, normalise) step for
step, so an engine sees what the model saw in evaluation. It needs numpy and Pillow only.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vitdeploy.errors import VitdeployError

IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "interpolation": "bicubic",
            "crop_pct": 0.875, "crop_mode": "center"}


def check_image(path: str | os.PathLike) -> Path:
    """The path as a file that exists, else the one-line error (before any slow set-up)."""
    p = Path(path)
    if p.is_dir():
        raise VitdeployError(f"image {p} is a directory", "pass one image file")
    if not p.is_file():
        raise VitdeployError(f"image {p} does not exist", "check the --image path")
    return p


def open_rgb(path: str | os.PathLike):
    from PIL import Image, UnidentifiedImageError

    p = check_image(path)
    try:
        with Image.open(p) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise VitdeployError(f"cannot read image {p.name} ({type(e).__name__})", "pass a JPEG or PNG file") from None


def transform(preprocessing: dict, input_size: tuple[int, int] | None = None):
    """PIL image -> (C, H, W) float32 for a manifest `preprocessing` dict (ImageNet defaults fill gaps)."""
    from vitdeploy.image_transform import transform_image

    pp = {**IMAGENET, **(preprocessing or {})}
    size = pp.get("input_size") or ([3, *input_size] if input_size else None)
    if size is None:
        raise VitdeployError("the model's input size is unknown", "use an artifact with a manifest.json or a static ONNX input")
    pp["input_size"] = list(size)
    return lambda img: transform_image(img, pp)


def load_image(path: str | os.PathLike, preprocessing: dict, input_size: tuple[int, int] | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """(1, C, H, W) FP32 input and the original (width, height)."""
    return image_loader(preprocessing, input_size)(path)


def image_loader(preprocessing: dict, input_size: tuple[int, int] | None = None):
    """`load_image` with the transform resolved once (and its errors raised before any image is timed)."""
    tf = transform(preprocessing, input_size)

    def load(path: str | os.PathLike) -> tuple[np.ndarray, tuple[int, int]]:
        img = open_rgb(path)
        return tf(img)[None], img.size

    return load


# ----------------------------------------------------------------------------- the manifest's record
# `preprocessing` in manifest.json (docs/serving.md, "preprocessing"):
#
#   input_size     [C, H, W] of the network input
#   mean, std      per channel, applied to x / 255
#   interpolation  nearest | bilinear | bicubic | lanczos | box | hamming (Pillow's filters)
#   crop_pct       resize towards floor(size / crop_pct) before the centre crop (1.0: no crop)
#   crop_mode      center (keep the ratio, shorter side; a non-square input keeps the ratio too) |
#                  squash (both sides) | border (keep the ratio, longer side, pad with the mean colour)
#   resize         derived: what the resize does (`image_transform.resize_spec`), for readers
#   source         where the rest came from, one of SOURCES; "none" when nobody said (a user's ONNX
#                  built without --preprocess): only input_size is known, and no serving config is written
#   source_detail  which config or file: a timm model tag, an image processor class, a path and its sha256
#
# `labels`: {"num_classes", "names" (index order, or absent), "source"}.

SOURCES = ("timm pretrained_cfg", "hf image processor", "user file", "none")
FIELDS = ("mean", "std", "interpolation", "crop_pct", "crop_mode")
_PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def unknown(input_size) -> dict:
    """The record of a model whose preprocessing nobody stated: its input size only."""
    return {"input_size": [int(v) for v in input_size], "source": "none",
            "source_detail": "not recorded: pass --preprocess FILE.json (docs/serving.md)"}


def is_known(pp: dict | None) -> bool:
    """Whether `pp` states the normalisation (manifests from before `source` existed were recorded from
    the model registry, so they count as stated)."""
    return bool(pp) and pp.get("source") != "none" and all(k in pp for k in ("mean", "std"))


def describe_source(pp: dict | None) -> str:
    if not pp:
        return "no preprocessing recorded"
    src = pp.get("source") or "recorded by an earlier vitdeploy (model registry)"
    return src + (f" ({pp['source_detail']})" if pp.get("source_detail") and src != "none" else "")


def _bad(path, what: str):
    return VitdeployError(f"--preprocess {Path(path).name}: {what}", "see docs/serving.md for the format")


def from_hf_processor(cfg: dict, input_size=None, detail: str | None = None) -> dict:
    """A Hugging Face image processor's config (preprocessor_config.json, or `processor.to_dict()`) as a
    `preprocessing` record. The resize maps to this module's modes: size {height, width} -> squash;
    {shortest_edge} -> center (keep the ratio); a centre crop of crop_size -> crop_pct = crop / size."""
    if cfg.get("do_rescale", True) and abs(float(cfg.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-9:
        raise VitdeployError(f"the image processor rescales by {cfg.get('rescale_factor')}, not 1/255",
                             "write the preprocessing as a vitdeploy --preprocess file (docs/serving.md)")
    norm = cfg.get("do_normalize", True)
    mean = [float(v) for v in (cfg.get("image_mean") if norm else [0.0, 0.0, 0.0])]
    std = [float(v) for v in (cfg.get("image_std") if norm else [1.0, 1.0, 1.0])]
    resample = cfg.get("resample", 2)
    interpolation = _PIL_RESAMPLE.get(resample, resample if isinstance(resample, str) else None)
    size = cfg.get("size")
    if isinstance(size, int):
        size = {"shortest_edge": size}
    size = size or {}
    crop = cfg.get("crop_size") if cfg.get("do_center_crop") else None
    crop = {"height": crop, "width": crop} if isinstance(crop, int) else crop
    if "height" in size and "width" in size:
        mode, scaled = "squash", int(size["height"])
    elif "shortest_edge" in size:
        mode, scaled = "center", int(size["shortest_edge"])
    else:
        raise VitdeployError(f"the image processor's size {size} has no height/width or shortest_edge",
                             "write the preprocessing as a vitdeploy --preprocess file (docs/serving.md)")
    if input_size is None:
        h, w = ((crop["height"], crop["width"]) if crop else
                ((size["height"], size["width"]) if mode == "squash" else (scaled, scaled)))
        input_size = [len(mean), int(h), int(w)]
    pct = float(crop["height"]) / scaled if crop else 1.0
    out = {"input_size": [int(v) for v in input_size], "mean": mean, "std": std, "interpolation": interpolation,
           "crop_pct": min(1.0, pct), "crop_mode": mode, "source": "hf image processor",
           "source_detail": detail or cfg.get("image_processor_type") or "image processor config"}
    return validate(out, "the image processor")


def validate(pp: dict, where: str = "preprocessing", input_size=None) -> dict:
    """Check every field (and the input size against the artifact's); fill `resize`. Raises one line."""
    from vitdeploy.image_transform import CROP_MODES, FILTERS, resize_spec

    def bad(what):
        return VitdeployError(f"{where}: {what}", "see docs/serving.md for the format")

    missing = [k for k in ("mean", "std", "interpolation", "crop_mode") if pp.get(k) is None]
    if missing:
        raise bad(f"lacks {', '.join(missing)} (nothing is assumed)")
    mean, std = pp["mean"], pp["std"]
    if not (isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) and mean
            and all(isinstance(v, (int, float)) for v in mean + std)):
        raise bad("mean and std must be lists of numbers of the same length (one per channel)")
    if any(v <= 0 for v in std):
        raise bad("every std must be positive")
    if pp["interpolation"] not in FILTERS:
        raise bad(f"interpolation {pp['interpolation']!r} is not one of {', '.join(FILTERS)}")
    if pp["crop_mode"] not in CROP_MODES:
        raise bad(f"crop_mode {pp['crop_mode']!r} is not one of {', '.join(CROP_MODES)}")
    pct = pp.get("crop_pct", 1.0)
    if not isinstance(pct, (int, float)) or not 0 < pct <= 1:
        raise bad(f"crop_pct {pct!r} must be in (0, 1]")
    size = pp.get("input_size") or (list(input_size) if input_size else None)
    if input_size is not None and pp.get("input_size") and [int(v) for v in pp["input_size"]] != [int(v) for v in input_size]:
        raise bad(f"input_size {pp['input_size']} differs from the model's input {list(input_size)}")
    if not size or len(size) != 3:
        raise bad("input_size [C, H, W] is unknown (give it, or use a model with a static input)")
    if len(mean) != int(size[0]):
        raise bad(f"{len(mean)} mean/std values for {size[0]} input channels")
    out = {**pp, "input_size": [int(v) for v in size], "mean": [float(v) for v in mean],
           "std": [float(v) for v in std], "crop_pct": float(pct)}
    out["resize"] = resize_spec(out)
    return out


def load_preprocess_file(path: str | os.PathLike, input_size=None) -> dict:
    """`--preprocess FILE.json`: a vitdeploy record (FIELDS, optional input_size) or a Hugging Face
    preprocessor_config.json; source "user file" with the path and its sha256."""
    import json

    from vitdeploy.artifact import sha256_file

    p = Path(path)
    if not p.is_file():
        raise VitdeployError(f"--preprocess {p} does not exist", "pass a JSON file (docs/serving.md)")
    try:
        cfg = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _bad(p, f"not valid JSON ({getattr(e, 'msg', type(e).__name__)})") from None
    if not isinstance(cfg, dict):
        raise _bad(p, "must be a JSON object")
    detail = f"{p.resolve()} sha256 {sha256_file(p)[:12]}"
    if "image_mean" in cfg or "image_processor_type" in cfg:
        out = from_hf_processor(cfg, input_size, detail)
    else:
        unknown_keys = sorted(set(cfg) - {*FIELDS, "input_size", "source", "source_detail", "resize"})
        if unknown_keys:
            raise _bad(p, f"unknown field {unknown_keys[0]!r} (fields: {', '.join(('input_size', *FIELDS))})")
        out = validate({k: v for k, v in cfg.items() if k not in ("source", "source_detail", "resize")},
                       f"--preprocess {p.name}", input_size)
    return {**out, "source": "user file", "source_detail": detail}


def load_labels_file(path: str | os.PathLike, num_classes: int | None = None) -> dict:
    """`--labels FILE`: one name per line (.txt, Triton's labels.txt), a JSON list, a JSON object
    {"0": "cat", ...}, or a Hugging Face config.json's id2label. The count must match the model's."""
    import json

    p = Path(path)
    if not p.is_file():
        raise VitdeployError(f"--labels {p} does not exist", "pass a text file with one class name per line")
    text = p.read_text()
    if p.suffix.lower() == ".json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise VitdeployError(f"--labels {p.name} is not valid JSON ({e.msg})", "or pass a .txt, one name per line") from None
        if isinstance(obj, dict) and isinstance(obj.get("id2label"), dict):
            obj = obj["id2label"]
        if isinstance(obj, dict):
            try:
                idx = {int(k): str(v) for k, v in obj.items()}
            except ValueError:
                raise VitdeployError(f"--labels {p.name}: keys must be class indices", 'e.g. {"0": "cat", "1": "dog"}') from None
            if sorted(idx) != list(range(len(idx))):
                raise VitdeployError(f"--labels {p.name}: class indices are not 0..{len(idx) - 1}", "list every class once")
            names = [idx[i] for i in range(len(idx))]
        elif isinstance(obj, list) and all(isinstance(v, (str, int, float)) for v in obj):
            names = [str(v) for v in obj]
        else:
            raise VitdeployError(f"--labels {p.name}: expected a list of names or an index -> name object",
                                 'e.g. ["cat", "dog"]')
    else:
        names = text.splitlines()
        while names and not names[-1].strip():
            names.pop()
    if not names:
        raise VitdeployError(f"--labels {p.name} holds no class names", "one name per line")
    if num_classes is not None and len(names) != num_classes:
        raise VitdeployError(f"--labels {p.name} has {len(names)} names and the model {num_classes} classes",
                             "give one name per output class, in index order")
    return {"num_classes": len(names), "names": names, "source": "user file", "source_detail": str(p.resolve())}


def record_for_build(fields: dict, preprocess_file=None, labels_file=None) -> list[str]:
    """Put what the user stated (--preprocess / --labels) into a build's manifest fields, and record
    "none" where nobody stated the preprocessing (a user's ONNX without a manifest), so nothing
    downstream mistakes a default for the model's. Returns lines worth printing."""
    io = fields.get("export") or {}
    inputs = io.get("inputs") or []
    shape = inputs[0]["shape"] if len(inputs) == 1 else None
    size = list(shape[1:]) if shape and len(shape) == 4 and all(isinstance(d, int) and d > 0 for d in shape[1:]) else None
    notes = []
    if preprocess_file:
        fields["preprocessing"] = load_preprocess_file(preprocess_file, size or (fields.get("preprocessing") or {}).get("input_size"))
        notes.append(f"preprocessing from {Path(preprocess_file).name} ({describe_source(fields['preprocessing'])})")
    elif not is_known(fields.get("preprocessing")) and size:
        fields["preprocessing"] = unknown(size)
        notes.append("preprocessing: none recorded (a given ONNX without a manifest); infer assumes ImageNet, "
                     "package refuses until it is stated: pass --preprocess FILE.json (docs/serving.md)")
    if labels_file:
        outputs = io.get("outputs") or []
        n = outputs[0]["shape"][-1] if outputs and outputs[0].get("shape") and isinstance(outputs[0]["shape"][-1], int) else None
        task = (fields.get("postprocessing") or {}).get("task")
        fields["labels"] = load_labels_file(labels_file, n if task in (None, "classification") else None)
        notes.append(f"labels from {Path(labels_file).name}: {fields['labels']['num_classes']} classes")
    return notes
