"""Hugging Face real-time DETRs and Mask2Former: the published checkpoints' configurations, built with random weights.

Every multi-scale deformable attention block of these models is what the `msda` pass rewrites:
RT-DETR (the Deformable DETR core), RT-DETR v2 and D-FINE (`multi_scale_deformable_attention_v2`,
per-level point counts; D-FINE-S/M/L/X sample [3, 6, 3] points), and Mask2Former's pixel decoder
(Deformable DETR's core, behind a Swin backbone that the `swin` pass rewrites).

The configurations are those of transformers' own conversion scripts for the checkpoints named
(`convert_rt_detr_original_pytorch_checkpoint_to_hf.get_rt_detr_config("rtdetr_r18vd")`,
`convert_rt_detr_v2_weights_to_hf`, `convert_d_fine_original_pytorch_checkpoint_to_hf.get_d_fine_config`,
the Swin-T Mask2Former config), written out here because nothing is downloaded. `reduced` keeps each
family's structure (levels, points per level, encoder/decoder attention, query selection, heads)
at test size.

Random weights: transformers initialises BatchNorm scales at N(0, 0.01) and these models' projection
convs small, so through a dozen normalised convs every activation vanishes, the encoder's class
scores all equal the prior bias, and RT-DETR's top-k query selection picks among exact ties -- an
order that no two runtimes share. `informative_init` re-draws conv kernels at fan-in scale
(std 1/sqrt(fan_in)) and sets normalisation scales to 1, so random-weight outputs depend on the image
and the selection is decided by distinct scores. Checkpoints and pretrained weights are left alone.
"""
from __future__ import annotations

from vitdeploy.errors import VitdeployError

FAMILIES = ("rtdetr", "rtdetr_v2", "dfine", "mask2former")
DETECTION_FAMILIES = ("rtdetr", "rtdetr_v2", "dfine")


def coco80() -> tuple[str, ...]:
    """COCO's 80 categories in training-index order (transformers' coco-detection-mmdet-id2label.json):
    the 91-entry DETR label map without its "N/A" holes."""
    from vitdeploy.models import COCO_DETECTION_LABELS

    return tuple(n for n in COCO_DETECTION_LABELS if n != "N/A")


def _id2label() -> dict:
    return dict(enumerate(coco80()))


# ----------------------------------------------------------------------------- RT-DETR (v1, v2)

def _rtdetr_r18_backbone(config) -> None:
    """rtdetr_r18vd / rtdetr_v2_r18vd: ResNet-18-vd (basic blocks), C3-C5 of 128/256/512 channels, 3 decoder layers."""
    config.backbone_config.hidden_sizes = [64, 128, 256, 512]
    config.backbone_config.depths = [2, 2, 2, 2]
    config.backbone_config.layer_type = "basic"
    config.encoder_in_channels = [128, 256, 512]
    config.hidden_expansion = 0.5
    config.decoder_layers = 3


def _rtdetr_reduced(config) -> None:
    """Test size: the variant's block type (R18: basic, R50: bottleneck) at 16..128 channels, one block a
    stage, d_model 32 with 2 heads, 2 decoder layers, 12 queries -- still 3 levels x 4 points, query
    selection, encoder self-attention and box refinement."""
    config.backbone_config.hidden_sizes = [16, 32, 64, 128]
    config.backbone_config.depths = [1, 1, 1, 1]
    config.backbone_config.embedding_size = 16
    config.encoder_in_channels = [32, 64, 128]
    config.d_model = config.encoder_hidden_dim = 32
    config.decoder_in_channels = [32, 32, 32]
    config.encoder_ffn_dim = config.decoder_ffn_dim = 64
    config.encoder_attention_heads = config.decoder_attention_heads = 2
    config.decoder_layers = 2
    config.num_queries = 12
    config.hidden_expansion = 0.5


def rtdetr_config(variant: str, reduced: bool = False, v2: bool = False, **overrides):
    from transformers import RTDetrConfig, RTDetrV2Config

    config = (RTDetrV2Config if v2 else RTDetrConfig)(num_labels=80, id2label=_id2label())
    if variant == "r18":
        _rtdetr_r18_backbone(config)
    elif variant != "r50":
        raise ValueError(f"unknown RT-DETR variant {variant!r}")
    if reduced:
        _rtdetr_reduced(config)
    for k, v in overrides.items():
        setattr(config, k, v)
    return config


# ----------------------------------------------------------------------------- D-FINE

def dfine_config(variant: str, reduced: bool = False, **overrides):
    """dfine_n / dfine_s (HGNetV2-B0 backbone). N: 2 levels (strides 16, 32) x [6, 6] points, d_model 128;
    S: 3 levels x [3, 6, 3] points, d_model 256. Reduced: the same levels and points at d_model 32."""
    from transformers import DFineConfig

    config = DFineConfig(num_labels=80, id2label=_id2label())
    bb = config.backbone_config
    bb.hidden_sizes = [128, 256, 512, 1024]
    bb.stem_channels = [3, 16, 16]
    bb.stage_in_channels = [16, 64, 256, 512]
    bb.stage_mid_channels = [16, 32, 64, 128]
    bb.stage_out_channels = [64, 256, 512, 1024]
    bb.stage_num_blocks = [1, 1, 2, 1]
    bb.stage_downsample = [False, True, True, True]
    bb.stage_light_block = [False, False, True, True]
    bb.stage_kernel_size = [3, 3, 5, 5]
    bb.stage_numb_of_layers = [3, 3, 3, 3]
    bb.use_learnable_affine_block = True
    bb.layer_type = "basic"
    bb.embedding_size = 32
    config.decoder_layers = 3
    if variant == "n":
        bb.out_indices = [3, 4]
        bb.out_features = ["stage3", "stage4"]
        config.num_feature_levels = 2
        config.encoder_ffn_dim = 512
        config.encode_proj_layers = [1]
        config.d_model = config.encoder_hidden_dim = 128
        config.decoder_ffn_dim = 512
        config.encoder_in_channels = [512, 1024]
        config.decoder_n_points = [6, 6]
        config.decoder_in_channels = [128, 128]
        config.feat_strides = [16, 32]
        config.depth_mult = 0.5
        config.hidden_expansion = 0.34
    elif variant == "s":
        config.hidden_expansion = 0.5
        config.depth_mult = 0.34
        config.decoder_n_points = [3, 6, 3]
        config.encoder_in_channels = [256, 512, 1024]
    else:
        raise ValueError(f"unknown D-FINE variant {variant!r}")
    if reduced:
        levels = config.num_feature_levels
        bb.stem_channels = [3, 8, 8]
        bb.stage_in_channels = [8, 16, 32, 64]
        bb.stage_mid_channels = [8, 8, 16, 32]
        bb.stage_out_channels = [16, 32, 64, 128]
        bb.hidden_sizes = [16, 32, 64, 128]
        bb.stage_num_blocks = [1, 1, 1, 1]
        bb.stage_numb_of_layers = [2, 2, 2, 2]
        config.encoder_in_channels = [32, 64, 128][-levels:]
        config.d_model = config.encoder_hidden_dim = 32
        config.decoder_in_channels = [32] * levels
        config.encoder_ffn_dim = config.decoder_ffn_dim = 64
        config.encoder_attention_heads = config.decoder_attention_heads = 2
        config.decoder_layers = 2
        config.num_queries = 12
        config.head_dim = 16
        config.lqe_hidden_dim = 16
    for k, v in overrides.items():
        setattr(config, k, v)
    return config


# ----------------------------------------------------------------------------- Mask2Former

def mask2former_config(reduced: bool = False, **overrides):
    """Swin-T Mask2Former (COCO instance, 80 classes): Swin depths [2, 2, 6, 2], window 7; pixel decoder with
    6 deformable encoder layers over 3 levels x 4 points; 100 queries. Reduced: Swin of 16 channels
    (depths [1, 1, 2, 1]), one pixel-decoder layer at 32 channels, 8 queries."""
    from transformers import Mask2FormerConfig, SwinConfig

    if reduced:
        backbone = SwinConfig(embed_dim=16, depths=[1, 1, 2, 1], num_heads=[1, 2, 2, 4], window_size=7,
                              out_features=["stage1", "stage2", "stage3", "stage4"])
        kw = dict(feature_size=32, mask_feature_size=32, hidden_dim=32, encoder_feedforward_dim=64, encoder_layers=1,
                  decoder_layers=2, num_attention_heads=2, dim_feedforward=64, num_queries=8)
    else:
        backbone = SwinConfig(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
                              out_features=["stage1", "stage2", "stage3", "stage4"])
        kw = {}
    config = Mask2FormerConfig(backbone_config=backbone, num_labels=80, id2label=_id2label(), **kw)
    for k, v in overrides.items():
        setattr(config, k, v)
    return config


# ----------------------------------------------------------------------------- building

def config_for(family: str, variant: str, reduced: bool = False):
    """The transformers config of an alias (full size unless `reduced`)."""
    if family in ("rtdetr", "rtdetr_v2"):
        return rtdetr_config(variant, reduced, v2=family == "rtdetr_v2")
    if family == "dfine":
        return dfine_config(variant, reduced)
    if family == "mask2former":
        return mask2former_config(reduced)
    raise ValueError(f"unknown family {family!r}")


def build(family: str, variant: str, reduced: bool = False, pretrained_id: str | None = None):
    """The transformers module for an alias (random weights unless `pretrained_id`)."""
    import transformers as tf

    cls = {"rtdetr": tf.RTDetrForObjectDetection, "rtdetr_v2": tf.RTDetrV2ForObjectDetection,
           "dfine": tf.DFineForObjectDetection, "mask2former": tf.Mask2FormerForUniversalSegmentation}[family]
    if pretrained_id:
        return cls.from_pretrained(pretrained_id)
    return informative_init(cls(config_for(family, variant, reduced)))


def informative_init(model, seed: int = 0):
    """Conv kernels at fan-in scale, normalisation scales at 1 (see the module docstring for why)."""
    import math

    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.Conv2d):
                fan_in = mod.weight[0].numel()
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) / math.sqrt(fan_in))
            elif "BatchNorm" in type(mod).__name__ and getattr(mod, "weight", None) is not None:
                mod.weight.fill_(1.0)
    return model


def spread_sampling(model, generator, offset_std: float = 0.5, weight_std: float = 0.3) -> int:
    """Random sampling-offset and attention-weight projections in every deformable attention module; returns
    how many. transformers zeroes them at init (every query samples its reference point with uniform weights),
    so tests and the fuzz suite re-draw them: locations then spread, some past the map edges, and the
    weights differ per point. Not applied by `build`: a random-weight build keeps transformers' init."""
    import torch

    n = 0
    with torch.no_grad():
        for mod in model.modules():
            lins = [getattr(mod, a, None) for a in ("sampling_offsets", "attention_weights")]
            if all(isinstance(lin, torch.nn.Linear) for lin in lins):
                for lin, std in zip(lins, (offset_std, weight_std)):
                    lin.weight.copy_(torch.randn(lin.weight.shape, generator=generator) * std)
                    lin.bias.copy_(torch.randn(lin.bias.shape, generator=generator) * 2 * std)
                n += 1
    return n


def postprocessing(family: str, num_queries: int) -> dict:
    """How raw outputs become predictions (recorded in the manifest for runtimes without vitdeploy)."""
    labels = {"classes": 80, "names": "COCO (transformers' coco-detection-mmdet-id2label order)"}
    if family in DETECTION_FAMILIES:
        return {
            "task": "detection",
            "scores": {"output": "logits", "activation": "sigmoid", "shape": "[B, queries, classes]"},
            "boxes": {"output": "pred_boxes", "format": "cxcywh", "normalized": True, "shape": "[B, queries, 4]"},
            "query_selection": (f"in the graph: the encoder's top-{num_queries} tokens by class score become the "
                                "decoder's queries (RT-DETR's query selection; a TopK node in the ONNX)"),
            "select": (f"top-{num_queries} (query, class) pairs over all queries by sigmoid score, then a score "
                       "threshold (RTDetrImageProcessor.post_process_object_detection, use_focal_loss=True)"),
            "labels": labels,
        }
    if family == "mask2former":
        return {
            "task": "segmentation",
            "scores": {"output": "class_queries_logits", "activation": "softmax", "shape": "[B, queries, classes + 1]",
                       "no_object": "last class"},
            "masks": {"output": "masks_queries_logits", "activation": "sigmoid", "shape": "[B, queries, H/4, W/4]",
                      "resize": "bilinear to the input size"},
            "select": ("instance: scores = softmax(class)[:, :-1] x mean mask probability inside the mask, top-k "
                       "(query, class) pairs; semantic: argmax_c sum_q softmax(class)[q, c] * sigmoid(mask)[q] "
                       "(Mask2FormerImageProcessor.post_process_instance/semantic_segmentation)"),
            "labels": labels,
        }
    raise VitdeployError(f"no post-processing known for family {family}", "report the model")
