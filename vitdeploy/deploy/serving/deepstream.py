"""A DeepStream `nvinfer` config (a GLib key file) for a classifier, with its labels file.

nvinfer normalises each pixel as `y = net-scale-factor * (x - offsets[c])` on 0-255
values, with ONE scale for all channels, while timm models want
`y = (x / 255 - mean[c]) / std[c]`. The offsets are exact (255 * mean); the scale is
the single value that minimises the worst-case error over every channel and pixel
value, and that error is reported, in units of the normalised input.

nvinfer scales the whole frame (or object crop) to the network size; timm's eval
transform resizes and centre-crops. That geometric difference is stated, not hidden.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from vitdeploy.deploy.serving.served import Served
from vitdeploy.errors import VitdeployError

CONFIG_NAME = "config_infer_primary.txt"
LABELS_NAME = "labels.txt"
CALIBRATION_NAME = "calibration_cache.json"
NETWORK_MODE = {"fp32": 0, "int8+fp16": 1, "int8": 1, "fp16": 2}
# NvBufSurfTransform_Inter (nvbufsurftransform.h): 0 nearest, 1 bilinear, 2 Algo1 (GPU cubic; VIC 5-tap),
# 3 Algo2 (GPU super-sampling; VIC 10-tap), 4 Algo3 (GPU Lanczos; VIC smart).
SCALING_FILTER = {"nearest": 0, "bilinear": 1, "bicubic": 2, "lanczos": 4}
CHANNELS = "RGB"


@dataclass
class Scale:
    factor: float  # net-scale-factor
    offsets: list[float]  # per channel, 0-255 units
    worst_error: float  # max |nvinfer(x) - model(x)| over channels and x in [0, 255]
    worst_channel: int
    worst_pixel: int
    exact: bool


def fit_scale(mean: list[float], std: list[float]) -> Scale:
    """One net-scale-factor for per-channel std: the minimax choice over channels and pixel values 0..255.

    The error of channel c at pixel x is |k - 1/(255 std_c)| * |x - 255 mean_c|, largest at x = 0 or 255,
    so channel c's worst case is a V in k with slope b_c = 255 max(mean_c, 1 - mean_c). The minimax k is
    one channel's exact scale or where two V's cross.
    """
    offsets = [255.0 * m for m in mean]
    a = [1.0 / (255.0 * s) for s in std]
    b = [max(o, 255.0 - o) for o in offsets]
    candidates = list(a)
    for i in range(len(a)):
        for j in range(len(a)):
            if a[i] < a[j]:
                candidates.append((a[i] * b[i] + a[j] * b[j]) / (b[i] + b[j]))

    def worst(k: float) -> float:
        return max(abs(k - ac) * bc for ac, bc in zip(a, b))

    k = min(candidates, key=worst)
    errs = [abs(k - ac) * bc for ac, bc in zip(a, b)]
    c = max(range(len(errs)), key=errs.__getitem__)
    pixel = 0 if offsets[c] >= 255.0 - offsets[c] else 255
    return Scale(k, offsets, max(errs), c, pixel, exact=len(set(std)) == 1)


def nvinfer_normalise(x, scale: Scale):
    """What nvinfer computes for 0-255 pixels `x` (..., C): the model input it feeds TensorRT."""
    import numpy as np

    return scale.factor * (np.asarray(x, dtype=np.float64) - np.asarray(scale.offsets))


def check_task(task: str | None, alias: str | None) -> None:
    if task == "segmentation":
        raise VitdeployError(
            f"--deepstream writes classifier configs (network-type=1); {alias or 'this model'} is a segmentation model, "
            "whose masks nvinfer can only read through a custom output parser",
            "package it for Triton with --triton-repo instead")
    if task == "detection":
        raise VitdeployError(
            f"--deepstream writes classifier configs (network-type=1); {alias or 'this model'} is a detector, "
            "whose boxes nvinfer can only read through a custom parse-bbox-func-name library",
            "package it for Triton with --triton-repo instead")


def check_supported(served: Served) -> None:
    from vitdeploy.deploy.serving.spec import postprocessing

    check_task(postprocessing(served).get("task"), served.alias)
    inp = served.io["inputs"]
    if len(inp) != 1 or len(inp[0]["shape"]) != 4:
        raise VitdeployError("nvinfer feeds one NCHW image input; this artifact has "
                             f"{[i['shape'] for i in inp]}", "package it for Triton with --triton-repo instead")


def render(served: Served, model_file: str, scale: Scale, pp: dict, batch_size: int) -> str:
    c, h, w = (int(v) for v in pp["input_size"])
    mode = NETWORK_MODE.get(served.precision, 0)
    lines = [
        f"# Written by vitdeploy package from {served.build_dir} ({served.alias}, {served.precision}).",
        f"# Serves {served.form}.",
        "# Paths are relative to this file. Use it as the config-file of a [primary-gie] (or nvinfer's config-file-path).",
        "[property]",
        "gpu-id=0",
        f"# y = net-scale-factor * (x - offsets): offsets = 255 * mean {pp['mean']}; one scale for std {pp['std']}"
        + ("" if scale.exact else f", worst-case input error {scale.worst_error:.4g} "
           f"({CHANNELS[scale.worst_channel]} channel at pixel {scale.worst_pixel})"),
        f"net-scale-factor={scale.factor:.10g}",
        "offsets=" + ";".join(f"{o:.6g}" for o in scale.offsets),
        "model-color-format=0",
        "network-input-order=0",
        f"infer-dims={c};{h};{w}",
    ]
    if served.kind == "engine":
        lines.append(f"model-engine-file={model_file}")
    else:
        lines.append(f"onnx-file={model_file}")
    if mode == 1:
        lines += ["# INT8 by explicit quantization: the ONNX's Q/DQ nodes carry every INT8 scale, measured with the",
                  f"# build's calibration ({CALIBRATION_NAME} beside this file records it); TensorRT needs no int8-calib-file"]
    batch = served.batch
    if batch["dynamic"]:
        lines.append(f"# the engine takes batches {batch['min']}..{batch['max']}: set this to nvstreammux's batch-size")
    lines += [
        f"batch-size={batch_size}",
        f"network-mode={mode}",
        "network-type=1",
        "process-mode=1",
        "gie-unique-id=1",
        f"labelfile-path={LABELS_NAME}",
        "output-blob-names=" + ";".join(o["name"] for o in served.io["outputs"]),
        "# the model outputs logits, not probabilities: nvinfer keeps the top class when its raw value exceeds",
        "# classifier-threshold, so this keeps it always (as 'vitdeploy infer' does); raise it on the logit scale",
        "classifier-threshold=-1e+09",
        f"# timm's eval transform resizes ({pp['interpolation']}) and centre-crops; nvinfer scales the whole frame "
        f"to {w}x{h}",
        "maintain-aspect-ratio=0",
        f"scaling-filter={SCALING_FILTER.get(pp['interpolation'], 1)}",
    ]
    return "\n".join(lines) + "\n"


def write(served: Served, out_dir: Path) -> dict:
    """DIR/config_infer_primary.txt, DIR/labels.txt and the model file; returns what was written and the scale."""
    from vitdeploy.artifact import atomic_copy, atomic_write_bytes, ensure_writable_dir
    from vitdeploy.deploy.serving import spec

    check_supported(served)
    pp = spec.preprocessing(served)
    scale = fit_scale([float(v) for v in pp["mean"]], [float(v) for v in pp["std"]])
    n = spec.num_classes(served)
    real = spec.class_names(served)
    names = real or ([f"class_{i}" for i in range(n)] if n else None)  # nvinfer needs a label per class
    if not names:
        raise VitdeployError("the number of classes is unknown", "rebuild with 'vitdeploy build', which records it")
    out_dir, _ = ensure_writable_dir(out_dir)
    model_file = "model.plan" if served.kind == "engine" else "model.onnx"
    if served.kind == "onnx":  # with its external data files, under the names the graph gives them
        from vitdeploy.onnx_files import copy_onnx

        copy_onnx(served.file, out_dir / model_file)
    else:
        atomic_copy(served.file, out_dir / model_file)
    # Classifier label files hold one line per output, classes separated by ';'.
    atomic_write_bytes(out_dir / LABELS_NAME, (";".join(x.replace(";", ",") for x in names) + "\n").encode())
    calibration = None
    if served.precision.startswith("int8"):  # the scales in the Q/DQ graph came from this cache: keep it with them
        from vitdeploy.deploy.serving.served import calibration_cache

        src = calibration_cache(served.build_dir, served.manifest)
        if src is not None:
            calibration = out_dir / CALIBRATION_NAME
            atomic_write_bytes(calibration, src.read_bytes())
    batch_size = served.batch["opt"]
    text = render(served, model_file, scale, pp, batch_size)
    atomic_write_bytes(out_dir / CONFIG_NAME, text.encode())
    return {"config": out_dir / CONFIG_NAME, "labels": out_dir / LABELS_NAME, "model": out_dir / model_file,
            "scale": scale, "names": len(names), "placeholder_labels": real is None, "preprocessing": pp,
            "calibration": calibration}


def read_config(path: Path) -> dict:
    """The [property] group as nvinfer reads it: GLib key-file syntax (comments '#', lists ';')."""
    import configparser

    parser = configparser.ConfigParser(interpolation=None, comment_prefixes=("#",), inline_comment_prefixes=None,
                                       delimiters=("=",))
    parser.optionxform = str  # keys are case-sensitive in GLib key files
    parser.read_string(Path(path).read_text())
    return dict(parser["property"])
