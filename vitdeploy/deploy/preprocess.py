"""Image file -> model input, exactly as the manifest's `preprocessing` says.

Uses timm's eval transform (resize by crop_pct, center crop or squash,
normalise), the same one the model was evaluated with and the one calibration
uses, so an engine sees what the model saw in training.
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
    """timm's eval transform for a manifest `preprocessing` dict (ImageNet defaults fill gaps)."""
    from timm.data import create_transform

    pp = {**IMAGENET, **(preprocessing or {})}
    size = pp.get("input_size") or ([3, *input_size] if input_size else None)
    if size is None:
        raise VitdeployError("the model's input size is unknown", "use an artifact with a manifest.json or a static ONNX input")
    kw = dict(input_size=tuple(size), is_training=False, interpolation=pp["interpolation"],
              mean=tuple(pp["mean"]), std=tuple(pp["std"]))
    if pp.get("crop_mode") == "squash" and pp.get("crop_pct", 1.0) >= 1.0:
        kw.update(crop_pct=1.0, crop_mode="squash")  # resize straight to H x W (DETR)
    else:
        kw.update(crop_pct=pp["crop_pct"], crop_mode=pp.get("crop_mode", "center"))
    return create_transform(**kw)


def load_image(path: str | os.PathLike, preprocessing: dict, input_size: tuple[int, int] | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """(1, C, H, W) FP32 input and the original (width, height)."""
    return image_loader(preprocessing, input_size)(path)


def image_loader(preprocessing: dict, input_size: tuple[int, int] | None = None):
    """`load_image` with the transform built once: building it imports timm and torch (seconds), which
    is set-up, not per-image preprocessing time."""
    tf = transform(preprocessing, input_size)

    def load(path: str | os.PathLike) -> tuple[np.ndarray, tuple[int, int]]:
        img = open_rgb(path)
        return tf(img).numpy().astype(np.float32)[None], img.size

    return load
