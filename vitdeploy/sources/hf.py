"""Hugging Face models: a `save_pretrained` directory, or a hub id already in the local cache.

The directory's `config.json` names the class (`architectures`), which says the task: image
classification (`logits`), object detection (`logits`, `pred_boxes`) or a backbone / base model
(its feature maps or hidden states). `preprocessor_config.json` -- the image processor -- gives
the input size, mean/std (with its rescale factor folded in), resampling and crop; `id2label` the
label map. A directory whose `config.json` has timm's `architecture` key (timm's hub format) is a
timm model and is built by timm (`local-dir:`).

Nothing is downloaded unless `--pretrained` is given, and not even then with `HF_HUB_OFFLINE=1`.
"""
from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path

from vitdeploy.errors import VitdeployError

HUB_ID_RE = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
CONFIG_FILES = ("config.json", "preprocessor_config.json")
# DETR-style heads trained with a softmax over the classes plus a last "no object" class; the others
# (Deformable DETR, Conditional/DAB-DETR, RT-DETR, D-FINE, ...) score every (query, class) with a sigmoid.
SOFTMAX_DETECTORS = ("detr", "yolos", "table-transformer")
_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def looks_like_hub_id(spec: str) -> bool:
    return bool(HUB_ID_RE.fullmatch(spec)) and not Path(spec).exists()


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise VitdeployError(f"cannot read {path} ({type(e).__name__})", "check the file's permissions") from None
    except json.JSONDecodeError as e:
        raise VitdeployError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})",
                             "write it again with save_pretrained") from None
    if not isinstance(data, dict):
        raise VitdeployError(f"{path} is not a model configuration", "write it again with save_pretrained")
    return data


def info_for_dir(path: Path, *, hub_id: str | None = None):
    """The ModelInfo of a model directory (transformers' or timm's hub format)."""
    from vitdeploy.models import ModelInfo
    from vitdeploy.sources import short_name

    path = path.expanduser().resolve()
    if not (path / "config.json").is_file():
        raise VitdeployError(f"directory {path} has no config.json, so it is not a saved Hugging Face model",
                             "save it with model.save_pretrained(DIR) (transformers) or pass FILE.py:FACTORY")
    config = _read_json(path / "config.json")
    name = short_name(hub_id or str(path))
    if "architecture" in config and "model_type" not in config:  # timm's format: config.json + model.safetensors
        return _timm_dir(path, config, name, hub_id)
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        raise VitdeployError(f"{path} has a config.json but no weights (model.safetensors or pytorch_model.bin)",
                             "save the model with model.save_pretrained(DIR), which writes both")
    cls, task = model_class(config, path)
    outputs = {"classification": ("logits",), "detection": ("logits", "pred_boxes")}.get(task, ())
    return ModelInfo(name, str(config.get("model_type") or "?"), "transformers", cls, input_size(path, config), 1, (),
                     outputs=outputs, notes=f"transformers {cls}" + (f" ({hub_id})" if hub_id else ""),
                     route="huggingface", spec=str(path), task=task)


def _timm_dir(path: Path, config: dict, name: str, hub_id: str | None):
    from vitdeploy.models import ModelInfo

    arch = str(config["architecture"])
    pcfg = config.get("pretrained_cfg") or {}
    size = tuple(int(v) for v in (pcfg.get("input_size") or (3, 224, 224))[-2:])
    overrides = {"num_classes": int(config["num_classes"])} if "num_classes" in config else {}
    return ModelInfo(name, arch, "timm", f"local-dir:{path}", size, 1, (), overrides=overrides,
                     notes=f"timm {arch} from {hub_id or path}", route="huggingface", spec=str(path),
                     task="classification" if overrides.get("num_classes", 1) else "features")


def model_class(config: dict, path: Path) -> tuple[str, str]:
    """(transformers class name, task) for a config; one line for a model that is not a vision model vitdeploy builds."""
    import transformers
    from transformers.models.auto import modeling_auto as auto

    model_type = config.get("model_type")
    archs = [a for a in (config.get("architectures") or []) if hasattr(transformers, a)]
    if archs:
        cls = archs[0]
    elif model_type in auto.MODEL_MAPPING_NAMES:
        cls = auto.MODEL_MAPPING_NAMES[model_type]
    else:
        raise VitdeployError(f"{path}/config.json names no model class this transformers {transformers.__version__} knows "
                             f"(architectures {config.get('architectures')}, model_type {model_type!r})",
                             "upgrade transformers, or export it yourself and pass --onnx")
    if cls.endswith(("ForImageClassification", "ForImageClassificationWithTeacher")):
        return cls, "classification"
    if cls.endswith("ForObjectDetection"):
        return cls, "detection"
    if cls in auto.MODEL_FOR_BACKBONE_MAPPING_NAMES.values() or cls in _vision_base_models():
        return cls, "features"
    raise VitdeployError(f"{cls} in {path} is not an image classification, object detection or backbone model",
                         "vitdeploy builds those from Hugging Face; export other models yourself and pass --onnx")


@functools.lru_cache(maxsize=1)
def _vision_base_models() -> frozenset:
    """Base model classes (ViTModel, Dinov2Model, ...) of model types that have an image classifier or a backbone."""
    from transformers.models.auto import modeling_auto as auto

    vision = set(auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES) | set(auto.MODEL_FOR_BACKBONE_MAPPING_NAMES) | set(
        auto.MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES)
    return frozenset(v for k, v in auto.MODEL_MAPPING_NAMES.items() if k in vision and isinstance(v, str))


def _pair(v) -> tuple[int, int] | None:
    if isinstance(v, int):
        return v, v
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return int(v[0]), int(v[1])
    if isinstance(v, dict):
        if "height" in v and "width" in v:
            return int(v["height"]), int(v["width"])
        if "shortest_edge" in v and "longest_edge" in v:  # DETR family: a fixed network size, as the alias uses
            return int(v["shortest_edge"]), int(v["longest_edge"])
        if "shortest_edge" in v:
            return int(v["shortest_edge"]), int(v["shortest_edge"])
    return None


def processor_config(path: Path) -> dict | None:
    p = Path(path) / "preprocessor_config.json"
    return _read_json(p) if p.is_file() else None


def input_size(path: Path, config: dict) -> tuple[int, int]:
    """The network input (H, W): the image processor's crop (when it crops) or resize size, else config.image_size."""
    proc = processor_config(path) or {}
    if proc.get("do_center_crop") and _pair(proc.get("crop_size")):
        return _pair(proc["crop_size"])
    size = _pair(proc.get("size")) if proc.get("do_resize", True) else None
    if size:
        return size
    return _pair(config.get("image_size")) or (224, 224)


def preprocessing(info, size: tuple[int, int]) -> dict:
    """The manifest's `preprocessing` from the image processor's config (rescale folded into mean/std)."""
    from vitdeploy.models import resize_spec

    proc = processor_config(Path(info.spec))
    if proc is None:  # saved without its image processor: ImageNet statistics, resize straight to the input
        from vitdeploy.models import imagenet_assumed

        return imagenet_assumed(size, "no preprocessor_config.json in the model directory")
    rescale = float(proc.get("rescale_factor", 1 / 255)) if proc.get("do_rescale", True) else 1.0
    if proc.get("do_normalize", True):
        mean = [float(m) for m in _three(proc.get("image_mean"), 0.5)]
        std = [float(s) for s in _three(proc.get("image_std"), 0.5)]
    else:
        mean, std = [0.0] * 3, [1.0] * 3
    # pixel = (255 x rescale - mean) / std, for x in [0, 1] as timm's ToTensor gives it
    k = 255.0 * rescale
    mean = [m / k for m in mean]
    std = [s / k for s in std]
    crop_size = _pair(proc.get("crop_size")) if proc.get("do_center_crop") else None
    resize = proc.get("size") if isinstance(proc.get("size"), dict) else {}
    if crop_size:  # resize (shorter side), then centre-crop: crop_pct is their ratio
        crop_pct, mode = min(crop_size) / min(_pair(resize) or crop_size), "center"
    elif set(resize) == {"shortest_edge"} and proc.get("crop_pct"):  # ConvNext: shorter side to size / crop_pct, crop
        crop_pct, mode = float(proc["crop_pct"]), "center"
    else:  # height x width (ViT, RT-DETR), or DETR's shortest/longest edge at a fixed network size: resize to it
        crop_pct, mode = 1.0, "squash"
    if tuple(size) != tuple(info.input_size):  # another --img-size: resize straight to it
        crop_pct, mode = 1.0, "squash"
    out = {
        "source": "hf image processor",
        "source_detail": f"{proc.get('image_processor_type') or 'image processor'} (preprocessor_config.json in {info.spec})",
        "processor": proc.get("image_processor_type"),
        "input_size": [3, size[0], size[1]],
        "mean": mean,
        "std": std,
        "interpolation": _RESAMPLE.get(proc.get("resample"), "bilinear"),
        "crop_pct": float(min(crop_pct, 1.0)),
        "crop_mode": mode,
    }
    out["resize"] = resize_spec(out)
    return out


def _three(v, default: float) -> list[float]:
    if v is None:
        return [default] * 3
    if isinstance(v, (int, float)):
        return [float(v)] * 3
    return list(v)


def postprocessing(info) -> dict:
    if info.task == "detection":
        softmax = info.family in SOFTMAX_DETECTORS
        scores = {"output": info.outputs[0], "activation": "softmax" if softmax else "sigmoid",
                  "shape": "[B, queries, classes" + (" + 1]" if softmax else "]")}
        if softmax:
            scores["no_object"] = "last class"
        return {"task": "detection", "scores": scores,
                "boxes": {"output": info.outputs[1], "format": "cxcywh", "normalized": True, "shape": "[B, queries, 4]"},
                "select": ("per query: the best class but the last, then a score threshold" if softmax else
                           "top-k (query, class) pairs over all queries, then a score threshold")}
    if info.task == "classification":
        return {"task": "classification", "scores": {"output": info.outputs[0], "activation": "softmax",
                                                     "shape": "[B, classes]"}}
    return {"task": "features", "outputs": list(info.outputs)}


def build(info, *, pretrained: bool = False):
    """The transformers module with the directory's weights, in eval mode; a weight that does not fit is one line."""
    import torch
    import transformers

    path = Path(info.spec)
    if info.source == "timm":  # timm's hub format
        import timm

        return timm.create_model(info.name, pretrained=True, **info.overrides)
    config = transformers.AutoConfig.from_pretrained(str(path))
    for cfg in (config, getattr(config, "backbone_config", None)):  # never fetch a backbone's ImageNet weights
        if cfg is not None and getattr(cfg, "use_pretrained_backbone", False):
            cfg.use_pretrained_backbone = False
    cls = getattr(transformers, info.name)
    transformers.utils.logging.disable_progress_bar()  # the stage line says what is happening
    transformers.utils.logging.set_verbosity_error()
    try:
        model, loading = cls.from_pretrained(str(path), config=config, output_loading_info=True, dtype=torch.float32)
    except VitdeployError:
        raise
    except Exception as e:
        raise VitdeployError(f"cannot load {info.name} from {path}: {_first_line(e)}",
                             "check that the directory was written by save_pretrained with this model class") from None
    missing = list(loading.get("missing_keys") or [])
    mismatched = list(loading.get("mismatched_keys") or [])
    if missing or mismatched:
        first = (f"{len(mismatched)} weights of another shape (first: {mismatched[0][0] if isinstance(mismatched[0], tuple) else mismatched[0]})"
                 if mismatched else f"{len(missing)} weights missing (first: {missing[0]})")
        raise VitdeployError(f"the weights in {path} do not fit {info.name}: {first}",
                             "save the fine-tuned model itself with save_pretrained (config.json and weights together)")
    return model.eval()


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160]}" if text else type(e).__name__


def hub_snapshot(hub_id: str, pretrained: bool) -> Path:
    """The local snapshot of `hub_id`: from the cache, or downloaded with --pretrained (unless HF_HUB_OFFLINE)."""
    from huggingface_hub import constants, snapshot_download

    patterns = ["*.json", "*.safetensors", "*.bin", "*.txt"]
    try:
        return Path(snapshot_download(hub_id, local_files_only=True, allow_patterns=patterns))
    except Exception:
        pass
    offline = bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if not pretrained:
        raise VitdeployError(f"'{hub_id}' is not in the local Hugging Face cache ({constants.HF_HUB_CACHE})",
                             "add --pretrained to download it, or pass the directory save_pretrained wrote")
    if offline:
        raise VitdeployError(f"'{hub_id}' is not in the local Hugging Face cache and HF_HUB_OFFLINE is set",
                             "download it on a machine with network access (huggingface-cli download), or unset HF_HUB_OFFLINE")
    try:
        return Path(snapshot_download(hub_id, allow_patterns=patterns))
    except Exception as e:
        raise VitdeployError(f"could not download '{hub_id}' ({type(e).__name__})",
                             "check the hub id and the network, or pass a directory save_pretrained wrote") from None


def info_for_hub_id(hub_id: str, pretrained: bool):
    from dataclasses import replace

    info = info_for_dir(hub_snapshot(hub_id, pretrained), hub_id=hub_id)
    return replace(info, notes=f"{info.notes}; hub {hub_id}")


def directory_digest(path: Path) -> str:
    """sha256 over the directory's model files (configs and weights): the export's cache key and the manifest."""
    import hashlib

    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                   and p.suffix in (".json", ".safetensors", ".bin", ".txt", ".model"))
    return _digest(tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files),
                   lambda: hashlib.sha256(b"".join(f"{p.name}:{file_sha256(p)}\n".encode() for p in files)).hexdigest())


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


_DIGESTS: dict = {}


def _digest(stamp, compute) -> str:
    if stamp not in _DIGESTS:  # a file's bytes are read once per process, however often the key is asked for
        _DIGESTS[stamp] = compute()
    return _DIGESTS[stamp]


def hub_id_of(path: str | Path) -> str | None:
    """'org/name@commit' for a snapshot in the Hugging Face cache (.../models--org--name/snapshots/COMMIT)."""
    parts = Path(path).parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        return parts[-3].removeprefix("models--").replace("--", "/", 1) + f"@{parts[-1]}"
    return None
