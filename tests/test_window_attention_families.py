"""WindowAttention / WindowAttentionRelPos beyond Swin: the reference against the timm modules it replaces
(SAM's windowed blocks with decomposed relative position, TinyViT, MaxViT block and grid attention, Twins'
locally-grouped attention, Hiera's mask-unit attention with query pooling), the ORT faces of the new
attributes, and the Triton kernel for each variant under the CPU interpreter (one child process)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from vitdeploy.plugins.window_attention.reference import window_attention
from vitdeploy.plugins.window_attention.spec import SPEC
from vitdeploy.plugins.window_attention_relpos.reference import window_attention_relpos
from vitdeploy.plugins.window_attention_relpos.spec import SPEC as RELPOS_SPEC

REPO = Path(__file__).resolve().parents[1]


def _randomise(module, seed: int, std: float = 0.5):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, std)
    return module.eval()


def type_first_columns(heads: int, dims: tuple[int, int, int]) -> torch.Tensor:
    """Column order turning a head-first qkv ([heads, (q | k | v)]) into the plugin's type-first one."""
    dq, dk, dv = dims
    per = dq + dk + dv
    cols = [h * per + o + d for o, n in ((0, dq), (dq, dk), (dq + dk, dv)) for h in range(heads) for d in range(n)]
    return torch.tensor(cols)


# --- the reference against the timm modules ----------------------------------------------------------------


@pytest.mark.parametrize("res,window", [((8, 12), 3), ((7, 5), 4), ((6, 6), 3)], ids=["padded-h", "padded-both", "exact"])
def test_reference_matches_sam_windowed_block(res, window):
    """timm's SAM block: zero-pad after norm1, window partition, q·kᵀ + q·R_h + q·R_w (decomposed, from the
    unscaled q), unpartition and crop; the pad tokens carry the qkv Linear's bias."""
    from timm.models.vision_transformer_sam import Block, window_partition, window_unpartition

    blk = _randomise(Block(32, 2, window_size=window, use_rel_pos=True, input_size=res), seed=sum(res) + window)
    attn = blk.attn
    x = torch.randn(2, *res, 32)
    with torch.no_grad():
        xn = blk.norm1(x)
        wins, pad_hw = window_partition(xn, window)
        want = window_unpartition(attn(wins), window, res, pad_hw)
        hd = attn.head_dim
        tables = [t[None].expand(attn.num_heads, -1, -1) for t in (attn.rel_pos_h, attn.rel_pos_w)]
        qkv = attn.qkv(xn).reshape(2, res[0] * res[1], 96)
        core = window_attention_relpos(qkv, *tables, attn.qkv.bias, window_size=window, shift_size=0, num_heads=2,
                                       height=res[0], width=res[1], scale=hd ** -0.5)
        got = attn.proj(core).view(2, *res, 32)
        no_pos = window_attention(qkv, torch.zeros(2, window ** 2, window ** 2), attn.qkv.bias, window_size=window,
                                  shift_size=0, num_heads=2, height=res[0], width=res[1], scale=hd ** -0.5)
    assert (got - want).abs().max().item() < 1e-4 * max(1.0, want.abs().max().item())
    assert (attn.proj(no_pos).view(2, *res, 32) - want).abs().max().item() > 1e-2  # the tables matter


@pytest.mark.parametrize("q_stride", [1, 4])
def test_reference_matches_hiera_mask_unit_attention(q_stride):
    """Hiera's tokens are already grouped: unit w holds tokens t*nW + w, i.e. column w of a (T, nW) map; with
    q_stride the queries are amax-pooled over q_stride chunks of the unit's tokens."""
    from timm.models.hiera import MaskUnitAttention

    units, per_unit = 6, 16  # tokens per mask unit *after* pooling, as timm's window_size
    attn = _randomise(MaskUnitAttention(16, 32, 2, q_stride=q_stride, window_size=per_unit, use_mask_unit_attn=True),
                      seed=q_stride, std=0.3)
    n = units * per_unit * q_stride
    x = torch.randn(2, n, 16)
    with torch.no_grad():
        want = attn(x)
        t = n // units
        core = window_attention(attn.qkv(x), torch.zeros(2, t // q_stride, t), None, window_size=(t, 1), shift_size=0,
                                num_heads=2, height=t, width=units, scale=attn.scale, q_stride=q_stride)
        got = attn.proj(core)
    assert got.shape == want.shape == (2, n // q_stride, 32)
    assert (got - want).abs().max().item() < 1e-4 * max(1.0, want.abs().max().item())


@pytest.mark.parametrize("res", [(6, 10), (9, 9)], ids=["padded", "exact"])
def test_reference_matches_tinyvit_block_attention(res):
    """TinyViT: zero-pad, partition, then LayerNorm *inside* the attention (pad tokens become LN(0) = its bias),
    head-first q/k/v split, per-head learned biases indexed by offsets."""
    from timm.models.tiny_vit import TinyVitBlock

    blk = _randomise(TinyVitBlock(32, 2, window_size=3), seed=res[0])
    blk.attn.attention_bias_cache = {}
    attn = blk.attn
    x = torch.randn(2, *res, 32)
    with torch.no_grad():
        # TinyVitBlock.forward's attention half, without the residual / local conv / MLP
        H, W = res
        pad_b, pad_r = (3 - H % 3) % 3, (3 - W % 3) % 3
        xp = torch.nn.functional.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        ph, pw = H + pad_b, W + pad_r
        wins = xp.view(2, ph // 3, 3, pw // 3, 3, 32).transpose(2, 3).reshape(-1, 9, 32)
        out = attn(wins).view(2, ph // 3, pw // 3, 3, 3, 32).transpose(2, 3).reshape(2, ph, pw, 32)
        want = out[:, :H, :W]
        cols = type_first_columns(2, (attn.key_dim, attn.key_dim, attn.val_dim))
        qkv = attn.qkv(attn.norm(x)).reshape(2, H * W, -1)[..., cols]
        pad = attn.qkv(attn.norm.bias)[cols]
        core = window_attention(qkv, attn.get_attention_biases(x.device), pad, window_size=3, shift_size=0, num_heads=2,
                                height=H, width=W, scale=attn.scale)
        got = attn.proj(core).view(2, H, W, 32)
    assert (got - want).abs().max().item() < 1e-4 * max(1.0, want.abs().max().item())


@pytest.mark.parametrize("partition", ["block", "grid"])
@pytest.mark.parametrize("res,size", [((8, 12), (2, 3)), ((8, 8), (4, 4))], ids=["non-square", "square"])
def test_reference_matches_maxvit_partition_attention(partition, res, size):
    """MaxViT's block (window) and grid (dilated) attention, head-first q/k/v, relative-position bias."""
    from timm.models.maxxvit import MaxxVitTransformerCfg, PartitionAttentionCl

    cfg = MaxxVitTransformerCfg(dim_head=8, window_size=size, grid_size=size)
    blk = _randomise(PartitionAttentionCl(32, partition, cfg), seed=len(partition) + res[1], std=0.3)
    attn = blk.attn
    x = torch.randn(2, *res, 32)
    with torch.no_grad():
        xn = blk.norm1(x)
        want = blk._partition_attn(xn)
        cols = type_first_columns(attn.num_heads, (8, 8, 8))
        qkv = attn.qkv(xn).reshape(2, res[0] * res[1], -1)[..., cols]
        core = window_attention(qkv, attn.rel_pos.get_bias()[0], None, window_size=size, shift_size=0,
                                num_heads=attn.num_heads, height=res[0], width=res[1], scale=attn.scale,
                                partition=int(partition == "grid"))
        got = attn.proj(core).view(2, *res, 32)
        other = attn.proj(window_attention(qkv, attn.rel_pos.get_bias()[0], None, window_size=size, shift_size=0,
                                           num_heads=attn.num_heads, height=res[0], width=res[1], scale=attn.scale,
                                           partition=int(partition != "grid"))).view(2, *res, 32)
    assert (got - want).abs().max().item() < 1e-4 * max(1.0, want.abs().max().item())
    assert (other - want).abs().max().item() > 1e-2  # window and grid really differ


@pytest.mark.parametrize("res", [(7, 10), (6, 6)], ids=["padded", "exact"])
def test_reference_matches_twins_locally_grouped_attention(res):
    from timm.models.twins import LocallyGroupedAttn

    attn = _randomise(LocallyGroupedAttn(32, 2, ws=3), seed=res[1], std=0.3)
    x = torch.randn(2, res[0] * res[1], 32)
    with torch.no_grad():
        want = attn(x, res)
        core = window_attention(attn.qkv(x), torch.zeros(2, 9, 9), attn.qkv.bias, window_size=3, shift_size=0, num_heads=2,
                                height=res[0], width=res[1], scale=attn.scale)
        got = attn.proj(core)
    assert (got - want).abs().max().item() < 1e-4 * max(1.0, want.abs().max().item())


def test_reference_refuses_what_no_face_defines():
    qkv = torch.zeros(1, 48, 96)
    base = dict(shift_size=0, num_heads=2, height=6, width=8, scale=0.25)
    with pytest.raises(ValueError, match="grid partition needs the map"):
        window_attention(qkv, torch.zeros(2, 16, 16), window_size=4, partition=1, **base)
    with pytest.raises(ValueError, match="q_stride 2 needs"):
        window_attention(qkv, torch.zeros(2, 4, 16), window_size=(4, 4), q_stride=2, **base)
    with pytest.raises(ValueError, match="either a bias or"):
        window_attention(qkv, None, window_size=(3, 4), **base)
    assert RELPOS_SPEC.read_attrs(dict(window_size=3, shift_size=0, num_heads=1, height=3, width=3, scale=1.0))[
        "partition"] == 0 and SPEC.defaults["q_stride"] == 1


# --- ONNX Runtime faces ------------------------------------------------------------------------------------


def _one_node(spec, inputs: dict, out_shape, attrs, onnx_dtype):
    import onnx
    from onnx import helper

    node = helper.make_node(spec.name, list(inputs), ["out"], domain=spec.domain, **spec.node_attrs(**attrs))
    graph = helper.make_graph([node], "one", [helper.make_tensor_value_info(k, onnx_dtype, list(v.shape)) for k, v in inputs.items()],
                              [helper.make_tensor_value_info("out", onnx_dtype, list(out_shape))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(spec.domain, 1)])
    onnx.checker.check_model(model)
    return model


ORT_CASES = {  # name -> (spec, H, W, attrs beyond heads/height/width/scale)
    "grid": ("wa", 8, 12, dict(window_size=(2, 3), shift_size=0, partition=1)),
    "hiera-q-pool": ("wa", 16, 6, dict(window_size=(16, 1), shift_size=0, q_stride=4)),
    "sam-relpos-padded": ("rel", 7, 10, dict(window_size=(3, 4), shift_size=0)),
}


@pytest.mark.parametrize("case", list(ORT_CASES))
@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
def test_ort_faces_match_the_reference(case, fp16):
    from onnx import TensorProto

    from vitdeploy.onnxrt import session

    kind, H, W, extra = ORT_CASES[case]
    B, C, heads = 2, 32, 2
    attrs = dict(num_heads=heads, height=H, width=W, scale=[0.3, 0.2], **extra)
    (wh, ww), qs = extra["window_size"], extra.get("q_stride", 1)
    rng = np.random.default_rng(len(case))
    dt = np.float16 if fp16 else np.float32
    feeds = {"qkv": rng.standard_normal((B, H * W, 3 * C))}
    if kind == "rel":
        feeds.update(rel_h=rng.standard_normal((heads, 2 * wh - 1, C // heads)) * 0.3,
                     rel_w=rng.standard_normal((heads, 2 * ww - 1, C // heads)) * 0.3)
    else:
        feeds["bias"] = rng.standard_normal((heads, wh * ww // qs, wh * ww))
    feeds["pad_qkv"] = rng.standard_normal(3 * C)
    feeds = {k: v.astype(dt) for k, v in feeds.items()}
    spec = RELPOS_SPEC if kind == "rel" else SPEC
    out_shape = (B, H * W // qs, C)
    (got,) = session(_one_node(spec, feeds, out_shape, attrs, TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT)).run(None, feeds)
    t = {k: torch.from_numpy(v.astype(np.float32)) for k, v in feeds.items()}
    want = (window_attention_relpos(t["qkv"], t["rel_h"], t["rel_w"], t["pad_qkv"], **attrs) if kind == "rel" else
            window_attention(t["qkv"], t["bias"], t["pad_qkv"], **attrs)).numpy()
    assert got.shape == out_shape and got.dtype == dt
    assert np.abs(got.astype(np.float32) - want).max() < (3e-3 if fp16 else 1e-5) * max(1.0, np.abs(want).max())


# --- the Triton kernel under the CPU interpreter (one child process for every case) ------------------------

KERNEL_CASES = [
    # (name, dtype, H, W, window, q_stride, partition, rel_pos, heads, channels, heads_per_program)
    ("maxvit-grid", "float32", 8, 12, (2, 3), 1, 1, 0, 2, 32, 1),
    ("maxvit-grid-fp16", "float16", 8, 12, (4, 3), 1, 1, 0, 2, 32, 2),
    ("hiera-q-pool", "float32", 64, 6, (64, 1), 4, 0, 0, 2, 32, 1),
    ("hiera-q-pool-fp16", "float16", 16, 6, (16, 1), 4, 0, 0, 1, 16, 1),
    ("hiera-unit", "float16", 16, 6, (16, 1), 1, 0, 0, 2, 32, 1),
    ("sam-relpos-padded", "float32", 8, 12, (3, 3), 1, 0, 1, 2, 32, 1),
    ("sam-relpos-fp16", "float16", 7, 9, (3, 4), 1, 0, 1, 2, 32, 2),
    ("sam-relpos-two-blocks", "float32", 10, 10, (9, 9), 1, 0, 1, 1, 16, 1),  # N = 81: two query and key blocks
]

_CHILD = textwrap.dedent(
    """
    import json, sys, torch
    from vitdeploy.plugins.window_attention.kernel import window_attention_triton, interpreter_active
    from vitdeploy.plugins.window_attention.reference import window_attention, window_attention_relpos
    assert interpreter_active()
    results = []
    for name, dt, H, W, win, qs, part, rel, heads, C, hpp in json.loads(sys.argv[1]):
        g = torch.Generator().manual_seed(H * 100 + W + qs)
        dtype = getattr(torch, dt)
        wh, ww = win
        n, hd = wh * ww, C // heads
        qkv = torch.randn(2, H * W, 3 * C, generator=g).to(dtype)
        pad = torch.randn(3 * C, generator=g).to(dtype)
        attrs = dict(window_size=win, shift_size=0, num_heads=heads, height=H, width=W, scale=hd ** -0.5,
                     partition=part, q_stride=qs)
        if rel:
            rh = (torch.randn(heads, 2 * wh - 1, hd, generator=g) * 0.3).to(dtype)
            rw = (torch.randn(heads, 2 * ww - 1, hd, generator=g) * 0.3).to(dtype)
            out = window_attention_triton(qkv, None, pad, rel_h=rh, rel_w=rw, heads_per_program=hpp, **attrs)
            want = window_attention_relpos(qkv.float(), rh.float(), rw.float(), pad.float(), **attrs)
            zero = torch.zeros(heads, n, n)
            without = window_attention(qkv.float(), zero, pad.float(), **attrs)
        else:
            bias = torch.randn(heads, n // qs, n, generator=g).to(dtype)
            out = window_attention_triton(qkv, bias, pad, heads_per_program=hpp, **attrs)
            want = window_attention(qkv.float(), bias.float(), pad.float(), **attrs)
            whole = dict(attrs, window_size=(H, W), partition=0)  # one window over the whole map instead
            without = want if qs > 1 else window_attention(qkv.float(), torch.zeros(heads, H * W, H * W), pad.float(),
                                                           **whole)
        results.append(dict(err=(out.float() - want).abs().max().item(), scale=want.abs().max().item(),
                            shape=list(out.shape), dtype=str(out.dtype), effect=(want - without).abs().max().item()))
    print(json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def kernel_results():
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(KERNEL_CASES)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", range(len(KERNEL_CASES)), ids=[c[0] for c in KERNEL_CASES])
def test_triton_kernel_matches_reference_on_interpreter(kernel_results, case):
    name, dt, H, W, win, qs, part, rel, heads, C, _ = KERNEL_CASES[case]
    r = kernel_results[case]
    assert r["shape"] == [2, H * W // qs, C] and r["dtype"] == f"torch.{dt}"
    tol = 1e-5 if dt == "float32" else 4e-3
    assert r["err"] < tol * max(1.0, r["scale"])
    if qs == 1:  # the case exercises what it names: the tables, or its windows rather than one over the map
        assert r["effect"] > 10 * tol


# --- ahead-of-time PTX: each node type's entry takes exactly its node's inputs ------------------------------


def test_sam_vit_h_fp32_tiles_fit_48k_of_shared_memory():
    """SAM ViT-H's heads are 80 wide (128-wide tiles): queries go in 32-row blocks, so its FP32 relpos kernel
    at 14x14 windows stays within the 48 KiB a launch gets without an opt-in (64 rows needed 57,344 B)."""
    from vitdeploy.plugins import ptx as base
    from vitdeploy.plugins.window_attention import kernel, trt as wa_trt

    if kernel.interpreter_active():
        pytest.skip("AOT compilation needs TRITON_INTERPRET unset")
    cfg, arch, dtype = kernel.make_config(window_size=14, shift_size=0, num_heads=16, height=64, width=64,
                                          scale=80 ** -0.5, channels=1280, rel_pos=True), 87, "fp32"
    assert cfg.block_m == 32 and cfg.block_d == 128
    name, ptx, meta = kernel.compile_ptx(arch, dtype, cfg)
    entry = base.entry_params(base.strip_unused_scratch_params(ptx, name, keep=kernel.num_kernel_args(cfg)), name)
    assert entry == [".u64"] * (4 if cfg.rel_pos else 3) + [".u32", ".u64"]
    assert 0 < meta.shared <= wa_trt.MAX_STATIC_SHARED


# --- on a CUDA GPU (skipped elsewhere): full-size shapes of each variant ------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", [(torch.float16, 1e-2), (torch.float32, 1e-4)])
@pytest.mark.parametrize("H,W,C,heads,window,partition,q_stride,rel", [
    (64, 64, 768, 12, (14, 14), 0, 1, True),  # SAM ViT-B windowed blocks at 1024 (padded to 70x70)
    (64, 64, 1280, 16, (14, 14), 0, 1, True),  # SAM ViT-H: head_dim 80
    (128, 128, 128, 4, (7, 7), 0, 1, False),  # MobileSAM / TinyViT-5M stage 2 at 1024 (padded)
    (56, 56, 64, 2, (7, 7), 1, 1, False),  # MaxViT-T stage 1 grid attention
    (64, 49, 192, 2, (64, 1), 0, 4, False),  # Hiera-T stage-2 transition block: queries pooled by 4
])
def test_triton_kernel_on_gpu_matches_reference(dtype, tol, H, W, C, heads, window, partition, q_stride, rel):
    from vitdeploy.plugins.window_attention.kernel import window_attention_triton

    g = torch.Generator().manual_seed(H + W + C)
    hd, n = C // heads, window[0] * window[1]
    qkv = torch.randn(2, H * W, 3 * C, generator=g).to(dtype)
    pad = torch.randn(3 * C, generator=g).to(dtype)
    attrs = dict(window_size=window, shift_size=0, num_heads=heads, height=H, width=W, scale=hd ** -0.5,
                 partition=partition, q_stride=q_stride)
    if rel:
        rh, rw = ((0.3 * torch.randn(heads, 2 * w - 1, hd, generator=g)).to(dtype) for w in window)
        out = window_attention_triton(qkv.cuda(), None, pad.cuda(), rel_h=rh.cuda(), rel_w=rw.cuda(), **attrs)
        want = window_attention_relpos(qkv.float(), rh.float(), rw.float(), pad.float(), **attrs)
    else:
        bias = torch.randn(heads, n // q_stride, n, generator=g).to(dtype)
        out = window_attention_triton(qkv.cuda(), bias.cuda(), pad.cuda(), **attrs)
        want = window_attention(qkv.float(), bias.float(), pad.float(), **attrs)
    assert (out.float().cpu() - want).abs().max().item() < tol * max(1.0, want.abs().max().item())


@pytest.mark.trt
def test_tensorrt_plugins_match_reference():
    """Engines (TensorRT + GPU only): a grid node, a pooled-query node and a WindowAttentionRelPos node."""
    pytest.importorskip("tensorrt", reason="TensorRT is not installed")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT needs a CUDA GPU")
    from vitdeploy.plugins.window_attention import trt as wa_trt
    from vitdeploy.plugins.window_attention_relpos import trt as rel_trt

    g = torch.Generator().manual_seed(0)
    C, heads = 64, 2
    for kind, H, W, extra in ORT_CASES.values():  # grid, pooled queries, SAM's decomposed position
        attrs = dict(num_heads=heads, height=H, width=W, scale=[0.3, 0.2], **extra)
        (wh, ww), qs = extra["window_size"], extra.get("q_stride", 1)
        qkv, pad = torch.randn(2, H * W, 3 * C, generator=g), torch.randn(3 * C, generator=g)
        if kind == "rel":
            rh, rw = (0.3 * torch.randn(heads, 2 * w - 1, C // heads, generator=g) for w in (wh, ww))
            out, want = rel_trt.run_one_node(qkv, rh, rw, pad, **attrs), window_attention_relpos(qkv, rh, rw, pad, **attrs)
        else:
            bias = torch.randn(heads, wh * ww // qs, wh * ww, generator=g)
            out, want = wa_trt.run_one_node(qkv, bias, pad, **attrs), window_attention(qkv, bias, pad, **attrs)
        assert (out.cpu() - want).abs().max().item() < 1e-4 * max(1.0, want.abs().max().item()), extra


# --- TensorRT's plugin layer (contract): the new node kinds as the parser and builder drive them ------------


def _synthetic(kind: str):
    from vitdeploy.testing import contract

    F = 1  # onnx.TensorProto.FLOAT
    z = lambda *s: np.zeros(s, np.float32)  # noqa: E731
    base = dict(shift_size=0, num_heads=2, scale=[0.25, 0.25])
    if kind == "relpos":  # SAM: 3x4 windows on a padded 7x10 map
        return contract.synthetic_node("WindowAttentionRelPos", dict(base, window_size=(3, 4), height=7, width=10), [
            ("qkv", F, ("batch", 70, 96), None), ("rel_h", F, (2, 5, 16), z(2, 5, 16)),
            ("rel_w", F, (2, 7, 16), z(2, 7, 16)), ("pad_qkv", F, (96,), z(96))])
    extra = dict(window_size=(16, 1), height=16, width=6, q_stride=4) if kind == "q-pool" else \
        dict(window_size=(2, 3), height=8, width=12, partition=1)
    n, nq = extra["window_size"][0] * extra["window_size"][1], extra["window_size"][0] * extra["window_size"][1] // \
        extra.get("q_stride", 1)
    return contract.synthetic_node("WindowAttention", dict(base, **extra), [
        ("qkv", F, ("batch", extra["height"] * extra["width"], 96), None), ("bias", F, (2, nq, n), z(2, nq, n)),
        ("pad_qkv", F, (96,), z(96))])


@pytest.mark.contract
@pytest.mark.parametrize("kind", ["relpos", "q-pool", "grid"],
                         ids=["window_attention_relpos", "window_attention-q-pool", "window_attention-grid"])
def test_tensorrt_plugin_layer_contract(kind):
    """Each new kind of node through TensorRT's real `tensorrt.plugin` (over the stand-in core): fields as the
    parser loads them, output shape = the ONNX Runtime face's at batch 3 (Hiera's pooled tokens), the PTX
    entry = exactly the node's inputs, the batch and the output (one tactic, FP16)."""
    from vitdeploy.plugins import ptx_target
    from vitdeploy.testing import contract
    from vitdeploy.plugins.window_attention import kernel

    if kernel.interpreter_active():
        pytest.skip("AOT compilation needs TRITON_INTERPRET unset")
    node = _synthetic(kind)
    target = ptx_target.PtxTarget(90, ptx_target.pinned_isa(90))
    with contract.plugin_layer() as layer:
        with ptx_target.compile_for(target):
            r = contract.drive(layer, node, "fp16", only=1)
        assert not contract.problems(r, layer, max_isa=target.isa)
    assert r.output_dims(3) == contract.reference_output_shapes(node, 3)
    assert [f[0] for f in r.fields] == list(SPEC.attrs) and r.tactics == [1, 2]
    inputs = 4 if kind == "relpos" else 3
    assert base_entry(r.launches[0]) == [".u64"] * inputs + [".u32", ".u64"]


def base_entry(launch) -> list[str]:
    from vitdeploy.plugins import ptx as base

    return base.entry_params(launch.ptx, launch.kernel_name)


@pytest.mark.contract
def test_aot_launch_of_the_new_node_kinds_computes_the_reference():
    """The launch level: the kernels `aot_impl` returned for the synthetic SAM relpos, pooled-query and grid
    nodes, run on Triton's interpreter with exactly the grid, scalars and argument order TensorRT would use
    (`vitdeploy.testing.aot_emulator`), FP16 and FP32, every tactic, equal the PyTorch reference."""
    from vitdeploy.plugins import ptx_target
    from vitdeploy.plugins.window_attention import kernel
    from vitdeploy.testing import aot_emulator, contract

    if kernel.interpreter_active():
        pytest.skip("AOT compilation needs TRITON_INTERPRET unset")
    nodes = [_synthetic(k) for k in ("relpos", "q-pool", "grid")]
    with contract.plugin_layer() as layer:
        outcomes = aot_emulator.emulate(layer, nodes, target=ptx_target.PtxTarget(90, ptx_target.pinned_isa(90)))
    bad = [o.message() for o in outcomes if not o.ok]
    assert not bad, "\n".join(bad)
    assert {(o.job.node.op, o.job.precision, o.job.tactic) for o in outcomes} == {
        (op, p, t) for op in ("WindowAttentionRelPos", "WindowAttention") for p in ("fp16", "fp32") for t in (1, 2)}
    assert len(outcomes) == 3 * 2 * 2
