"""Seeded random small models for the rewrite fuzz suite, and what each pass should do with them.

Every generator takes a numpy Generator and returns a JSON-able configuration; `build(config)`
turns that configuration (and nothing else) into the same random-weight model every time, so a
failing case replays from its printed configuration. Each built model lists its attention blocks
with a *kind*; `EXPECT` says what the passes must do with each kind. That table is the one place
to edit when a pass learns something new (issue 14 adds non-square windows and Swin V2).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# kind of block -> (pass that owns it, what it must do, why).
#   replace:   the pass replaces the block (and the rewritten graph still matches PyTorch);
#   decline:   the pass leaves the block as it is and names it, with a reason, in its report;
#   untouched: the pass leaves the block as it is (no reason owed: it is not a block it knows).
EXPECT: dict[str, tuple[str, str, str]] = {
    "swin_window": ("swin", "replace", "Swin v1 window attention, square window, one shift for both axes"),
    "swin_nonsquare_window": ("swin", "replace", "non-square window (map smaller than the window on one side): issue 14"),
    "swin_axis_shift": ("swin", "replace", "shift on one axis only: issue 14"),
    "swin_pad_then_roll": ("swin", "replace", "torchvision/HF pad before rolling (issue 14 matches that order)"),
    "swinv2_window": ("swin", "replace", "Swin V2 cosine attention (issue 14)"),
    "gpsa": ("gpsa", "replace", "ConViT gated positional self-attention"),
    "msda": ("msda", "replace", "Deformable DETR multi-scale deformable attention core"),
}

PASSES = ("swin", "gpsa", "msda", "halo")  # every installed pass, as `vitdeploy rewrite` runs them without a manifest


@dataclass
class Built:
    model: object
    example: object  # torch tensor [B, 3, H, W]
    blocks: list[dict] = field(default_factory=list)  # {"kind", "where"}
    outputs: tuple[str, ...] = ("logits",)


def _pick(rng, values):
    return values[int(rng.integers(len(values)))]


def _image(rng, lo, hi, multiple):
    return int(rng.integers(lo // multiple, hi // multiple + 1)) * multiple


# ----------------------------------------------------------------------------- generators

def gen_timm_swin(rng) -> dict:
    stages = int(rng.integers(1, 4))
    patch = _pick(rng, [2, 4])
    head_dim = _pick(rng, [4, 8])
    heads = [int(rng.integers(1, 3)) * 2 ** i for i in range(stages)]
    window = int(rng.integers(3, 13))
    shape = _pick(rng, ["square", "non_square", "smaller_one_side", "smaller_both"])
    # map after patch embedding (stage 1 resolution), chosen relative to the window
    if shape == "square":
        h = w = int(rng.integers(window, 2 * window + 4))
    elif shape == "non_square":
        h, w = (int(v) for v in rng.integers(window, 2 * window + 4, size=2))
    elif shape == "smaller_one_side":
        h, w = int(rng.integers(2, window)), int(rng.integers(window, 2 * window + 2))
        if rng.random() < 0.5:
            h, w = w, h
    else:
        h, w = (int(v) for v in rng.integers(2, window, size=2))
    return dict(img=[h * patch, w * patch], patch=patch, window=window, depths=[int(rng.integers(1, 3)) for _ in range(stages)],
                heads=heads, head_dim=head_dim, qkv_bias=bool(rng.random() < 0.8), shape=shape)


def gen_timm_swinv2(rng) -> dict:
    cfg = gen_timm_swin(rng)
    cfg["shape"] = _pick(rng, ["square", "non_square"])
    h = int(rng.integers(cfg["window"], 2 * cfg["window"] + 3))
    w = h if cfg["shape"] == "square" else int(rng.integers(cfg["window"], 2 * cfg["window"] + 3))
    cfg["img"] = [h * cfg["patch"], w * cfg["patch"]]
    return cfg


def gen_tv_swin(rng) -> dict:
    stages = int(rng.integers(1, 4))
    window = int(rng.integers(3, 9))
    patch = _pick(rng, [2, 4])
    h, w = (int(v) for v in rng.integers(2, 2 * window + 3, size=2))
    if rng.random() < 0.4:
        w = h
    depths = [int(rng.integers(1, 3)) for _ in range(stages)]
    if sum(depths) < 2:  # torchvision spreads stochastic depth over (blocks - 1): one block divides by zero
        depths[0] = 2
    return dict(img=[h * patch, w * patch], patch=patch, window=window, depths=depths,
                heads=[int(rng.integers(1, 3)) * 2 ** i for i in range(stages)], head_dim=_pick(rng, [4, 8]))


def gen_hf_swin(rng) -> dict:
    """transformers builds each stage's attention for the configured window but clamps the window to a
    smaller map at run time (and sizes stages by floor division where patch merging pads): it only runs
    when every stage's map is at least the window on its shorter side, so only those are drawn."""
    stages = int(rng.integers(1, 4))
    window = int(rng.integers(3, 8))
    patch = _pick(rng, [2, 4])
    lo = window * 2 ** (stages - 1)
    h, w = (int(v) for v in rng.integers(lo, lo + 2 * window + 3, size=2))
    if rng.random() < 0.4:
        w = h
    return dict(img=[h * patch, w * patch], patch=patch, window=window, depths=[int(rng.integers(1, 3)) for _ in range(stages)],
                heads=[int(rng.integers(1, 3)) * 2 ** i for i in range(stages)], head_dim=_pick(rng, [4, 8]))


def gen_convit(rng) -> dict:
    depth = int(rng.integers(1, 5))
    patch = _pick(rng, [8, 16])
    local = int(rng.integers(1, depth + 1)) if rng.random() > 0.1 else 0  # 0: MHSA only, nothing to replace
    return dict(img=_image(rng, 2 * patch, 6 * patch, patch), patch=patch, heads=int(rng.integers(1, 5)),
                head_dim=_pick(rng, [8, 12, 16]), depth=depth, local_up_to_layer=local,
                locality_strength=float(np.round(rng.uniform(0.2, 2.0), 3)), gate_std=float(np.round(rng.uniform(0.5, 3.0), 3)))


def gen_detr(rng) -> dict:
    """Limits of transformers' Deformable DETR, not of the pass: a decoder needs two or more layers (its
    bbox_embed weight tying), 2 feature levels index past the level embedding (the ResNet gives 3 maps
    once there is more than one level), and the input projections' GroupNorm (32 groups, so d_model a
    multiple of 32) rejects a 1x1 map with one channel per group, which a 4th level of a 64-pixel side is."""
    levels = _pick(rng, [1, 3, 4])
    d_model = _pick(rng, [32, 32, 64])
    lo = 80 if levels == 4 and d_model == 32 else 64
    return dict(img=[_image(rng, lo, 112, 16), _image(rng, lo, 112, 16)], levels=levels,
                enc_points=int(rng.integers(1, 5)), dec_points=int(rng.integers(1, 5)), heads=_pick(rng, [1, 2, 4, 8]),
                d_model=d_model, enc_layers=int(rng.integers(1, 3)), dec_layers=int(rng.integers(2, 4)),
                queries=int(rng.integers(5, 21)), msda_impl=_pick(rng, ["stock", "vitdeploy"]))


def gen_vit(rng) -> dict:
    patch = _pick(rng, [8, 16])
    return dict(img=[_image(rng, 2 * patch, 5 * patch, patch), _image(rng, 2 * patch, 5 * patch, patch)], patch=patch,
                heads=int(rng.integers(1, 4)), head_dim=_pick(rng, [8, 16]), depth=int(rng.integers(1, 4)),
                class_token=bool(rng.random() < 0.7))


def gen_mixer(rng) -> dict:
    patch = _pick(rng, [8, 16])
    return dict(img=[_image(rng, 2 * patch, 5 * patch, patch), _image(rng, 2 * patch, 5 * patch, patch)], patch=patch,
                dim=_pick(rng, [16, 32]), blocks=int(rng.integers(1, 4)))


GENERATORS = {
    "timm_swin": gen_timm_swin,
    "timm_swinv2": gen_timm_swinv2,
    "tv_swin": gen_tv_swin,
    "hf_swin": gen_hf_swin,
    "convit": gen_convit,
    "detr": gen_detr,
    "vit": gen_vit,
    "mixer": gen_mixer,
}
# How often each family is drawn (Swin v1 has the most shapes to cover).
WEIGHTS = {"timm_swin": 0.28, "timm_swinv2": 0.08, "tv_swin": 0.1, "hf_swin": 0.1, "convit": 0.16, "detr": 0.12,
           "vit": 0.08, "mixer": 0.08}


# ----------------------------------------------------------------------------- issue 24: windowed encoders, HaloNet
from benchmarks.fuzz import windowed as _windowed  # noqa: E402

EXPECT.update(_windowed.EXPECT)
GENERATORS.update(_windowed.GENERATORS)
WEIGHTS.update(_windowed.WEIGHTS)
EXPORTERS: dict[str, tuple[str, ...]] = dict(_windowed.EXPORTERS)  # families only some exporters can export
# -----------------------------------------------------------------------------


def generate(seed: int, index: int, families: list[str] | None = None) -> dict:
    """Case `index` of run `seed`: the same configuration whatever the number of cases."""
    rng = np.random.default_rng([seed, index])
    fams = families or list(GENERATORS)
    p = np.asarray([WEIGHTS[f] for f in fams], np.float64)
    family = fams[int(rng.choice(len(fams), p=p / p.sum()))]
    cfg = {"family": family, "index": index, "seed": int(rng.integers(2 ** 31)), **GENERATORS[family](rng)}
    exporter = _pick(rng, cfg.pop("exporters", None) or ["dynamo", "torchscript"])  # a family may exclude one
    if family in EXPORTERS:
        exporter = EXPORTERS[family][0] if exporter not in EXPORTERS[family] else exporter
    cfg["exporter"] = exporter
    cfg["opset"] = _pick(rng, [18, 23]) if exporter == "dynamo" else _pick(rng, [17, 18, 20])
    cfg["dynamic_batch"] = bool(rng.random() < 0.3)
    return cfg


# ----------------------------------------------------------------------------- builders

def _stage_maps(h: int, w: int, stages: int) -> list[tuple[int, int]]:
    """Feature map of each stage: patch merging pads odd sides, then halves (timm, torchvision, HF)."""
    maps = [(h, w)]
    for _ in range(stages - 1):
        h, w = math.ceil(h / 2), math.ceil(w / 2)
        maps.append((h, w))
    return maps


def _timm_kind(res, window: int, shifted: bool) -> str:
    """timm's `_calc_window_shift`: the window is clamped to the map per axis, the shift dropped per axis."""
    win = [min(r, window) for r in res]
    shift = [0 if r <= window else window // 2 for r in res] if shifted else [0, 0]
    if win[0] != win[1]:
        return "swin_nonsquare_window"
    if shift[0] != shift[1]:
        return "swin_axis_shift"
    return "swin_window"


def _padded_kind(res, window: int, shifted: bool, hf: bool) -> str:
    """torchvision / HF: pad to the window first, then roll on the padded map."""
    if hf and min(res) <= window:
        return "swin_window"  # HF clamps the window to the shorter side and drops the shift
    pad = [math.ceil(r / window) * window for r in res]
    shift = [0 if window >= p else window // 2 for p in pad] if shifted else [0, 0]
    if hf:
        shift = [window // 2] * 2 if shifted else [0, 0]
    if shift[0] != shift[1]:
        return "swin_axis_shift"
    if any(shift) and pad != list(res):
        return "swin_pad_then_roll"
    return "swin_window"


def _randomise_rel_bias(model, gen):
    """timm/torchvision/HF initialise the relative-position bias tables near zero; make them matter."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if "relative_position_bias_table" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)


def build(cfg: dict) -> Built:
    import torch

    from vitdeploy.models import redraw_zero_weights

    torch.manual_seed(cfg["seed"])
    gen = torch.Generator().manual_seed(cfg["seed"])
    fam = cfg["family"]
    built = _windowed.BUILDERS[fam](cfg, gen) if fam in _windowed.BUILDERS else globals()[f"_build_{fam}"](cfg, gen)
    redraw_zero_weights(built.model, seed=cfg["seed"])
    built.model.eval()
    return built


def _example(cfg, gen, img):
    import torch

    batch = 2 if cfg.get("dynamic_batch") else 1
    h, w = (img, img) if isinstance(img, int) else img
    return torch.randn(batch, 3, h, w, generator=gen)


def _build_timm_swin(cfg, gen, v2=False) -> Built:
    import timm

    stages = len(cfg["depths"])
    h, w = cfg["img"]
    name = "swinv2_tiny_window8_256" if v2 else "swin_tiny_patch4_window7_224"
    model = timm.create_model(name, pretrained=False, img_size=(h, w), patch_size=cfg["patch"], window_size=cfg["window"],
                              depths=tuple(cfg["depths"]), num_heads=tuple(cfg["heads"]),
                              embed_dim=cfg["heads"][0] * cfg["head_dim"], qkv_bias=cfg["qkv_bias"], num_classes=10,
                              drop_path_rate=0.0)
    _randomise_rel_bias(model, gen)
    blocks = []
    for s, res in enumerate(_stage_maps(h // cfg["patch"], w // cfg["patch"], stages)):
        for b in range(cfg["depths"][s]):
            kind = "swinv2_window" if v2 else _timm_kind(res, cfg["window"], b % 2 == 1)
            blocks.append({"kind": kind, "where": f"stage {s + 1} block {b + 1} ({res[0]}x{res[1]} map)"})
    return Built(model, _example(cfg, gen, cfg["img"]), blocks)


def _build_timm_swinv2(cfg, gen) -> Built:
    return _build_timm_swin(cfg, gen, v2=True)


def _build_tv_swin(cfg, gen) -> Built:
    from torchvision.models.swin_transformer import SwinTransformer

    stages = len(cfg["depths"])
    model = SwinTransformer(patch_size=[cfg["patch"]] * 2, embed_dim=cfg["heads"][0] * cfg["head_dim"], depths=cfg["depths"],
                            num_heads=cfg["heads"], window_size=[cfg["window"]] * 2, stochastic_depth_prob=0.0, num_classes=10)
    _randomise_rel_bias(model, gen)
    h, w = cfg["img"]
    blocks = []
    for s, res in enumerate(_stage_maps(h // cfg["patch"], w // cfg["patch"], stages)):
        for b in range(cfg["depths"][s]):
            blocks.append({"kind": _padded_kind(res, cfg["window"], b % 2 == 1, hf=False),
                           "where": f"stage {s + 1} block {b + 1} ({res[0]}x{res[1]} map)"})
    return Built(model, _example(cfg, gen, cfg["img"]), blocks)


class _Logits:
    """A Hugging Face classifier as a module returning the logits tensor."""

    def __new__(cls, hf):
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.hf = hf

            def forward(self, x):
                return self.hf(pixel_values=x).logits

        return Wrapped()


def _build_hf_swin(cfg, gen) -> Built:
    from transformers import SwinConfig, SwinForImageClassification

    stages = len(cfg["depths"])
    h, w = cfg["img"]
    hf_cfg = SwinConfig(image_size=(h, w), patch_size=cfg["patch"], embed_dim=cfg["heads"][0] * cfg["head_dim"],
                        depths=cfg["depths"], num_heads=cfg["heads"], window_size=cfg["window"], num_labels=10,
                        drop_path_rate=0.0)
    model = _Logits(SwinForImageClassification(hf_cfg).eval())
    _randomise_rel_bias(model, gen)
    blocks = []
    for s, res in enumerate(_stage_maps(h // cfg["patch"], w // cfg["patch"], stages)):
        for b in range(cfg["depths"][s]):
            blocks.append({"kind": _padded_kind(res, cfg["window"], b % 2 == 1, hf=True),
                           "where": f"stage {s + 1} block {b + 1} ({res[0]}x{res[1]} map)"})
    return Built(model, _example(cfg, gen, cfg["img"]), blocks)


def _build_convit(cfg, gen) -> Built:
    import timm
    import torch

    model = timm.create_model("convit_tiny", pretrained=False, img_size=cfg["img"], patch_size=cfg["patch"],
                              embed_dim=cfg["head_dim"], num_heads=cfg["heads"], depth=cfg["depth"],
                              local_up_to_layer=cfg["local_up_to_layer"], locality_strength=cfg["locality_strength"],
                              num_classes=10)
    blocks = []
    with torch.no_grad():
        for i, blk in enumerate(model.blocks):
            if blk.use_gpsa:
                blk.attn.gating_param.copy_(torch.randn(blk.attn.gating_param.shape, generator=gen) * cfg["gate_std"])
                blk.attn.pos_proj.bias.copy_(torch.randn(blk.attn.pos_proj.bias.shape, generator=gen) * 0.5)
                blocks.append({"kind": "gpsa", "where": f"block {i}"})
    return Built(model, _example(cfg, gen, cfg["img"]), blocks)


def _build_detr(cfg, gen) -> Built:
    import torch
    from transformers import DeformableDetrForObjectDetection
    from transformers.models.deformable_detr.modeling_deformable_detr import DeformableDetrMultiscaleDeformableAttention

    from vitdeploy.models import detr_config

    config = detr_config(small=True, d_model=cfg["d_model"], encoder_layers=cfg["enc_layers"], decoder_layers=cfg["dec_layers"],
                         encoder_attention_heads=cfg["heads"], decoder_attention_heads=cfg["heads"],
                         encoder_n_points=cfg["enc_points"], decoder_n_points=cfg["dec_points"],
                         num_feature_levels=cfg["levels"], num_queries=cfg["queries"],
                         encoder_ffn_dim=2 * cfg["d_model"], decoder_ffn_dim=2 * cfg["d_model"])
    model = DeformableDetrForObjectDetection(config)
    with torch.no_grad():  # fresh init samples only the reference point; spread the locations, some past the edges
        for mod in model.modules():
            if isinstance(mod, DeformableDetrMultiscaleDeformableAttention):
                for lin, std in ((mod.sampling_offsets, 0.5), (mod.attention_weights, 0.3)):
                    lin.weight.copy_(torch.randn(lin.weight.shape, generator=gen) * std)
                    lin.bias.copy_(torch.randn(lin.bias.shape, generator=gen) * 2 * std)
    blocks = [{"kind": "msda", "where": f"encoder layer {i}"} for i in range(cfg["enc_layers"])]
    blocks += [{"kind": "msda", "where": f"decoder layer {i}"} for i in range(cfg["dec_layers"])]
    return Built(model, _example(cfg, gen, cfg["img"]), blocks, outputs=("logits", "pred_boxes"))


def _build_vit(cfg, gen) -> Built:
    import timm

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=tuple(cfg["img"]), patch_size=cfg["patch"],
                              embed_dim=cfg["heads"] * cfg["head_dim"], depth=cfg["depth"], num_heads=cfg["heads"],
                              class_token=cfg["class_token"], global_pool="token" if cfg["class_token"] else "avg",
                              num_classes=10)
    return Built(model, _example(cfg, gen, cfg["img"]), [])


def _build_mixer(cfg, gen) -> Built:
    from timm.models.mlp_mixer import MlpMixer

    model = MlpMixer(img_size=tuple(cfg["img"]), patch_size=cfg["patch"], embed_dim=cfg["dim"], num_blocks=cfg["blocks"],
                     num_classes=10)
    return Built(model, _example(cfg, gen, cfg["img"]), [])


def expected_counts(blocks: list[dict]) -> dict[str, dict[str, int]]:
    """Per pass: how many blocks it must replace, decline (with a reason) and leave untouched."""
    out = {p: {"replace": 0, "decline": 0, "untouched": 0} for p in PASSES}
    for b in blocks:
        owner, what, _ = EXPECT[b["kind"]]
        out[owner][what] += 1
    return out


# --- RT-DETR, RT-DETR v2, D-FINE and Mask2Former's pixel decoder (issue 25): benchmarks/fuzz/detr_families.py
from benchmarks.fuzz import detr_families as _detr_families  # noqa: E402

_detr_families.register(globals())
