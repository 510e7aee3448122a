"""Image -> network input, from a manifest's `preprocessing` dict: the one implementation.

`vitdeploy infer`, the build's accuracy step and calibration (`calibration/data.py`), the generated
Triton `client.py` and the Triton ensemble's Python preprocessing model all run this code: the
client and the Python model get this file's source inlined when `vitdeploy package` writes them
(`inline_source`), which is why it imports nothing but the standard library, numpy and Pillow.

It computes what timm's eval transform (`timm.data.transforms_imagenet_eval`, on a PIL image)
computes, step for step, and the tests hold it to that:

- scale_size = floor(size / crop_pct) per side;
- crop_mode "center": a square scale_size resizes the shorter side to it (torchvision's
  Resize(int): the longer side becomes int(s * long / short)); a non-square one keeps the aspect
  ratio (timm's ResizeKeepRatio: ratio = min(h / sh, w / sw), each side round(side / ratio));
  then a centre crop;
- "squash": both sides to scale_size, then a centre crop;
- "border": keep the ratio so the *longer* side fits (ratio = max(...)), then centre crop or pad
  with the mean colour (timm's CenterCropOrPad);
- the centre crop pads with zeros where the image is smaller (torchvision's CenterCrop) and
  starts at int(round((side - crop) / 2));
- RGB, x / 255 in float32, (x - mean) / std per channel, CHW.

Resizing is Pillow's `Image.resize` with the named filter, as torchvision does for PIL images.
The dict's fields are documented in docs/serving.md ("preprocessing").
"""
from __future__ import annotations

import math

import numpy as np

FILTERS = {"nearest": "NEAREST", "bilinear": "BILINEAR", "bicubic": "BICUBIC", "lanczos": "LANCZOS",
           "box": "BOX", "hamming": "HAMMING"}
CROP_MODES = ("center", "squash", "border")
DEFAULT_CROP_PCT = 0.875


def _filter(name):
    from PIL import Image

    if name not in FILTERS:
        raise ValueError(f"interpolation {name!r} is not one of {', '.join(FILTERS)}")
    resampling = getattr(Image, "Resampling", Image)  # Pillow >= 9.1 names them Image.Resampling.*
    return getattr(resampling, FILTERS[name])


def target_size(pp):
    """(height, width) of the network input."""
    h, w = (int(v) for v in pp["input_size"][-2:])
    return h, w


def scale_size(pp):
    """(height, width) the image is resized towards before the crop: floor(size / crop_pct)."""
    h, w = target_size(pp)
    pct = float(pp.get("crop_pct") or DEFAULT_CROP_PCT)
    return math.floor(h / pct), math.floor(w / pct)


def resize_spec(pp):
    """What the resize does, in words a reader (or another implementation) can follow."""
    h, w = target_size(pp)
    sh, sw = scale_size(pp)
    mode = pp.get("crop_mode") or "center"
    if mode == "center" and sh == sw:
        return {"mode": "shorter_side", "size": sh, "crop": [h, w]}
    if mode == "squash":
        return {"mode": "exact", "size": [sh, sw], "crop": [h, w]}
    if mode == "border":
        return {"mode": "longer_side (keep ratio, pad)", "size": [sh, sw], "crop": [h, w]}
    return {"mode": f"{mode} (keep ratio)", "size": [sh, sw], "crop": [h, w]}


def resized_size(image_wh, pp):
    """(width, height) the image is resized to, as timm's eval transform computes it."""
    iw, ih = image_wh
    sh, sw = scale_size(pp)
    mode = pp.get("crop_mode") or "center"
    if mode == "squash":
        return sw, sh
    if mode == "center" and sh == sw:  # torchvision Resize(int): the shorter side to s
        if iw <= ih:
            return sh, int(sh * ih / iw)
        return int(sh * iw / ih), sh
    if mode not in CROP_MODES:
        raise ValueError(f"crop_mode {mode!r} is not one of {', '.join(CROP_MODES)}")
    rh, rw = ih / sh, iw / sw  # timm ResizeKeepRatio: longest=0 (center) or 1 (border)
    ratio = max(rh, rw) if mode == "border" else min(rh, rw)
    return round(iw / ratio), round(ih / ratio)


def _center_crop(img, h, w, fill):
    """torchvision's CenterCrop (pads with `fill` where the image is smaller), on a PIL image."""
    from PIL import Image

    iw, ih = img.size
    if w > iw or h > ih:
        left, top = (w - iw) // 2 if w > iw else 0, (h - ih) // 2 if h > ih else 0
        right, bottom = (w - iw + 1) // 2 if w > iw else 0, (h - ih + 1) // 2 if h > ih else 0
        canvas = Image.new("RGB", (iw + left + right, ih + top + bottom), tuple(fill))
        canvas.paste(img, (left, top))
        img = canvas
        iw, ih = img.size
        if iw == w and ih == h:
            return img
    top, left = int(round((ih - h) / 2.0)), int(round((iw - w) / 2.0))
    return img.crop((left, top, left + w, top + h))


def transform_image(img, pp):
    """A PIL image -> (C, H, W) float32, exactly as the dict `pp` says."""
    img = img.convert("RGB")
    h, w = target_size(pp)
    size = resized_size(img.size, pp)
    if size != img.size:
        img = img.resize(size, _filter(pp.get("interpolation") or "bicubic"))
    mode = pp.get("crop_mode") or "center"
    fill = [round(255 * float(m)) for m in pp["mean"]] if mode == "border" else [0, 0, 0]
    img = _center_crop(img, h, w, fill)
    x = np.asarray(img, dtype=np.uint8).astype(np.float32) / np.float32(255)
    mean = np.asarray(pp["mean"], dtype=np.float32)
    std = np.asarray(pp["std"], dtype=np.float32)
    x = (x - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def open_image(source):
    """A path, bytes (an encoded JPEG/PNG) or a PIL image -> an RGB PIL image."""
    import io

    from PIL import Image

    if isinstance(source, Image.Image):
        return source.convert("RGB")
    if isinstance(source, (bytes, bytearray, memoryview)):
        with Image.open(io.BytesIO(bytes(source))) as im:
            return im.convert("RGB")
    with Image.open(source) as im:
        return im.convert("RGB")


def preprocess(source, pp):
    """(1, C, H, W) float32 network input and the original (width, height) of an image."""
    img = open_image(source)
    return transform_image(img, pp)[None], img.size


def inline_source():
    """This module's source, for files that must run without vitdeploy installed (client.py, model.py)."""
    from pathlib import Path

    return Path(__file__).read_text()
