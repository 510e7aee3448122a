"""Calibration and evaluation inputs: image folders read with the model's preprocessing, or arrays.

Images are decoded once, preprocessed exactly as the model was evaluated
(`vitdeploy.image_transform`, timm's eval transform step for step, from the
manifest's `preprocessing` dict: the code `infer` and the Triton client run too) and
kept in memory as one FP32 NCHW array, so calibration, accuracy runs and
every precision variant see bit-identical inputs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from vitdeploy.errors import VitdeployError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
IMAGE_KEYS = ("images", "x", "input", "inputs", "data")
LABEL_KEYS = ("labels", "y", "targets", "label")
DEFAULT_PREPROCESSING = {
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "interpolation": "bicubic",
    "crop_pct": 0.875,
    "crop_mode": "center",
}


@dataclass
class CalibrationData:
    """Preprocessed model inputs (N, C, H, W, FP32), optional int labels, and where they came from."""

    images: np.ndarray
    labels: np.ndarray | None = None
    source: str = ""
    skipped: int = 0
    files: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batches(self, batch: int) -> Iterator[np.ndarray]:
        for i in range(0, len(self), batch):
            yield self.images[i : i + batch]

    def take(self, n: int | None) -> "CalibrationData":
        if n is None or n >= len(self):
            return self
        labels = None if self.labels is None else self.labels[:n]
        return CalibrationData(self.images[:n], labels, self.source, self.skipped, self.files[:n])


def progress(total: int, description: str, show: bool = True, unit: str = "images"):
    """Yield `advance(n)`: a bar in a terminal, count lines in a log (see `vitdeploy.console.progress`)."""
    from vitdeploy.console import progress as _progress

    return _progress(total, description, show, unit)


def _expected_shape(input_shape) -> tuple | None:
    """(C, H, W) with None for symbolic dims, from an ONNX input shape (N, C, H, W)."""
    if input_shape is None:
        return None
    dims = list(input_shape)[-3:]
    return tuple(d if isinstance(d, int) and d > 0 else None for d in dims)


def _check_array(arr: np.ndarray, what: str, expected: tuple | None) -> np.ndarray:
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise VitdeployError(
            f"{what} has shape {tuple(arr.shape)}, expected N x C x H x W",
            "save preprocessed images as a 4-D float array (NCHW)",
        )
    if expected is not None:
        want = tuple(arr.shape[1:])
        if any(e is not None and e != w for e, w in zip(expected, want)):
            exp = "x".join("?" if e is None else str(e) for e in expected)
            raise VitdeployError(
                f"{what} has images of shape {'x'.join(map(str, want))}, the model expects {exp} (C x H x W)",
                "preprocess the arrays to the model's input size, or pass a folder of images",
            )
    if not np.issubdtype(arr.dtype, np.floating):
        raise VitdeployError(
            f"{what} has dtype {arr.dtype}; arrays must hold preprocessed float images",
            "normalise with the model's mean/std and save as float32, or pass a folder of images",
        )
    return np.ascontiguousarray(arr, dtype=np.float32)


def check_shape(images: np.ndarray, what: str, input_shape) -> None:
    """Raise the one-line error when `images` do not fit the model input `input_shape` (N, C, H, W)."""
    _check_array(images[:1], what, _expected_shape(input_shape))


def _pick(npz, keys, path: Path, required: bool):
    for k in keys:
        if k in npz.files:
            return npz[k]
    if required:
        if len(npz.files) == 1:
            return npz[npz.files[0]]
        raise VitdeployError(
            f"{path.name} holds arrays {npz.files} but none is named {' / '.join(keys)}",
            "store the images under the key 'images' (and labels under 'labels')",
        )
    return None


def load_arrays(path: str | os.PathLike, input_shape=None) -> CalibrationData:
    """Preprocessed inputs from .npy (images) or .npz (images [+ labels])."""
    p = Path(path)
    expected = _expected_shape(input_shape)
    try:
        loaded = np.load(p, allow_pickle=False)
    except Exception as e:
        raise VitdeployError(f"cannot read {p.name}: {str(e).splitlines()[0][:160]}", "pass a .npy or .npz file") from None
    labels = None
    if isinstance(loaded, np.ndarray):
        images = loaded
    else:
        with loaded:
            images = _pick(loaded, IMAGE_KEYS, p, required=True)
            labels = _pick(loaded, LABEL_KEYS, p, required=False)
    images = _check_array(images, p.name, expected)
    if len(images) == 0:
        raise VitdeployError(f"{p.name} holds no images", "pass a file with at least one image")
    if labels is not None:
        labels = np.asarray(labels).reshape(-1).astype(np.int64)
        if len(labels) != len(images):
            raise VitdeployError(f"{p.name} has {len(images)} images but {len(labels)} labels", "store one label per image")
    return CalibrationData(images, labels, str(p))


def image_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)


def make_transform(preprocessing: dict, input_size):
    """PIL image -> (C, H, W) float32: the one preprocessing implementation (`image_transform`)."""
    from vitdeploy.image_transform import transform_image

    pp = {**DEFAULT_PREPROCESSING, **(preprocessing or {})}
    pp["input_size"] = list(pp.get("input_size") or input_size)
    return lambda img: transform_image(img, pp)


class ImageFolder:
    """Every JPEG/PNG under a folder (nested folders allowed), decoded and preprocessed on demand.

    Streaming matters for evaluation: an ImageNet validation folder does not fit in
    memory as FP32 arrays. Unreadable files are skipped and counted in `skipped`.
    """

    labels = None

    def __init__(self, folder: str | os.PathLike, preprocessing: dict | None, input_shape=None,
                 num_images: int | None = None):
        self.folder = Path(folder)
        self.files = image_files(self.folder)
        if not self.files:
            raise VitdeployError(
                f"no images found under {self.folder}",
                f"put {', '.join(s.lstrip('.') for s in IMAGE_SUFFIXES[:3])} files there",
            )
        self.expected = _expected_shape(input_shape)
        pp = dict(preprocessing or {})
        if pp.get("source") == "none":  # a user's ONNX whose normalisation nobody stated: never guess it
            raise VitdeployError(
                f"the images under {self.folder} need the model's preprocessing, which this build does not record",
                "pass --preprocess FILE.json (docs/serving.md), or preprocessed arrays (.npy/.npz)")
        if "input_size" not in pp:
            if self.expected is None or None in self.expected:
                raise VitdeployError(
                    "the input size for these images is unknown",
                    "pass a model whose ONNX has a static C x H x W input or a manifest.json with 'preprocessing'",
                )
            pp["input_size"] = list(self.expected)
        self.transform = make_transform(pp, pp["input_size"])
        self.num_images = num_images
        self.skipped = 0
        self.source = str(self.folder)

    def __len__(self) -> int:
        """Images this folder will give (an upper bound until unreadable files are found)."""
        return min(len(self.files), self.num_images or len(self.files))

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        from PIL import Image, UnidentifiedImageError

        self.skipped, n = 0, 0
        for f in self.files:
            if self.num_images and n >= self.num_images:
                return
            try:
                with Image.open(f) as im:
                    img = im.convert("RGB")
            except (UnidentifiedImageError, OSError, ValueError):
                self.skipped += 1
                continue
            n += 1
            yield str(f), self.transform(img)
        if n == 0:
            raise VitdeployError(
                f"none of the {self.skipped} image files under {self.folder} could be read",
                "check the files are valid JPEG/PNG",
            )

    def batches(self, batch: int) -> Iterator[np.ndarray]:
        chunk: list[np.ndarray] = []
        for _, x in self:
            chunk.append(x)
            if len(chunk) == batch:
                yield _check_array(np.stack(chunk), f"images from {self.folder}", self.expected)
                chunk = []
        if chunk:
            yield _check_array(np.stack(chunk), f"images from {self.folder}", self.expected)

    def load(self, show_progress: bool = True) -> CalibrationData:
        """All images in memory (calibration sets are small)."""
        images, used = [], []
        with progress(len(self), "reading images", show_progress) as advance:
            for f, x in self:
                images.append(x)
                used.append(f)
                advance(1)
        arr = _check_array(np.stack(images), f"images from {self.folder}", self.expected)
        return CalibrationData(arr, None, str(self.folder), self.skipped, used)


def load_folder(folder: str | os.PathLike, preprocessing: dict | None, input_shape=None, num_images: int | None = None,
                show_progress: bool = True) -> CalibrationData:
    """Every JPEG/PNG under `folder`, preprocessed, in memory; unreadable files are skipped (counted)."""
    return ImageFolder(folder, preprocessing, input_shape, num_images).load(show_progress)


def load_data(path: str | os.PathLike, preprocessing: dict | None = None, input_shape=None,
              num_images: int | None = None, show_progress: bool = True) -> CalibrationData:
    """A folder of images, or a .npy/.npz of preprocessed arrays; `num_images` keeps the first N."""
    p = Path(path)
    if not p.exists():
        raise VitdeployError(f"calibration data {p} does not exist", "pass a folder of images or a .npy/.npz file")
    if p.is_dir():
        data = load_folder(p, preprocessing, input_shape, num_images, show_progress)
    elif p.suffix.lower() in (".npy", ".npz"):
        data = load_arrays(p, input_shape).take(num_images)
    else:
        raise VitdeployError(f"{p.name} is neither a folder nor a .npy/.npz file", "pass a folder of images or arrays")
    return data


def load_labels(path: str | os.PathLike) -> np.ndarray:
    """Integer class labels from .npy, .json (a list) or text (one per line)."""
    import json

    p = Path(path)
    if not p.is_file():
        raise VitdeployError(f"labels file {p} does not exist", "pass a .npy, .json or .txt file")
    try:
        if p.suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
        elif p.suffix == ".json":
            arr = np.asarray(json.loads(p.read_text()))
        else:
            arr = np.asarray([int(line) for line in p.read_text().split() if line.strip()])
        return arr.reshape(-1).astype(np.int64)
    except (ValueError, TypeError) as e:
        raise VitdeployError(f"cannot read labels from {p.name}: {str(e)[:120]}", "one integer class id per image") from None


def preprocessing_for(onnx_path: str | os.PathLike) -> dict | None:
    """The `preprocessing` dict of the manifest.json next to an ONNX file, if there is one."""
    from vitdeploy.artifact import manifest_beside

    return (manifest_beside(Path(onnx_path).resolve()) or {}).get("preprocessing")
