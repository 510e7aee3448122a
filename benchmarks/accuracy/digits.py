"""scikit-learn digits as a tiny image-classification task for honest precision measurements.

Random weights say nothing about INT8 accuracy, so vitdeploy trains a small
Swin and a small ViT (timm's own classes with fewer blocks and channels, so the
exported graphs have the same structure as swin_t/vit_t) on the 8x8 digits,
upscaled to IMG px and replicated to 3 channels. The train/test split is fixed
by SEED so every measurement uses the same held-out images.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

IMG = 32
SEED = 0
TEST_FRACTION = 0.25
CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)

# timm constructor kwargs: same classes as swin_t / vit_t, fewer blocks and channels.
ARCHS: dict[str, dict] = {
    "vit": dict(
        cls="VisionTransformer",
        kwargs=dict(img_size=IMG, patch_size=4, num_classes=10, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0),
    ),
    "swin": dict(
        cls="SwinTransformer",
        kwargs=dict(
            img_size=IMG, patch_size=2, window_size=4, num_classes=10, embed_dim=32, depths=(2, 2), num_heads=(2, 4),
            mlp_ratio=2.0,
        ),
    ),
    # timm's HaloNet blocks (ByobNet bottleneck + self_attn with HaloAttn) at digits size: HaloAttn
    # with stride 2 (16->8, 8->4), stride 1 on 4 blocks (8x8) and on one block (4x4).
    "halonet": dict(
        cls="ByobNet",
        kwargs=dict(
            cfg=dict(
                blocks=[dict(type="bottle", d=1, c=32, s=1, gs=0, br=0.5),
                        dict(type="self_attn", d=2, c=64, s=2, gs=0, br=0.5),
                        dict(type="self_attn", d=2, c=128, s=2, gs=0, br=0.5)],
                stem_chs=16, stem_type="", stem_pool="", self_attn_layer="halo",
                self_attn_kwargs=dict(block_size=4, halo_size=1, num_heads=2)),
            num_classes=10, img_size=IMG, zero_init_last=False,
        ),
        passes=["halo"],
    ),
}


def build(arch: str):
    """The untrained timm model for `arch` ("vit", "swin" or "halonet"), in eval mode."""
    import timm.models.swin_transformer as swin
    import timm.models.vision_transformer as vit

    spec = ARCHS[arch]
    if spec["cls"] == "ByobNet":  # HaloNet: timm's ByobNet from a plain-dict config (kept JSON-able)
        from timm.models.byobnet import ByobNet, ByoBlockCfg, ByoModelCfg

        kw = dict(spec["kwargs"])
        cfg = dict(kw.pop("cfg"))
        cfg["blocks"] = tuple(ByoBlockCfg(**b) for b in cfg["blocks"])
        return ByobNet(ByoModelCfg(**cfg), **kw).eval()
    cls = getattr(vit if spec["cls"] == "VisionTransformer" else swin, spec["cls"])
    return cls(**spec["kwargs"]).eval()


def checkpoint_path(arch: str) -> Path:
    return CHECKPOINTS / f"digits_{arch}.safetensors"


def load_trained(arch: str):
    """The committed trained model (raises FileNotFoundError before training)."""
    from vitdeploy.models import load_checkpoint

    model = build(arch)
    load_checkpoint(model, checkpoint_path(arch))
    return model.eval()


def dataset() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): normalised NCHW FP32 images and int64 labels."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]  # N,1,8,8 in [0,1]
    x = F.interpolate(x, size=(IMG, IMG), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    x = ((x - mean) / std).numpy().astype(np.float32)
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=TEST_FRACTION, random_state=SEED, stratify=y)
    return xtr, ytr, xte, yte


def export(arch: str, path: Path, max_batch: int = 64) -> Path:
    """Export the trained model to FP32 ONNX with a dynamic batch (vitdeploy's exporter)."""
    import torch

    from vitdeploy.deploy.export import BatchSpec, export_onnx

    model = load_trained(arch)
    export_onnx(model, torch.zeros(2, 3, IMG, IMG), path, batch=BatchSpec.parse(f"1:8:{max_batch}"))
    return Path(path)


def measure(arch: str, workdir: Path, methods=("entropy", "percentile", "minmax"), calib_images: int = 256,
            onnx_path: Path | None = None) -> dict:
    """FP32 vs FP16 vs INT8 (each method) top-1 on the held-out split, all through ONNX Runtime."""
    import onnx

    from vitdeploy.calibration.accuracy import accuracy_points, compare_logits, run_model
    from vitdeploy.calibration.data import CalibrationData
    from vitdeploy.calibration.precision import convert_fp16
    from vitdeploy.calibration.quantization import quantize_int8

    workdir = Path(workdir)
    xtr, _, xte, yte = dataset()
    test = CalibrationData(xte, yte, "digits held-out split")
    calib = CalibrationData(xtr[:calib_images], None, "digits training split")
    fp32_path = onnx_path or export(arch, workdir / f"digits_{arch}.onnx")
    fp32 = run_model(str(fp32_path), test, batch=64)
    result = {"fp32": {"top1": accuracy_points(fp32, yte)}}
    fp16_model, fp16_summary = convert_fp16(onnx.load(str(fp32_path)))
    fp16 = run_model(fp16_model, test, batch=64)
    result["fp16"] = _entry(fp16, fp32, yte, compare_logits)
    result["fp16"]["fp32_ops"] = fp16_summary["fp32_ops"]
    for method in methods:
        qdq, cache, summary = quantize_int8(fp32_path, calib, method, show_progress=False)
        logits = run_model(qdq, test, batch=64)
        result[f"int8_{method}"] = _entry(logits, fp32, yte, compare_logits)
        result[f"int8_{method}"].update(int8_nodes=len(summary["int8_nodes"]), fp16_nodes=len(summary["fp16_nodes"]),
                                        excluded=summary["excluded"])
    passes = ARCHS[arch].get("passes")
    if passes:  # the graph `build` deploys: rewritten (plugin nodes run their FP32 reference here), then converted
        from vitdeploy.deploy.rewrite.driver import run_passes

        rewritten, report = run_passes(onnx.load(str(fp32_path)), passes, "plugin")
        rw_path = workdir / f"digits_{arch}.rewritten.onnx"
        onnx.save(rewritten, str(rw_path))
        replaced = sum(p["replaced"] for p in report["passes"])
        fp16_rw, _ = convert_fp16(rewritten)
        result["fp16_rewritten"] = _entry(run_model(fp16_rw, test, batch=64), fp32, yte, compare_logits)
        qdq, _, summary = quantize_int8(rw_path, calib, "entropy", show_progress=False)
        result["int8_entropy_rewritten"] = _entry(run_model(qdq, test, batch=64), fp32, yte, compare_logits)
        result["int8_entropy_rewritten"].update(int8_nodes=len(summary["int8_nodes"]))
        for key in ("fp16_rewritten", "int8_entropy_rewritten"):
            result[key]["rewrite"] = {"passes": passes, "replaced": replaced}
    return {"arch": arch, "model": ARCHS[arch], "test_images": int(len(yte)), "calibration_images": int(len(calib)),
            "results": result}


def _entry(logits, fp32, labels, compare_logits) -> dict:
    from vitdeploy.calibration.accuracy import accuracy_points

    cmp = compare_logits(fp32, logits)
    top1 = accuracy_points(logits, labels)
    return {"top1": top1, "drop_points": accuracy_points(fp32, labels) - top1, "top1_agreement": cmp["top1_agreement"],
            "cosine_mean": cmp["cosine_mean"], "max_abs_error": cmp["max_abs_error"]}
