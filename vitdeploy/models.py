"""The models vitdeploy knows: aliases, where they come from, how to build them.

Everything here builds models with random weights unless a checkpoint or
`pretrained=True` is given; tests never download anything.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitdeploy.errors import VitdeployError


@dataclass(frozen=True)
class ModelInfo:
    alias: str
    family: str  # vit | deit | swin | swinv2 | convit | mixer | halonet | deformable_detr | sam | tinyvit | hiera | maxvit | twins
    source: str  # timm | transformers
    name: str  # timm model name, or the HF hub id of the pretrained weights
    input_size: tuple[int, int]  # (H, W) the model was designed for
    size_multiple: int  # H and W must be multiples of this
    passes: tuple[str, ...] = ()  # rewrite passes that apply
    outputs: tuple[str, ...] = ("logits",)
    notes: str = ""
    overrides: dict = field(default_factory=dict, hash=False, compare=False)  # extra timm.create_model kwargs
    exporters: tuple[str, ...] = ("dynamo", "torchscript")  # the ONNX exporters that can export it
    # Models that are not aliases (vitdeploy.sources): how --model named them and what to build.
    route: str = "alias"  # alias | timm | huggingface | python
    spec: str = ""  # timm name[.tag], HF directory, or file.py:factory / module:factory (route != alias)
    task: str = ""  # classification | detection | features ("": from the family)
    input_name: str = "input"


def _timm(alias, family, name, size=224, multiple=16, passes=(), **kw) -> ModelInfo:
    return ModelInfo(alias, family, "timm", name, (size, size), multiple, tuple(passes), **kw)


_SWIN = ("swin",)
_GPSA = ("gpsa", "attention_scale")  # then ConViT's MHSA blocks get their scale on q
# HaloNet (timm byoanet): random weights with zero_init_last=False, else every residual branch's last
# BatchNorm starts at zero and a random-weight model's output would not depend on its attention at all.
# Only the dynamo exporter: TorchScript cannot export HaloAttn's Tensor.unfold.
_HALO = dict(size=256, multiple=256, passes=("halo",), overrides={"zero_init_last": False}, exporters=("dynamo",))
# Windowed-attention image encoders (issue 24): every windowed block goes to WindowAttention (or, for SAM's
# decomposed relative position, WindowAttentionRelPos) through the generalised `swin` pass; global-attention
# blocks (SAM's, Hiera's later stages, Twins' sub-sampled ones) are left to TensorRT and named in the report.
# The SAM-style encoders output their feature map (num_classes=0, no pooling), not class logits.
_ENCODER = dict(outputs=("image_embeddings",), overrides={"num_classes": 0, "global_pool": ""})
_WINDOWED_ENCODERS = (
    # SAM, Hiera and Twins: the dynamo exporter cannot export timm's SDPA call on their 3-D / 5-D q, k, v
    # (torch 2.14; check_exporter says so), TorchScript can
    _timm("sam_vit_b", "sam", "samvit_base_patch16", size=1024, multiple=16, passes=_SWIN, exporters=("torchscript",),
          notes="SAM ViT-B image encoder: 14x14 windows with decomposed relative position, 4 global blocks", **_ENCODER),
    _timm("mobile_sam", "tinyvit", "tiny_vit_5m_224", size=1024, multiple=32, passes=_SWIN,
          notes="MobileSAM's encoder backbone: timm TinyViT-5M at 1024 (windows 7/14 padded), features at 1/32",
          **_ENCODER),
    _timm("hiera_t", "hiera", "hiera_tiny_224", multiple=32, passes=_SWIN, exporters=("torchscript",),
          notes="SAM 2's encoder family: mask-unit attention (stages 1-2, query pooling), global after"),
    _timm("maxvit_t", "maxvit", "maxvit_tiny_tf_224", multiple=32, passes=_SWIN,
          notes="block (window) + grid attention, window = image / 32"),
    _timm("twins_svt_s", "twins", "twins_svt_small", multiple=32, passes=_SWIN, exporters=("torchscript",),
          notes="locally-grouped (7x7 windows, padded) + global sub-sampled attention"),
)
# Families whose timm constructor takes no img_size (the blocks size their windows from the input).
_NO_IMG_SIZE = ("tinyvit",)
REGISTRY: dict[str, ModelInfo] = {
    m.alias: m
    for m in [
        _timm("vit_t", "vit", "vit_tiny_patch16_224"),
        _timm("vit_s", "vit", "vit_small_patch16_224"),
        _timm("vit_b", "vit", "vit_base_patch16_224"),
        _timm("vit_b_384", "vit", "vit_base_patch16_384", size=384),
        _timm("deit_t", "deit", "deit_tiny_patch16_224"),
        _timm("deit_s", "deit", "deit_small_patch16_224"),
        _timm("deit_b", "deit", "deit_base_patch16_224"),
        _timm("deit_b_distilled", "deit", "deit_base_distilled_patch16_224"),
        # Swin: any H, W that are multiples of the 4x4 patch (timm pads odd maps before patch merging
        # and clamps each block's window to its map per dimension, so non-square inputs work).
        _timm("swin_t", "swin", "swin_tiny_patch4_window7_224", multiple=4, passes=_SWIN),
        _timm("swin_s", "swin", "swin_small_patch4_window7_224", multiple=4, passes=_SWIN),
        _timm("swin_b", "swin", "swin_base_patch4_window7_224", multiple=4, passes=_SWIN),
        _timm("swin_b_384", "swin", "swin_base_patch4_window12_384", size=384, multiple=4, passes=_SWIN),
        _timm("swinv2_t", "swinv2", "swinv2_tiny_window8_256", size=256, multiple=4, passes=_SWIN),
        _timm("swinv2_s", "swinv2", "swinv2_small_window16_256", size=256, multiple=4, passes=_SWIN),
        _timm("swinv2_b", "swinv2", "swinv2_base_window12to24_192to384", size=384, multiple=4, passes=_SWIN,
              notes="ImageNet-22k 192px pre-training, fine-tuned at 384 with 24x24 windows"),
        _timm("convit_t", "convit", "convit_tiny", passes=_GPSA),
        _timm("convit_s", "convit", "convit_small", passes=_GPSA),
        _timm("convit_b", "convit", "convit_base", passes=_GPSA),
        _timm("halonet26t", "halonet", "halonet26t", **_HALO, notes="block 8, halo 2"),
        _timm("sehalonet33ts", "halonet", "sehalonet33ts", **_HALO, notes="block 8, halo 3, SE"),
        _timm("halonet50ts", "halonet", "halonet50ts", **_HALO, notes="block 8, halo 3"),
        _timm("eca_halonext26ts", "halonet", "eca_halonext26ts", **_HALO, notes="block 8, halo 2, dim_head 16, ECA"),
        *_WINDOWED_ENCODERS,
        _timm("mixer_s", "mixer", "mixer_s16_224"),
        _timm("mixer_b", "mixer", "mixer_b16_224"),
        ModelInfo(
            "deformable_detr",
            "deformable_detr",
            "transformers",
            "SenseTime/deformable-detr",
            (800, 1333),
            1,  # any size: the backbone's strided convs round, and the pixel mask covers padding
            ("msda",),
            outputs=("logits", "pred_boxes"),
            notes="DeformableDetrForObjectDetection, timm ResNet-50 backbone",
        ),
    ]
}

# --- Hugging Face real-time DETRs and Mask2Former (configs and builders: vitdeploy/hf_detectors.py) ------------
# RT-DETR v2 and D-FINE export with TorchScript only: the dynamo exporter fails in PyTorch on the
# aten._is_all_true of transformers' torch_compilable_check in their deformable attention.
_RTDETR = dict(multiple=32, passes=("msda",), outputs=("logits", "pred_boxes"))


def _hf(alias, family, variant, name, size, notes, **kw):
    base = dict(_RTDETR)
    base.update(kw)
    return ModelInfo(alias, family, "transformers", name, size, base.pop("multiple"), base.pop("passes"),
                     outputs=base.pop("outputs"), notes=notes, overrides={"variant": variant}, **base)


REGISTRY.update({m.alias: m for m in [
    _hf("rtdetr_r18", "rtdetr", "r18", "PekingU/rtdetr_r18vd", (640, 640),
        "RTDetrForObjectDetection, ResNet-18-vd, 3 decoder layers, 300 queries, 3 levels x 4 points"),
    _hf("rtdetr_r50", "rtdetr", "r50", "PekingU/rtdetr_r50vd", (640, 640),
        "RTDetrForObjectDetection, ResNet-50-vd, 6 decoder layers, 300 queries, 3 levels x 4 points"),
    _hf("rtdetr_v2_r18", "rtdetr_v2", "r18", "PekingU/rtdetr_v2_r18vd", (640, 640),
        "RTDetrV2ForObjectDetection, ResNet-18-vd, 3 levels x 4 points, offset scale 0.5", exporters=("torchscript",)),
    _hf("dfine_n", "dfine", "n", "ustc-community/dfine-nano-coco", (640, 640),
        "DFineForObjectDetection, HGNetV2-B0, d_model 128, 2 levels x [6, 6] points", exporters=("torchscript",)),
    _hf("dfine_s", "dfine", "s", "ustc-community/dfine-small-coco", (640, 640),
        "DFineForObjectDetection, HGNetV2-B0, 3 levels x [3, 6, 3] points", exporters=("torchscript",)),
    _hf("mask2former_swin_t", "mask2former", "swin_t", "facebook/mask2former-swin-tiny-coco-instance", (512, 512),
        "Mask2FormerForUniversalSegmentation, Swin-T backbone, pixel decoder 6 x deformable attention "
        "(3 levels x 4 points), COCO instance; evaluated at shorter side 800, 512 keeps the export light",
        passes=("swin", "msda"), outputs=("class_queries_logits", "masks_queries_logits")),
]})
HF_FAMILIES = ("rtdetr", "rtdetr_v2", "dfine", "mask2former")
DETECTOR_FAMILIES = ("deformable_detr", "rtdetr", "rtdetr_v2", "dfine")

# Test-sized Swin (V1 and V2): the four stages, shifted and clamped blocks, padding, at 32 channels.
SWIN_SMALL_OVERRIDES = dict(depths=(1, 1, 2, 1), embed_dim=32, num_heads=(1, 2, 4, 8))
# Test-sized windowed encoders (issue 24): every kind of block of the full model, a few channels each.
REDUCED_OVERRIDES: dict[str, dict] = {
    "swin": SWIN_SMALL_OVERRIDES,
    "swinv2": SWIN_SMALL_OVERRIDES,
    "sam": dict(embed_dim=32, depth=4, num_heads=2, global_attn_indexes=(1, 3), window_size=4, neck_chans=16),
    "tinyvit": dict(embed_dims=[16, 32, 48, 64], depths=[1, 1, 1, 1], num_heads=[1, 2, 3, 4]),
    "hiera": dict(embed_dim=16, num_heads=1, stages=(1, 2, 2, 1)),
    "maxvit": dict(embed_dim=(16, 32, 32, 64), depths=(1, 1, 1, 1), stem_width=16, transformer_dim_head=8),
    "twins": dict(embed_dims=[16, 32, 32, 64], num_heads=[1, 2, 2, 4], depths=[2, 2, 2, 2]),
}
# families `--reduced` has a test-sized variant of
REDUCED_FAMILIES = ("deformable_detr", *REDUCED_OVERRIDES, *HF_FAMILIES)


def check_reduced(alias: str) -> None:
    """`--reduced` exists for the DETRs, Mask2Former and Swin / Swin V2 only: one line otherwise."""
    info = get_info(alias)
    if info.family not in REDUCED_FAMILIES:
        raise VitdeployError(f"--reduced has no test-sized variant of {alias}",
                             "use it with a DETR or Mask2Former alias, a Swin / Swin V2 alias or a windowed encoder "
                             "(sam_vit_b, mobile_sam, hiera_t, maxvit_t, twins_svt_s), or drop --reduced")

# Test-sized Deformable DETR: every structural element of the real one (4 feature
# levels, encoder and decoder deformable attention, box head) at a fraction of the cost.
DETR_SMALL_OVERRIDES = dict(
    d_model=64,
    encoder_layers=2,
    decoder_layers=2,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    encoder_ffn_dim=128,
    decoder_ffn_dim=128,
    num_queries=20,
    backbone="resnet18",
)

# The 91-entry label map of COCO-trained DETR checkpoints (SenseTime/deformable-detr's config.id2label):
# index = COCO category id, "N/A" where COCO defines no category (0 and the 11 retired ids).
COCO_DETECTION_LABELS = (
    "N/A", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "N/A", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "N/A", "backpack", "umbrella", "N/A", "N/A", "handbag", "tie",
    "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "N/A", "wine glass", "cup", "fork", "knife", "spoon",
    "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake",
    "chair", "couch", "potted plant", "bed", "N/A", "dining table", "N/A", "N/A", "toilet", "N/A", "tv", "laptop",
    "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "N/A",
    "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)


def get_info(alias: str) -> ModelInfo:
    try:
        return REGISTRY[alias]
    except KeyError:
        close = difflib.get_close_matches(alias, REGISTRY, n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'?" if close else "run 'vitdeploy models' for the list"
        raise VitdeployError(f"unknown model '{alias}'", hint) from None


def check_input_size(info: ModelInfo, size: tuple[int, int]) -> None:
    h, w = size
    m = info.size_multiple
    if info.family == "deformable_detr" and min(h, w) < 64:
        raise VitdeployError(
            f"image size {h}x{w} is too small for {info.alias}: its fourth feature level needs at least 64 pixels a side",
            "try --img-size 512",
        )
    if info.family in HF_FAMILIES and min(h, w) < 64:
        raise VitdeployError(
            f"image size {h}x{w} is too small for {info.alias}: its stride-32 feature level needs at least 64 pixels a side",
            f"try --img-size {info.input_size[0]}",
        )
    if h <= 0 or w <= 0 or h % m or w % m:
        why = {
            "swin": "Swin's patch embedding cuts 4x4 patches",
            "swinv2": "Swin's patch embedding cuts 4x4 patches",
            "deformable_detr": "the ResNet backbone downsamples by 32",
            "halonet": "its last stage cuts the 1/32 feature map into 8x8 attention blocks",
            "tinyvit": "its four stages downsample by 32",
            "hiera": "its 8x8 mask units are pooled three times (stride 4 patches, then 2x2 three times)",
            "maxvit": "its windows are the image / 32 and its stages downsample by 32",
            "twins": "its four stages downsample by 32",
            "rtdetr": "the backbone downsamples by 32", "rtdetr_v2": "the backbone downsamples by 32",
            "dfine": "the backbone downsamples by 32", "mask2former": "the Swin backbone downsamples by 32",
        }.get(info.family, "the patch embedding uses 16x16 patches")
        lo_h, lo_w = max(m, (h // m) * m), max(m, (w // m) * m)
        raise VitdeployError(
            f"image size {h}x{w} does not fit {info.alias}: {why}, so height and width must each be a multiple of {m}",
            f"try --img-size {lo_h}" if lo_h == lo_w else f"try --img-size {lo_h}x{lo_w}",
        )
    if info.family in ("swin", "swinv2") and min(h, w) < 32:
        raise VitdeployError(
            f"image size {h}x{w} is too small for {info.alias}: three patch-merging stages leave less than one token",
            "use at least 32 pixels a side, e.g. --img-size 224",
        )


def check_exporter(info: ModelInfo, exporter: str) -> str:
    """The exporter to run for `info` ("auto" picks among those that can export it); one line if none can."""
    if exporter == "auto" and len(info.exporters) == 1:
        return info.exporters[0]
    if exporter != "auto" and exporter not in info.exporters:
        only = " and ".join(info.exporters)
        why = {"halonet": " (the TorchScript exporter cannot export HaloAttn's unfold)",
               **dict.fromkeys(("sam", "hiera", "twins"), " (the dynamo exporter cannot export timm's scaled_dot_product_attention "
                                                        "call on its 3-D/5-D q, k, v)"),
               **dict.fromkeys(("rtdetr_v2", "dfine"), " (the dynamo exporter fails in PyTorch on aten._is_all_true in its "
                                                        "deformable attention)"),
               }.get(info.family, "")
        raise VitdeployError(f"{info.alias} exports with the {only} exporter only{why}",
                             f"drop --exporter {exporter} or use --exporter {info.exporters[0]}")
    return exporter


def build_model(
    info: ModelInfo,
    *,
    img_size: tuple[int, int] | None = None,
    pretrained: bool = False,
    checkpoint: str | os.PathLike | None = None,
    small: bool = False,
    device: str = "cpu",
):
    """Build the torch module in eval mode (random weights unless pretrained/checkpoint)."""
    import torch

    size = img_size or info.input_size
    check_input_size(info, size)
    with torch.device(device):
        if info.route == "huggingface":
            from vitdeploy.sources.hf import build

            model = build(info, pretrained=pretrained)
        elif info.route == "python":
            from vitdeploy.sources.python_entry import build

            model = build(info)
        elif info.source == "timm":
            model = _build_timm(info, size, pretrained, small)
        elif info.family in HF_FAMILIES:
            model = _build_hf(info, pretrained, small)
            _check_query_selection(info, model.config, size)
        else:
            model = _build_detr(info, pretrained, small)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, classifier=_classifier_name(model))
    elif not pretrained and info.route in ("alias", "timm"):  # a directory's or a factory's weights are theirs
        redraw_zero_weights(model)
    return model.eval()


def redraw_zero_weights(model, std: float = 0.02, seed: int = 0) -> list[str]:
    """Give zero-initialised weight matrices (timm's Mixer/ViT classifier heads) random values.

    With an all-zero head every logit is 0 and a parity check compares zeros with
    zeros, proving nothing; random-weight models must produce informative outputs.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    redrawn = []
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2 and not p.is_meta and not torch.any(p):
                p.copy_(torch.randn(p.shape, generator=g) * std)
                redrawn.append(name)
    return redrawn


def _build_timm(info: ModelInfo, size: tuple[int, int], pretrained: bool, small: bool = False):
    import timm

    kwargs: dict[str, Any] = dict(info.overrides)
    if size != info.input_size and info.family not in _NO_IMG_SIZE:
        kwargs["img_size"] = size if size[0] != size[1] else size[0]
    if small:
        check_reduced(info.alias)
        kwargs.update(REDUCED_OVERRIDES[info.family])
    if pretrained:
        return _pretrained(lambda: _create_timm(info, pretrained=True, **kwargs), info)
    return _create_timm(info, pretrained=False, **kwargs)


def _create_timm(info: ModelInfo, **kwargs):
    """timm.create_model; an architecture that takes any input size (a CNN) has no `img_size` to set."""
    import timm

    try:
        try:
            return timm.create_model(info.name, **kwargs)
        except TypeError as e:
            if "img_size" in kwargs and "img_size" in str(e) and info.route != "alias":
                kwargs.pop("img_size")
                return timm.create_model(info.name, **kwargs)
            raise
    except Exception as e:
        if info.route == "alias" or kwargs.get("pretrained"):
            raise
        text = (str(e).strip().splitlines() or [""])[0][:160]
        opts = ", ".join(f"{k}={v}" for k, v in kwargs.items() if k != "pretrained")
        raise VitdeployError(f"timm cannot build {info.name}" + (f" with {opts}" if opts else "") +
                             f": {type(e).__name__}: {text}", "check --img-size and --num-classes") from None


def detr_config(small: bool = False, **overrides):
    """The listed checkpoint's configuration (91-class COCO head and label map), reduced when `small`."""
    from transformers import DeformableDetrConfig

    cfg = dict(DETR_SMALL_OVERRIDES) if small else {}
    cfg.setdefault("id2label", dict(enumerate(COCO_DETECTION_LABELS)))
    cfg.update(overrides)
    backbone = cfg.pop("backbone", "resnet50")
    config = DeformableDetrConfig(**cfg)
    config.backbone_config.backbone = backbone
    config.backbone_config.use_pretrained_backbone = False
    return config


def _build_detr(info: ModelInfo, pretrained: bool, small: bool):
    from transformers import DeformableDetrForObjectDetection

    if pretrained:
        return _pretrained(lambda: DeformableDetrForObjectDetection.from_pretrained(info.name), info)
    return DeformableDetrForObjectDetection(detr_config(small=small))


def _build_hf(info: ModelInfo, pretrained: bool, small: bool):
    """RT-DETR (v2), D-FINE, Mask2Former: vitdeploy.hf_detectors (random weights made informative there)."""
    from vitdeploy import hf_detectors

    variant = info.overrides["variant"]
    if pretrained:
        return _pretrained(lambda: hf_detectors.build(info.family, variant, pretrained_id=info.name), info)
    return hf_detectors.build(info.family, variant, reduced=small)


def _check_query_selection(info: ModelInfo, config, size: tuple[int, int]) -> None:
    """RT-DETR (v2) and D-FINE select their queries as the top-k encoder tokens: an input too small to have
    that many tokens fails inside PyTorch ("selected index k out of range"); say so in one line instead."""
    import math

    strides = getattr(config, "feat_strides", None)
    queries = getattr(config, "num_queries", 0)
    if info.family not in ("rtdetr", "rtdetr_v2", "dfine") or not strides:
        return
    tokens = sum(math.ceil(size[0] / s) * math.ceil(size[1] / s) for s in strides)
    if tokens < queries:
        side = next(m for m in range(32, 4097, 32) if sum(math.ceil(m / s) ** 2 for s in strides) >= queries)
        raise VitdeployError(
            f"image size {size[0]}x{size[1]} gives {info.alias} {tokens} encoder tokens, fewer than the {queries} "
            "queries it selects from them", f"use at least --img-size {side}")


def _pretrained(fn, info: ModelInfo):
    """Load pretrained weights; offline (or unreachable hub) and not cached fails at once in one line
    (`vitdeploy.hub`), never after the hub client's retries."""
    from vitdeploy import hub

    how = hub.plan(info)
    try:
        if how == "cache":
            with hub.hub_offline():
                return fn()
        return fn()
    except Exception as e:  # hub errors come in many types; all mean "could not download"
        src = hub.source_for(info)
        raise VitdeployError(
            f"could not {'load cached' if how == 'cache' else 'download'} pretrained weights for {info.alias} "
            f"({type(e).__name__}: {str(e).strip().splitlines()[0][:120] if str(e).strip() else ''})",
            hub.where_to_put(src) if src else "download the weights elsewhere and pass --checkpoint FILE",
        ) from None


def _read_state_dict(path: Path) -> dict:
    """The state dict in a checkpoint, as timm's `checkpoint_path` reads it (`timm.models.load_state_dict`):
    .safetensors, or a weights-only torch.load of anything else (.pth, .pth.tar, .bin, .ckpt); a training
    checkpoint's EMA weights first (`state_dict_ema`, `model_ema`), then `state_dict`, `model`, `module`;
    DDP's `module.` and torch.compile's `_orig_mod.` prefixes dropped."""
    import torch

    if not path.is_file():
        raise VitdeployError(f"checkpoint {path} does not exist", "check the --checkpoint path")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        msg = str(e)
        if "WeightsUnpickler error:" in msg:  # torch's preamble suggests weights_only=False: give the cause instead
            cause = next((s.strip() for s in msg.split("WeightsUnpickler error:", 1)[1].splitlines() if s.strip()), "")
            msg = f"not a weights-only PyTorch file ({cause})"
        raise VitdeployError(
            f"cannot read checkpoint {path.name}: {(msg.splitlines() or [type(e).__name__])[0][:160]}",
            "pass a .safetensors or a weights-only .pth state dict",
        ) from None
    if isinstance(sd, dict) and not any(hasattr(v, "shape") for v in sd.values()):
        for key in ("state_dict_ema", "model_ema", "state_dict", "model", "module"):
            if isinstance(sd.get(key), dict) and sd[key]:
                sd = sd[key]
                break
    if not isinstance(sd, dict) or not sd or not any(hasattr(v, "shape") for v in sd.values()):
        raise VitdeployError(f"checkpoint {path.name} holds no state dict", "save model.state_dict()")
    from timm.models import clean_state_dict

    return clean_state_dict(sd)


def _classifier_name(model) -> str | None:
    """The classifier module's name ("head", "head.fc", "classifier") where the model says it (timm models do)."""
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    name = cfg.get("classifier") if isinstance(cfg, dict) else None
    return name if isinstance(name, str) else None


def load_checkpoint(model, path: str | os.PathLike, classifier: str | None = None) -> None:
    """Load a checkpoint strictly (timm's `checkpoint_path` semantics; `.npz` through the model's own
    `load_pretrained`, as timm does); a mismatch is a one-line error naming what differs, and a classifier
    of another size suggests the `--num-classes` that fits."""
    path = Path(path)
    if path.suffix.lower() in (".npz", ".npy"):
        if not path.is_file():
            raise VitdeployError(f"checkpoint {path} does not exist", "check the --checkpoint path")
        if not hasattr(model, "load_pretrained"):
            raise VitdeployError(f"checkpoint {path.name} is a NumPy file, which only timm's ViT-style models read",
                                 "pass a .safetensors or .pth state dict")
        try:
            model.load_pretrained(str(path))
        except Exception as e:
            raise VitdeployError(f"cannot load {path.name} into the model: {type(e).__name__}: {str(e)[:120]}",
                                 "check --model matches the checkpoint") from None
        return
    sd = _read_state_dict(path)
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shape = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shape:
        parts = []
        if shape:
            k = shape[0]
            parts.append(f"{len(shape)} shape mismatches (first: {k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)})")
        if missing:
            parts.append(f"{len(missing)} missing keys (first: {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (first: {unexpected[0]})")
        hint = "check --model and --img-size match the checkpoint"
        head = classifier and [k for k in shape + missing + unexpected if k == classifier or k.startswith(classifier + ".")]
        if head and len(head) == len(shape + missing + unexpected):  # only the classifier differs: a fine-tuned head
            w = sd.get(f"{classifier}.weight")
            hint = (f"the checkpoint's classifier has {w.shape[0]} classes: add --num-classes {w.shape[0]}"
                    if w is not None and w.ndim >= 1 else "the checkpoint has no classifier: add --num-classes 0")
        raise VitdeployError(f"checkpoint {path.name} does not match the model: " + "; ".join(parts), hint)
    model.load_state_dict(sd, strict=True)


def count_parameters(info: ModelInfo) -> int:
    """Parameter count, computed on the meta device so no memory is touched."""
    import torch

    with torch.device("meta"):
        if info.source == "timm":
            model = _build_timm(info, info.input_size, False)
        elif info.family in HF_FAMILIES:
            model = _build_hf(info, False, False)
        else:
            model = _build_detr(info, False, False)
    return sum(p.numel() for p in model.parameters())


def pretrained_tag(info: ModelInfo, model) -> str:
    """Which pretrained weights were downloaded: timm's architecture.tag, or the hub id (and revision)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if info.source == "timm" and cfg.get("architecture"):
        return f"timm/{cfg['architecture']}" + (f".{cfg['tag']}" if cfg.get("tag") else "")
    commit = getattr(getattr(model, "config", None), "_commit_hash", None)
    return info.name + (f"@{commit}" if commit else "")


def preprocessing(info: ModelInfo, model=None, img_size: tuple[int, int] | None = None) -> dict:
    """Mean, std, size and interpolation the model expects, and where they came from (`source`, see
    `deploy.preprocess`): timm's data config (its pretrained_cfg), the Hugging Face image processor's
    config or defaults, or, for a Python factory, what its module says (vitdeploy.sources)."""
    size = img_size or info.input_size
    if info.route == "huggingface" and info.source == "transformers":
        from vitdeploy.sources.hf import preprocessing as hf_preprocessing

        return hf_preprocessing(info, size)
    if info.route == "python":
        from vitdeploy.sources.python_entry import preprocessing as python_preprocessing

        return python_preprocessing(model, size)
    if info.source == "timm":
        return timm_preprocessing(model, size, info.input_size, name=info.name)
    if info.family == "deformable_detr":
        # the image processor's normalisation and filter; the export has a fixed H x W, so the image is
        # resized to it (squash) instead of the processor's shortest/longest edge and padding.
        from transformers import DeformableDetrImageProcessor

        d = DeformableDetrImageProcessor().to_dict()
        resample = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
        out = {
            "input_size": [3, size[0], size[1]],
            "mean": [float(v) for v in d["image_mean"]],
            "std": [float(v) for v in d["image_std"]],
            "interpolation": resample.get(int(d.get("resample", 2)), "bilinear"),
            "crop_pct": 1.0,
            "crop_mode": "squash",
            "source": "hf image processor",
            "source_detail": f"DeformableDetrImageProcessor defaults (mean, std, filter); resized to {size[0]}x{size[1]} "
                             f"(the export's fixed size) instead of its shortest/longest edge {d['size']}",
        }
        out["resize"] = resize_spec(out)
        return out
    # Mask2Former: ImageNet statistics, resize without crop (its image processor's defaults);
    # RT-DETR (v2) and D-FINE (RTDetrImageProcessor): pixels / 255 only, no normalisation.
    rescale_only = info.family in ("rtdetr", "rtdetr_v2", "dfine")
    processor = "RTDetrImageProcessor" if rescale_only else "Mask2FormerImageProcessor"
    out = {
        "input_size": [3, size[0], size[1]],
        "mean": [0.0, 0.0, 0.0] if rescale_only else [0.485, 0.456, 0.406],
        "std": [1.0, 1.0, 1.0] if rescale_only else [0.229, 0.224, 0.225],
        "interpolation": "bilinear",
        "source": "hf image processor",
        "source_detail": f"{processor} defaults ({'pixels / 255, no normalisation' if rescale_only else 'ImageNet mean/std'}); "
                         f"resized to {size[0]}x{size[1]} (the export's fixed size)",
        "crop_pct": 1.0,
        "crop_mode": "squash",
    }
    out["resize"] = resize_spec(out)
    return out


def timm_preprocessing(model, size: tuple[int, int], native: tuple[int, int], name: str | None = None) -> dict:
    """timm's data config of `model` (its pretrained_cfg), or of the architecture `name` when no module is at
    hand, at `size`; the crop applies at the native size only. `source_detail` names the config's tag."""
    from timm.data import resolve_data_config

    if model is not None:
        cfg, pcfg = resolve_data_config({}, model=model), getattr(model, "pretrained_cfg", None) or {}
    elif name:
        from timm.models import get_pretrained_cfg

        pc = get_pretrained_cfg(name)
        pcfg = pc.to_dict() if pc is not None else {}
        cfg = resolve_data_config(pretrained_cfg=pcfg) if pcfg else {}
    else:
        cfg, pcfg = {}, {}
    native_size = tuple(size) == tuple(native)
    tag = ".".join(x for x in (pcfg.get("architecture") or name or "", pcfg.get("tag")) if x)
    out = {
        "input_size": [3, size[0], size[1]],
        "mean": list(map(float, cfg.get("mean", (0.485, 0.456, 0.406)))),
        "std": list(map(float, cfg.get("std", (0.229, 0.224, 0.225)))),
        "interpolation": cfg.get("interpolation", "bicubic"),
        "crop_pct": float(cfg.get("crop_pct", 0.875)) if native_size else 1.0,
        "crop_mode": cfg.get("crop_mode", "center"),
        "source": "timm pretrained_cfg",
        "source_detail": tag + ("" if native_size else
                                f"; crop_pct 1.0 at {size[0]}x{size[1]} (not the {native[0]}x{native[1]} "
                                "the config was made for)"),
    }
    out["resize"] = resize_spec(out)
    return out


def imagenet_assumed(size: tuple[int, int], why: str) -> dict:
    """The record of a model nobody said how to prepare images for: ImageNet statistics and a straight resize
    are what parity and accuracy use, but `source` is "none", so `package` asks for --preprocess rather than
    write a guessed normalisation into a serving config."""
    out = {"source": "none", "input_size": [3, size[0], size[1]], "mean": [0.485, 0.456, 0.406],
           "std": [0.229, 0.224, 0.225], "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "squash",
           "source_detail": f"{why}: ImageNet mean/std assumed; pass --preprocess FILE.json (docs/serving.md)"}
    out["resize"] = resize_spec(out)
    return out


def resize_spec(pp: dict) -> dict:
    """What the eval transform resizes to before cropping (`image_transform.resize_spec`)."""
    from vitdeploy.image_transform import resize_spec as spec

    return spec(pp)


def labels_for(info: ModelInfo, model=None) -> dict:
    """The label map: class count, class names where they are known, and where the names come from.

    timm classifiers with an ImageNet head get timm's bundled ImageNet names (the head's
    index order, whatever the weights); a checkpoint with another head keeps its count
    without names. transformers models carry `config.id2label`; its placeholder
    names ("LABEL_0", ...) are not names, so they are left out.
    """
    if info.source == "python":  # a factory's head: its class count where the module states one, no names
        n = getattr(model, "num_classes", None)
        return {"num_classes": int(n) if isinstance(n, int) and n > 0 else None, "names": None, "source": None}
    if info.source == "timm":
        n = int(getattr(model, "num_classes", 0) or 0) if model is not None else 1000
        names, source = None, None
        try:
            from timm.data import ImageNetInfo, infer_imagenet_subset

            subset = infer_imagenet_subset(model) if model is not None else "imagenet-1k"
            if subset:
                meta = ImageNetInfo(subset)
                if meta.num_classes() == n:
                    names = [meta.index_to_description(i) for i in range(n)]
                    source = f"{subset} (timm ImageNetInfo)"
        except Exception:  # timm without its bundled metadata: the count still holds
            pass
        return {"num_classes": n, "names": names, "source": source}
    config = getattr(model, "config", None)
    id2label = dict(getattr(config, "id2label", None) or {})
    n = int(getattr(config, "num_labels", len(id2label)) or len(id2label))
    names = [str(id2label.get(i, id2label.get(str(i), ""))) for i in range(n)] if id2label else None
    if names and all(name in ("", f"LABEL_{i}") for i, name in enumerate(names)):
        names = None
    return {"num_classes": n, "names": names, "source": "config.id2label" if names else None}


def postprocessing_for(info: ModelInfo, model=None) -> dict:
    """How raw outputs become predictions, for code that runs the artifact without vitdeploy
    (`model`: the built module, whose config decides e.g. a reduced DETR's query count)."""
    if info.route != "alias":
        from vitdeploy.sources.hf import postprocessing

        return postprocessing(info)
    if info.family in HF_FAMILIES:
        from vitdeploy import hf_detectors

        config = getattr(model, "config", None) or hf_detectors.config_for(info.family, info.overrides["variant"])
        return hf_detectors.postprocessing(info.family, int(config.num_queries))
    if info.outputs == ("image_embeddings",):  # an image encoder (SAM's): its feature map is the product
        return {"task": "embedding", "output": info.outputs[0], "shape": "[B, channels, H/stride, W/stride]"}
    if info.family == "deformable_detr":
        # Sigmoid focal-loss head: every (query, class) pair is scored on its own; no softmax, no "no object".
        return {"task": "detection", "scores": {"output": "logits", "activation": "sigmoid", "shape": "[B, queries, classes]"},
                "boxes": {"output": "pred_boxes", "format": "cxcywh", "normalized": True, "shape": "[B, queries, 4]"},
                "select": "top-k (query, class) pairs over all queries, then a score threshold"}
    return {"task": "classification", "scores": {"output": info.outputs[0], "activation": "softmax",
                                                 "shape": "[B, classes]"}}

