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
}


def build(arch: str):
    """The untrained timm model for `arch` ("vit" or "swin"), in eval mode."""
    import timm.models.swin_transformer as swin
    import timm.models.vision_transformer as vit

    spec = ARCHS[arch]
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
