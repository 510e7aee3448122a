"""Fuzz families for deformable attention beyond Deformable DETR: RT-DETR, RT-DETR v2, D-FINE and
Mask2Former's pixel decoder (issue 25). `register` adds them to `families` (generators, weights,
builders, EXPECT), so `make fuzz` draws them with the rest.

Every model is a tiny random-weight transformers model built from a drawn configuration: levels,
points per level (D-FINE draws a count per level), heads, d_model, layers, queries, RT-DETR v2's
sampling method and offset scale, image size and exporter. The deformable-attention projections are
re-drawn so that locations spread (some past the map edges) and weights differ; convs are re-drawn
at fan-in scale (`vitdeploy.hf_detectors.informative_init`) so the RT-DETRs' top-k query selection
is decided by distinct scores, not ties.
"""
from __future__ import annotations

import numpy as np

from vitdeploy.hf_detectors import spread_sampling

EXPECT = {
    "msda_v2": ("msda", "replace", "RT-DETR v2 / D-FINE deformable attention, one point count for every level"),
    "msda_v2_points": ("msda", "replace", "D-FINE deformable attention with per-level point counts"),
    "msda_v2_discrete": ("msda", "replace", "RT-DETR v2 / D-FINE discrete sampling (decoder_method='discrete')"),
}
WEIGHTS = {"rtdetr": 0.05, "rtdetr_v2": 0.06, "dfine": 0.06, "m2f_pixel": 0.04}


def _pick(rng, values):
    return values[int(rng.integers(len(values)))]


def _img(rng, lo: int, hi: int) -> list[int]:
    return [int(rng.integers(lo // 32, hi // 32 + 1)) * 32 for _ in range(2)]


def gen_rtdetr(rng) -> dict:
    """RT-DETR's decoder: the Deformable DETR core over 3 backbone levels (+1 extra), P points each."""
    d_model = _pick(rng, [32, 64])
    return dict(img=_img(rng, 64, 128), levels=_pick(rng, [3, 3, 4]), points=int(rng.integers(1, 5)),
                heads=_pick(rng, [1, 2, 4]), d_model=d_model, dec_layers=int(rng.integers(1, 4)),
                queries=int(rng.integers(4, 16)), msda_impl=_pick(rng, ["stock", "vitdeploy"]))


def gen_rtdetr_v2(rng) -> dict:
    """RT-DETR v2: one point count for all levels (transformers' n_points_list), default or discrete
    sampling; two or more decoder layers (transformers ties the box heads of layers 1.. to layer 0)."""
    cfg = gen_rtdetr(rng)
    cfg.update(dec_layers=int(rng.integers(2, 4)), method=_pick(rng, ["default", "default", "discrete"]),
               offset_scale=float(np.round(rng.uniform(0.2, 1.0), 3)), exporters=["torchscript"])
    return cfg


def gen_dfine(rng) -> dict:
    """D-FINE: 2 levels (D-FINE-N's strides 16, 32) or 3; one point count drawn per level."""
    levels = _pick(rng, [2, 3, 3])
    points = [int(p) for p in rng.integers(1, 7, size=levels)]
    return dict(img=_img(rng, 64, 128), levels=levels, points=points, heads=_pick(rng, [1, 2, 4]),
                d_model=_pick(rng, [32, 64]), dec_layers=int(rng.integers(2, 4)), queries=int(rng.integers(4, 16)),
                method=_pick(rng, ["default", "default", "discrete"]), msda_impl=_pick(rng, ["stock", "vitdeploy"]),
                exporters=["torchscript"])


def gen_m2f_pixel(rng) -> dict:
    """Mask2Former's pixel decoder (3 levels x 4 points, fixed in transformers) on 4 random feature maps."""
    return dict(img=_img(rng, 64, 160), heads=_pick(rng, [1, 2, 4, 8]), d_model=_pick(rng, [32, 64]),
                enc_layers=int(rng.integers(1, 4)), msda_impl=_pick(rng, ["stock", "vitdeploy"]))


GENERATORS = {"rtdetr": gen_rtdetr, "rtdetr_v2": gen_rtdetr_v2, "dfine": gen_dfine, "m2f_pixel": gen_m2f_pixel}


# ----------------------------------------------------------------------------- builders

def _rtdetr_config(cfg, v2: bool):
    from vitdeploy.hf_detectors import rtdetr_config

    d = cfg["d_model"]
    config = rtdetr_config("r18", reduced=True, v2=v2)
    config.d_model = config.encoder_hidden_dim = d
    config.decoder_in_channels = [d, d, d]
    config.encoder_ffn_dim = config.decoder_ffn_dim = 2 * d
    config.encoder_attention_heads = config.decoder_attention_heads = cfg["heads"]
    config.decoder_layers = cfg["dec_layers"]
    config.num_queries = cfg["queries"]
    config.num_feature_levels = cfg["levels"]
    config.decoder_n_points = cfg["points"]
    config.num_labels = 7
    if v2:
        config.decoder_n_levels = cfg["levels"]
        config.decoder_method = cfg["method"]
        config.decoder_offset_scale = cfg["offset_scale"]
    return config


def _kind(cfg) -> str:
    if cfg.get("method") == "discrete":
        return "msda_v2_discrete"
    pts = cfg["points"]
    return "msda_v2_points" if isinstance(pts, list) and len(set(pts)) > 1 else "msda_v2"


def _detector(model_cls, config, cfg, gen, kind: str):
    from benchmarks.fuzz.families import Built, _example
    from vitdeploy.hf_detectors import informative_init

    model = informative_init(model_cls(config), seed=cfg["seed"])
    spread_sampling(model, gen)
    blocks = [{"kind": kind, "where": f"decoder layer {i} cross-attention"} for i in range(cfg["dec_layers"])]
    return Built(model, _example(cfg, gen, cfg["img"]), blocks, outputs=("logits", "pred_boxes"))


def _build_rtdetr(cfg, gen):
    from transformers import RTDetrForObjectDetection

    return _detector(RTDetrForObjectDetection, _rtdetr_config(cfg, v2=False), cfg, gen, "msda")


def _build_rtdetr_v2(cfg, gen):
    from transformers import RTDetrV2ForObjectDetection

    return _detector(RTDetrV2ForObjectDetection, _rtdetr_config(cfg, v2=True), cfg, gen, _kind(cfg))


def _build_dfine(cfg, gen):
    from transformers import DFineForObjectDetection

    from vitdeploy.hf_detectors import dfine_config

    d = cfg["d_model"]
    config = dfine_config("n" if cfg["levels"] == 2 else "s", reduced=True)
    config.d_model = config.encoder_hidden_dim = d
    config.decoder_in_channels = [d] * cfg["levels"]
    config.encoder_ffn_dim = config.decoder_ffn_dim = 2 * d
    config.encoder_attention_heads = config.decoder_attention_heads = cfg["heads"]
    config.decoder_layers = cfg["dec_layers"]
    config.num_queries = cfg["queries"]
    config.decoder_n_points = list(cfg["points"])
    config.decoder_method = cfg["method"]
    config.num_labels = 7
    return _detector(DFineForObjectDetection, config, cfg, gen, _kind(cfg))


class _PixelDecoder:
    """image -> four fixed random feature maps (strides 4, 8, 16, 32) -> Mask2Former's pixel decoder ->
    (mask_features, the three multi-scale features): the pixel decoder alone, with its 3-level encoder."""

    def __new__(cls, config, channels=(16, 24, 32, 48)):
        import torch
        from transformers.models.mask2former.modeling_mask2former import Mask2FormerPixelDecoder

        class Wrapped(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.stems = torch.nn.ModuleList(torch.nn.Conv2d(3, c, 2 ** (i + 2), stride=2 ** (i + 2))
                                                 for i, c in enumerate(channels))
                self.decoder = Mask2FormerPixelDecoder(config, feature_channels=list(channels))

            def forward(self, x):
                from types import SimpleNamespace

                out = self.decoder([stem(x) for stem in self.stems])
                levels = {f"level{i}": f for i, f in enumerate(out.multi_scale_features)}
                return SimpleNamespace(mask_features=out.mask_features, **levels)

        return Wrapped()


def _build_m2f_pixel(cfg, gen):
    import torch
    from transformers import Mask2FormerConfig

    from benchmarks.fuzz.families import Built, _example
    from vitdeploy.hf_detectors import informative_init

    d = cfg["d_model"]
    config = Mask2FormerConfig(feature_size=d, mask_feature_size=d, hidden_dim=d, encoder_feedforward_dim=2 * d,
                               encoder_layers=cfg["enc_layers"], num_attention_heads=cfg["heads"])
    model = _PixelDecoder(config)
    with torch.no_grad():  # transformers leaves level_embed uninitialised (torch.Tensor): draw it
        model.decoder.level_embed.copy_(torch.randn(model.decoder.level_embed.shape, generator=gen))
    informative_init(model, seed=cfg["seed"])
    spread_sampling(model, gen)
    blocks = [{"kind": "msda", "where": f"pixel decoder encoder layer {i}"} for i in range(cfg["enc_layers"])]
    return Built(model, _example(cfg, gen, cfg["img"]), blocks, outputs=("mask_features", "level0", "level1", "level2"))


def register(ns: dict) -> None:
    """Add these families to `benchmarks.fuzz.families` (its module namespace)."""
    ns["EXPECT"].update(EXPECT)
    ns["GENERATORS"].update(GENERATORS)
    ns["WEIGHTS"].update(WEIGHTS)
    for fam in GENERATORS:
        ns[f"_build_{fam}"] = globals()[f"_build_{fam}"]
