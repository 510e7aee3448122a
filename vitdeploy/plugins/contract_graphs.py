"""Real rewritten graphs whose plugin nodes the contract checks (and the GPU launcher check) use.

Each `GraphCase` exports a model with the *real* model's attention attributes through
vitdeploy's own export and rewrite passes (dynamic batch, so TensorRT sees a symbolic batch)
and says what the full-size model's plugin nodes are, computed from the full model's modules
(or config) without exporting it. Depth is reduced where blocks only repeat: the set of
distinct plugin nodes -- what TensorRT compiles a kernel for -- is the full model's, which
`real_nodes` lets the tests prove, while the export stays a few seconds.

To add a plugin or a model: add a `GraphCase` to `GRAPHS` (its `real_nodes` returns the
full-size model's distinct plugin-node signatures, `signature(node)` the same for a node of
the rewritten graph).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from vitdeploy.plugins.contract import PluginNode, plugin_nodes, synthetic_node

FLOAT, INT32 = 1, 6  # onnx.TensorProto.FLOAT / INT32


@dataclass(frozen=True)
class GraphCase:
    name: str  # the model alias whose attributes the graph has
    build: Callable[[], object]  # the reduced torch model (eval mode)
    img: int
    passes: tuple[str, ...]
    real_nodes: Callable[[], set]  # distinct node signatures of the full-size model
    signature: Callable[[PluginNode], tuple]
    options: dict = field(default_factory=dict)
    # precision -> key: nodes with equal keys compile kernels with the same tiles, warps and parameter
    # list (so the same shared memory and ABI) and, for finer keys, the same code paths; the contract
    # tests run one node per key (the one with the most tactics) at the precisions listed here and every
    # node at the others; benchmarks/trt_contract_sweep.py always runs every node
    sample: dict = field(default_factory=dict)
    outputs: tuple[str, ...] = ("logits",)
    exporter: str = "torchscript"
    note: str = ""
    # a full-size node from a real_nodes() signature (random constants), for the GPU launcher check
    synthesize: Callable[[tuple], PluginNode] | None = None

    def full_size_nodes(self, seed: int = 0) -> list[PluginNode]:
        """The full-size model's distinct plugin nodes, built without an export (see `synthesize`)."""
        rng = np.random.default_rng(seed)
        return [self.synthesize(sig, rng) for sig in sorted(self.real_nodes(), key=str)]


def nodes_for(case: GraphCase, nodes: list[PluginNode], precision: str, tactics: Callable[[PluginNode], int]) -> list[PluginNode]:
    """The nodes the contract tests drive at `precision`: all, or one per key where the case samples."""
    if precision not in case.sample:
        return list(nodes)
    chosen: dict = {}
    for node in nodes:
        key = case.sample[precision](node)
        if key not in chosen or tactics(node) > tactics(chosen[key]):
            chosen[key] = node
    return list(chosen.values())


def export_rewritten(case: GraphCase, workdir: str | Path):
    """(rewritten ModelProto, distinct plugin nodes): export with dynamic batch, then the case's passes."""
    import onnx
    import torch

    from vitdeploy.deploy.export import BatchSpec, export_onnx
    from vitdeploy.deploy.rewrite.driver import run_passes

    path = Path(workdir) / f"{case.name}.onnx"
    torch.manual_seed(0)
    model = case.build()
    export_onnx(model, torch.randn(1, 3, case.img, case.img), path, batch=BatchSpec(1, 2, 4),
                exporter=case.exporter, output_names=case.outputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rewritten, report = run_passes(onnx.load(str(path)), list(case.passes), "plugin", options=dict(case.options),
                                       check_whole=False)
    replaced = sum(p["replaced"] for p in report["passes"])
    if not replaced:
        raise AssertionError(f"{case.name}: the {'+'.join(case.passes)} pass replaced nothing: {report['passes']}")
    return rewritten, plugin_nodes(rewritten, graph=case.name)


# --- Swin: WindowAttention ---------------------------------------------------------------------


def _swin(timm_name: str, **kw):
    def build():
        import timm

        return timm.create_model(timm_name, pretrained=False, **kw).eval()

    return build


def _swin_real(timm_name: str):
    """(window, shift, heads, height, width, channels, scales, cosine, mask value, pad_first) of every
    block of the full model (timm Swin V1: one scale head_dim**-0.5, no cosine, mask -100, roll first)."""

    def real():
        import timm
        import torch

        with torch.device("meta"):
            model = timm.create_model(timm_name, pretrained=False)
        out = set()
        for stage in model.layers:
            for blk in stage.blocks:
                (h, w) = blk.input_resolution
                out.add((tuple(blk.window_size), tuple(blk.shift_size), blk.attn.num_heads, h, w, blk.dim,
                         (round(float(blk.attn.scale), 6),), 0, -100.0, 0))
        return out

    return real


def _swin_tile(node: PluginNode) -> tuple:
    """WindowAttention's tiles depend on the window and head_dim only (kernel.LaunchConfig)."""
    a = node.attr_values()
    return tuple(a["window_size"]), node.inputs[0].dims[2] // 3 // a["num_heads"]


def _swin_variant(node: PluginNode) -> tuple:
    """Tiles plus the kernel's code paths: shift mask on/off, padded map or not (HAS_PAD)."""
    a = node.attr_values()
    (wh, ww), (sh, sw) = a["window_size"], a["shift_size"]
    padded = a["height"] % wh != 0 or a["width"] % ww != 0
    return (*_swin_tile(node), sh > 0 or sw > 0, padded, a["cosine"], a["pad_first"])


def _swin_sig(node: PluginNode) -> tuple:
    a = node.attr_values()
    channels = node.inputs[0].dims[2] // 3
    return (tuple(a["window_size"]), tuple(a["shift_size"]), a["num_heads"], a["height"], a["width"], channels,
            tuple(sorted({round(x, 6) for x in a["scale"]})), a["cosine"], round(a["mask_value"], 3), a["pad_first"])


def _swin_node(sig: tuple, rng) -> PluginNode:
    (wh, ww), shift, heads, h, w, c, scales, cosine, mask, pad_first = sig
    n = wh * ww
    attrs = dict(window_size=[wh, ww], shift_size=list(shift), num_heads=heads, height=h, width=w,
                 scale=[scales[0]] * heads, cosine=cosine, mask_value=mask, pad_first=pad_first)
    return synthetic_node("WindowAttention", attrs, [
        ("qkv", FLOAT, ("batch", h * w, 3 * c), None),
        ("bias", FLOAT, (heads, n, n), rng.standard_normal((heads, n, n)).astype(np.float32)),
        ("pad_qkv", FLOAT, (3 * c,), rng.standard_normal(3 * c).astype(np.float32)),
    ], graph="full-size")


# --- ConViT: GatedPositionalAttention ---------------------------------------------------------


def _convit(timm_name: str, **kw):
    def build():
        import timm

        return timm.create_model(timm_name, pretrained=False, **kw).eval()

    return build


def _convit_real(timm_name: str):
    """(heads, tokens, channels, scale) of every GPSA block of the full model."""

    def real():
        import timm
        import torch

        with torch.device("meta"):
            model = timm.create_model(timm_name, pretrained=False)
        n = model.patch_embed.num_patches
        return {(b.attn.num_heads, n, model.embed_dim, round(float(b.attn.scale), 6)) for b in model.blocks if b.use_gpsa}

    return real


def _convit_sig(node: PluginNode) -> tuple:
    a = node.attr_values()
    _, n, c2 = node.inputs[0].dims
    return (a["num_heads"], n, c2 // 2, round(a["scale"], 6))


def _convit_node(sig: tuple, rng) -> PluginNode:
    heads, n, c, scale = sig
    logits = rng.standard_normal((heads, n, n)).astype(np.float32)
    pos = np.exp(logits - logits.max(-1, keepdims=True))
    return synthetic_node("GatedPositionalAttention", dict(num_heads=heads, scale=scale), [
        ("qk", FLOAT, ("batch", n, 2 * c), None),
        ("v", FLOAT, ("batch", n, c), None),
        ("pos", FLOAT, (heads, n, n), (pos / pos.sum(-1, keepdims=True)).astype(np.float32)),
        ("gate", FLOAT, (heads,), rng.uniform(0, 1, heads).astype(np.float32)),
    ], graph="full-size")


# --- Deformable DETR: MultiscaleDeformableAttention -------------------------------------------


def _detr(**overrides):
    def build():
        from transformers import DeformableDetrForObjectDetection

        from vitdeploy.models import detr_config

        return DeformableDetrForObjectDetection(detr_config(small=False, **overrides)).eval()

    return build


def _detr_real():
    """(heads, head_dim, levels, points, queries) of the full config's encoder and decoder cores
    (queries: None for the encoder, whose queries are its S tokens)."""
    from transformers import DeformableDetrConfig

    c = DeformableDetrConfig()
    enc = (c.encoder_attention_heads, c.d_model // c.encoder_attention_heads, c.num_feature_levels, c.encoder_n_points, None)
    dec = (c.decoder_attention_heads, c.d_model // c.decoder_attention_heads, c.num_feature_levels, c.decoder_n_points,
           c.num_queries)
    return {enc, dec}


def _detr_sig(node: PluginNode) -> tuple:
    value, loc = node.inputs[0].dims, node.inputs[3].dims  # [N, S, M, D], [N, Lq, M, L, P, 2]
    lq = None if loc[1] == value[1] else loc[1]
    return (value[2], value[3], loc[3], loc[4], lq)


# --- HaloNet: HaloAttention ----------------------------------------------------------------------


def _halonet(alias: str):
    def build():
        from vitdeploy.models import build_model, get_info

        return build_model(get_info(alias))  # the registry's HaloNet (zero_init_last=False, random weights)

    return build


def _halo_real(timm_name: str, img: int = 256):
    """(block, halo, heads, dim_qk, dim_v, scale, scale_pos_embed, stride, H, W) of every HaloAttn of the
    full model, its kv map size read by a forward on the meta device (no weights, no compute)."""

    def real():
        import timm
        import torch
        from timm.layers.halo_attn import HaloAttn

        with torch.device("meta"):
            model = timm.create_model(timm_name, pretrained=False)
        seen = set()

        def hook(mod, inp, _out):
            _, _, h, w = inp[0].shape
            seen.add((mod.block_size, mod.halo_size, mod.num_heads, mod.dim_head_qk, mod.dim_head_v,
                      round(float(mod.scale), 6), int(mod.scale_pos_embed), mod.block_stride, h, w))

        for mod in model.modules():
            if isinstance(mod, HaloAttn):
                mod.register_forward_hook(hook)
        with torch.no_grad():
            model(torch.empty(1, 3, img, img, device="meta"))
        return seen

    return real


def _halo_sig(node: PluginNode) -> tuple:
    a = node.attr_values()
    _, _, h, w = node.inputs[1].dims  # kv [B, C, H, W]
    return (a["block_size"], a["halo_size"], a["num_heads"], a["dim_head_qk"], a["dim_head_v"], round(a["scale"], 6),
            a["scale_pos_embed"], a["block_stride"], h, w)


def _halo_node(sig: tuple, rng) -> PluginNode:
    block, halo, heads, dqk, dv, scale, spe, stride, h, w = sig
    win = block + 2 * halo
    return synthetic_node("HaloAttention", dict(block_size=block, halo_size=halo, num_heads=heads, dim_head_qk=dqk,
                                                dim_head_v=dv, scale=scale, scale_pos_embed=spe, block_stride=stride), [
        ("q", FLOAT, ("batch", heads * dqk, h // stride, w // stride), None),
        ("kv", FLOAT, ("batch", heads * (dqk + dv), h, w), None),
        ("height_rel", FLOAT, (2 * win - 1, dqk), (rng.standard_normal((2 * win - 1, dqk)) * dqk ** -0.5).astype(np.float32)),
        ("width_rel", FLOAT, (2 * win - 1, dqk), (rng.standard_normal((2 * win - 1, dqk)) * dqk ** -0.5).astype(np.float32)),
    ], graph="full-size")


def detr_levels(height: int = 800, width: int = 1333) -> list[tuple[int, int]]:
    """(H, W) of the four feature levels Deformable DETR's ResNet-50 + extra conv give an image
    (stem conv s2 p3, max-pool s2 p1, stages 2-4 s2, then one 3x3 s2 p1 conv): 800x1333 -> 100x167 ..."""
    def down(x, k=3, s=2, p=1):
        return (x + 2 * p - k) // s + 1

    h, w = down(down(height, 7, 2, 3)), down(down(width, 7, 2, 3))  # stem + max-pool: stride 4
    levels = []
    for _ in range(3):
        h, w = down(h), down(w)
        levels.append((h, w))
    levels.append((down(h), down(w)))
    return levels


def _detr_node(sig: tuple, rng, size=(800, 1333)) -> PluginNode:
    heads, d, nl, p, queries = sig
    levels = detr_levels(*size)[:nl]
    s = sum(h * w for h, w in levels)
    lq = s if queries is None else queries
    starts = np.concatenate([[0], np.cumsum([h * w for h, w in levels])[:-1]]).astype(np.int32)
    return synthetic_node("MultiscaleDeformableAttention", {}, [
        ("value", FLOAT, ("batch", s, heads, d), None),
        ("spatial_shapes", INT32, (nl, 2), np.array(levels, dtype=np.int32)),
        ("level_start_index", INT32, (nl,), starts),
        ("sampling_locations", FLOAT, ("batch", lq, heads, nl, p, 2), None),
        ("attention_weights", FLOAT, ("batch", lq, heads, nl, p), None),
    ], graph="full-size")


GRAPHS: dict[str, GraphCase] = {c.name: c for c in (
    GraphCase("swin_t", _swin("swin_tiny_patch4_window7_224", depths=(2, 2, 2, 1)), 224, ("swin",),
              _swin_real("swin_tiny_patch4_window7_224"), _swin_sig,
              sample={"fp16": _swin_variant, "fp32": _swin_tile},
              note="depths (2,2,2,1) of (2,2,6,2): stage 3 repeats its shifted/unshifted pair, stage 4 (7x7) is never shifted",
              synthesize=_swin_node),
    GraphCase("swin_b_384", _swin("swin_base_patch4_window12_384", depths=(2, 2, 2, 1)), 384, ("swin",),
              _swin_real("swin_base_patch4_window12_384"), _swin_sig,
              sample={"fp16": _swin_variant, "fp32": _swin_tile},
              note="window 12; depths (2,2,2,1) of (2,2,18,2)", synthesize=_swin_node),
    GraphCase("convit_t", _convit("convit_tiny", depth=1, local_up_to_layer=1), 224, ("gpsa",),
              _convit_real("convit_tiny"), _convit_sig, note="1 of 10 identical GPSA blocks",
              synthesize=_convit_node),
    GraphCase("convit_b", _convit("convit_base", depth=1, local_up_to_layer=1), 224, ("gpsa",),
              _convit_real("convit_base"), _convit_sig, note="1 of 10 identical GPSA blocks",
              synthesize=_convit_node),
    GraphCase("deformable_detr", _detr(backbone="resnet18", encoder_layers=1, decoder_layers=2), 64, ("msda",),
              _detr_real, _detr_sig, options={"msda_impl": "vitdeploy"}, outputs=("logits", "pred_boxes"),
              exporter="dynamo",
              note="the default transformer (d_model 256, 8 heads, 4 levels x 4 points, 300 queries) with 1 of 6 "
                   "encoder and 2 of 6 decoder layers (transformers ties the box heads of decoder layers 1.. to 0), a ResNet-18 backbone and a 64x64 image (S = 85 tokens; S is a runtime scalar)",
              synthesize=_detr_node),
    GraphCase("halonet26t", _halonet("halonet26t"), 256, ("halo",), _halo_real("halonet26t"), _halo_sig,
              exporter="dynamo", note="the full model at 256x256: 3 HaloAttn layers, all distinct (the dynamo "
                                      "exporter: TorchScript cannot export unfold)", synthesize=_halo_node),
)}
