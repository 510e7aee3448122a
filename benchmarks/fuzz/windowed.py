"""Fuzz generators for the windowed encoders of issue 24 (SAM, Hiera, TinyViT, MaxViT, Twins) and HaloNet.

Same contract as `families.py` (which merges these tables into its own): a generator draws a JSON-able
configuration from a numpy Generator, a builder turns it into the same random-weight model every time and
lists its attention blocks with a *kind*. Kinds are read from the built modules and the map each block
really sees (a forward hook on one example), not re-derived from the constructor's arithmetic.

A block whose single window covers its whole map in the original token order (a SAM block whose window
equals the map, Twins' LSA on a map no larger than its window, Hiera with one mask unit) is global attention,
whatever the module calls it: nothing moves, and the pass names it and leaves it to TensorRT -- unless it adds
a constant relative-position bias (TinyViT's and MaxViT's stage whose map equals the window), which the
window plugin carries like its windowed neighbours (as the Swin pass always did for Swin's last stage).
"""
from __future__ import annotations

import numpy as np

# kind -> (pass, what it must do, why); merged into families.EXPECT
EXPECT: dict[str, tuple[str, str, str]] = {
    "sam_window_relpos": ("swin", "replace", "SAM windowed block, decomposed relative position (WindowAttentionRelPos)"),
    "sam_window": ("swin", "replace", "SAM windowed block without relative position"),
    "tinyvit_window": ("swin", "replace", "TinyViT window (pad, LayerNorm inside, head-first q/k/v, offset biases)"),
    "maxvit_block": ("swin", "replace", "MaxViT block attention (window partition)"),
    "maxvit_grid": ("swin", "replace", "MaxViT grid attention (dilated partition)"),
    "hiera_mask_unit": ("swin", "replace", "Hiera mask-unit attention (tokens already grouped)"),
    "hiera_mask_unit_pool": ("swin", "replace", "Hiera mask-unit attention with query pooling"),
    "twins_lsa": ("swin", "replace", "Twins locally-grouped attention (5-D logits, padded)"),
    "global_attention": ("swin", "decline", "global attention: left to TensorRT's fused attention, named in the report"),
    "halo": ("halo", "replace", "HaloNet blocked local attention"),
}

# Families whose fused SDPA call the dynamo exporter cannot translate (5-D or 3-D q/k/v, torch 2.14): their
# builders switch timm's fused attention off for dynamo exports, so both exporters' graphs are drawn.
_NO_DYNAMO_SDPA = ("sam", "hiera", "twins")
# HaloAttn's Tensor.unfold has no TorchScript export.
EXPORTERS = {"halonet": ("dynamo",)}


def _pick(rng, values):
    return values[int(rng.integers(len(values)))]


def gen_sam(rng) -> dict:
    patch = _pick(rng, [8, 16])
    window = int(rng.integers(2, 7))
    h, w = (int(v) for v in rng.integers(2, 3 * window + 2, size=2))
    depth = int(rng.integers(2, 5))
    glob = sorted(int(i) for i in rng.choice(depth, size=int(rng.integers(0, 2)), replace=False))
    return dict(img=[h * patch, w * patch], patch=patch, window=window, depth=depth, global_blocks=glob,
                heads=int(rng.integers(1, 4)), head_dim=_pick(rng, [8, 16]), rel_pos=bool(rng.random() < 0.8),
                qkv_bias=bool(rng.random() < 0.8), fused_attn=bool(rng.random() < 0.5))


def gen_hiera(rng) -> dict:
    """Hiera's Unroll halves the token map once per stage transition, and every q_pool halves the mask unit:
    a side of k * lcm(unit, 2**(stages-1)) tokens and a unit of at least 2**q_pool tokens a side."""
    stages = int(rng.integers(2, 5))
    q_pool = int(rng.integers(0, stages))
    mu = _pick(rng, [m for m in (2, 4, 8) if m >= 2 ** q_pool])
    step = int(np.lcm(mu, 2 ** (stages - 1)))
    sides = [int(v) * step for v in rng.integers(1, 4, size=2)]
    return dict(img=[sides[0] * 4, sides[1] * 4], mask_unit=mu, stages=[int(rng.integers(1, 3)) for _ in range(stages)],
                q_pool=q_pool, mask_unit_attn=[bool(rng.random() < 0.7) for _ in range(stages)],
                embed_dim=_pick(rng, [8, 16]), heads=int(rng.integers(1, 3)), fused_attn=bool(rng.random() < 0.5))


def gen_tinyvit(rng) -> dict:
    windows = [int(rng.integers(2, 8)) for _ in range(3)]
    return dict(img=[int(rng.integers(4, 13)) * 16, int(rng.integers(4, 13)) * 16], windows=[7, *windows],
                heads=[1, *(int(rng.integers(1, 4)) for _ in range(3))], head_dim=_pick(rng, [8, 16]),
                depths=[1, *(int(rng.integers(1, 3)) for _ in range(3))])


def gen_maxvit(rng) -> dict:
    variant = _pick(rng, ["maxvit_nano_rw_256", "maxvit_tiny_tf_224", "maxvit_rmlp_nano_rw_256"])
    window = [int(v) for v in rng.integers(2, 4, size=2)]  # MaxViT's window is the image / 32
    return dict(variant=variant, img=[window[0] * 32, window[1] * 32], dim_head=_pick(rng, [8, 16]),
                embed_dim=[16, 32, 32, 64], depths=[int(rng.integers(1, 3)) for _ in range(4)])


def gen_twins(rng) -> dict:
    window = int(rng.integers(2, 8))
    stages = int(rng.integers(1, 4))
    return dict(img=[int(rng.integers(2, 9)) * 16, int(rng.integers(2, 9)) * 16], window=window, stages=stages,
                heads=[int(rng.integers(1, 3)) * 2 ** i for i in range(stages)], head_dim=_pick(rng, [8, 16]),
                depths=[2 * int(rng.integers(1, 3)) for _ in range(stages)], sr=[2 ** (stages - 1 - i) for i in range(stages)],
                fused_attn=bool(rng.random() < 0.5))


def gen_halonet(rng) -> dict:
    """One or two HaloAttn layers after a stride-4 stem; every layer's map a multiple of its block, so the
    stem's map is a multiple of block * 2**(stride-2 layers before the last)."""
    layers = []
    block = _pick(rng, [2, 4, 8])
    for _ in range(int(rng.integers(1, 3))):
        stride = _pick(rng, [1, 1, 2]) if block > 2 else 1
        layers.append(dict(block=block, halo=int(rng.integers(1, block // 2 + 2)), stride=stride,
                           heads=_pick(rng, [1, 2, 4]), avg_down=bool(rng.random() < 0.3),
                           scale_pos_embed=bool(rng.random() < 0.3)))
    step = block * 2 ** sum(layer["stride"] == 2 for layer in layers[:-1])
    size = [int(v) * step for v in rng.integers(1, 4, size=2)]
    return dict(img=[size[0] * 4, size[1] * 4], dim=_pick(rng, [16, 32]), layers=layers)


GENERATORS = {"sam": gen_sam, "hiera": gen_hiera, "tinyvit": gen_tinyvit, "maxvit": gen_maxvit, "twins": gen_twins,
              "halonet": gen_halonet}
WEIGHTS = {"sam": 0.06, "hiera": 0.06, "tinyvit": 0.05, "maxvit": 0.05, "twins": 0.05, "halonet": 0.03}


# ----------------------------------------------------------------------------- builders


def _shapes_seen(model, x, cls) -> list:
    """(module, input shape) for every `cls` module, in call order, from one forward pass."""
    import torch

    seen = []
    hooks = [m.register_forward_pre_hook(lambda mod, args, seen=seen: seen.append((mod, tuple(args[0].shape))))
             for m in model.modules() if isinstance(m, cls)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


def _fused(cfg, family: str) -> bool:
    return bool(cfg.get("fused_attn", True)) and not (family in _NO_DYNAMO_SDPA and cfg.get("exporter") == "dynamo")


def _set_fused(model, fused: bool) -> None:
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = fused


def _randomise_positions(model, gen, names=("rel_pos", "attention_biases", "relative_position", "pos_embed")):
    """Position parameters start at zero (or near it) in timm: make them matter."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(k in name for k in names):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)


def build_sam(cfg, gen):
    import timm
    from timm.models.vision_transformer_sam import Block

    from benchmarks.fuzz.families import Built, _example

    model = timm.create_model("samvit_base_patch16", pretrained=False, img_size=tuple(cfg["img"]), patch_size=cfg["patch"],
                              embed_dim=cfg["heads"] * cfg["head_dim"], depth=cfg["depth"], num_heads=cfg["heads"],
                              window_size=cfg["window"], global_attn_indexes=tuple(cfg["global_blocks"]),
                              use_rel_pos=cfg["rel_pos"], qkv_bias=cfg["qkv_bias"], neck_chans=16, num_classes=10)
    _set_fused(model, _fused(cfg, "sam"))
    _randomise_positions(model, gen)
    x = _example(cfg, gen, cfg["img"])
    blocks = []
    for i, (blk, shape) in enumerate(_shapes_seen(model.eval(), x, Block)):
        h, w = shape[1:3]
        ws = blk.window_size
        windowed = ws > 0 and (h, w) != (ws, ws)
        kind = ("sam_window_relpos" if cfg["rel_pos"] else "sam_window") if windowed else "global_attention"
        blocks.append({"kind": kind, "where": f"block {i} ({h}x{w} map, window {ws or 'global'})"})
    return Built(model, x, blocks)


def build_hiera(cfg, gen):
    import timm
    from timm.models.hiera import MaskUnitAttention

    from benchmarks.fuzz.families import Built, _example

    mu = cfg["mask_unit"]
    model = timm.create_model("hiera_tiny_224", pretrained=False, img_size=tuple(cfg["img"]), embed_dim=cfg["embed_dim"],
                              num_heads=cfg["heads"], stages=tuple(cfg["stages"]), q_pool=cfg["q_pool"],
                              mask_unit_size=(mu, mu), mask_unit_attn=tuple(cfg["mask_unit_attn"]), num_classes=10)
    _set_fused(model, _fused(cfg, "hiera"))
    _randomise_positions(model, gen)
    x = _example(cfg, gen, cfg["img"])
    units = (cfg["img"][0] // 4 // mu) * (cfg["img"][1] // 4 // mu)
    blocks = []
    for i, (attn, shape) in enumerate(_shapes_seen(model.eval(), x, MaskUnitAttention)):
        if attn.use_mask_unit_attn and units > 1:
            kind = "hiera_mask_unit_pool" if attn.q_stride > 1 else "hiera_mask_unit"
        else:
            kind = "global_attention"
        blocks.append({"kind": kind, "where": f"block {i} ({shape[1]} tokens, {units} units, q_stride {attn.q_stride})"})
    return Built(model, x, blocks)


def build_tinyvit(cfg, gen):
    import timm
    from timm.models.tiny_vit import TinyVitBlock

    from benchmarks.fuzz.families import Built, _example

    dims = [h * cfg["head_dim"] for h in cfg["heads"]]
    model = timm.create_model("tiny_vit_5m_224", pretrained=False, embed_dims=dims, depths=cfg["depths"],
                              num_heads=cfg["heads"], window_sizes=cfg["windows"], num_classes=10)
    _randomise_positions(model, gen)
    for m in model.modules():
        if hasattr(m, "attention_bias_cache"):
            m.attention_bias_cache = {}
    x = _example(cfg, gen, cfg["img"])
    blocks = []
    for i, (blk, shape) in enumerate(_shapes_seen(model.eval(), x, TinyVitBlock)):
        h, w = shape[1:3]
        ws = blk.window_size  # a map equal to the window is one window, but with TinyViT's offset biases
        kind = "tinyvit_window"
        blocks.append({"kind": kind, "where": f"block {i} ({h}x{w} map, window {ws})"})
    return Built(model, x, blocks)


def build_maxvit(cfg, gen):
    import timm
    from timm.models.maxxvit import PartitionAttentionCl

    from benchmarks.fuzz.families import Built, _example

    stem = 16 if "tf" in cfg["variant"] else (8, 16)
    model = timm.create_model(cfg["variant"], pretrained=False, img_size=tuple(cfg["img"]), embed_dim=tuple(cfg["embed_dim"]),
                              depths=tuple(cfg["depths"]), stem_width=stem, transformer_dim_head=cfg["dim_head"],
                              num_classes=10)
    _randomise_positions(model, gen)
    x = _example(cfg, gen, cfg["img"])
    blocks = []
    for i, (blk, shape) in enumerate(_shapes_seen(model.eval(), x, PartitionAttentionCl)):
        h, w = shape[1:3]
        kind = "maxvit_block" if blk.partition_block else "maxvit_grid"  # a one-window stage keeps its bias
        blocks.append({"kind": kind, "where": f"block {i} ({h}x{w} map, {'window' if blk.partition_block else 'grid'} "
                                              f"{tuple(blk.partition_size)})"})
    return Built(model, x, blocks)


def build_twins(cfg, gen):
    import timm
    from timm.models.twins import Block

    from benchmarks.fuzz.families import Built, _example

    n = cfg["stages"]
    model = timm.create_model("twins_svt_small", pretrained=False, img_size=tuple(cfg["img"]),
                              embed_dims=[h * cfg["head_dim"] for h in cfg["heads"]], num_heads=cfg["heads"],
                              mlp_ratios=[2] * n, depths=cfg["depths"], wss=[cfg["window"]] * n, sr_ratios=cfg["sr"],
                              num_classes=10)
    _set_fused(model, _fused(cfg, "twins"))
    _randomise_positions(model, gen)
    x = _example(cfg, gen, cfg["img"])
    blocks = []
    hooks_seen = []
    import torch

    def hook(mod, args, kwargs=None):
        hooks_seen.append((mod, tuple(args[1]) if len(args) > 1 else None))

    hs = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, Block)]
    with torch.no_grad():
        model.eval()(x)
    for h in hs:
        h.remove()
    for i, (blk, size) in enumerate(hooks_seen):
        lsa = type(blk.attn).__name__ == "LocallyGroupedAttn"
        ws = getattr(blk.attn, "ws", 1)
        kind = "twins_lsa" if lsa and tuple(size) != (ws, ws) else "global_attention"
        blocks.append({"kind": kind, "where": f"block {i} ({size[0]}x{size[1]} map, {'LSA ' + str(ws) if lsa else 'GSA'})"})
    return Built(model, x, blocks)


def build_halonet(cfg, gen):
    import torch
    from timm.layers.halo_attn import HaloAttn

    from benchmarks.fuzz.families import Built, _example

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            dim = cfg["dim"]
            self.stem = torch.nn.Conv2d(3, dim, 4, stride=4)
            self.attn = torch.nn.ModuleList()
            for layer in cfg["layers"]:
                self.attn.append(HaloAttn(dim, dim, num_heads=layer["heads"], block_size=layer["block"],
                                          halo_size=layer["halo"], stride=layer["stride"], avg_down=layer["avg_down"],
                                          scale_pos_embed=layer["scale_pos_embed"]))
            self.head = torch.nn.Linear(dim, 10)

        def forward(self, x):
            x = self.stem(x)
            for a in self.attn:
                x = x + a(x) if a.block_stride == 1 and isinstance(a.pool, torch.nn.Identity) else a(x)
            return self.head(x.mean((2, 3)))

    model = Net()
    _randomise_positions(model, gen, names=("height_rel", "width_rel"))
    x = _example(cfg, gen, cfg["img"])
    blocks = []
    for i, (attn, shape) in enumerate(_shapes_seen(model.eval(), x, HaloAttn)):
        blocks.append({"kind": "halo", "where": f"layer {i} ({shape[2]}x{shape[3]} map, block {attn.block_size}, "
                                                f"halo {attn.halo_size}, stride {attn.block_stride})"})
    return Built(model, x, blocks)


BUILDERS = {"sam": build_sam, "hiera": build_hiera, "tinyvit": build_tinyvit, "maxvit": build_maxvit, "twins": build_twins,
            "halonet": build_halonet}
