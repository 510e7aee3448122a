"""WindowAttention: reference vs timm's Swin V1/V2 blocks, the spec's list attributes, the ORT face,
the Triton kernel (CPU interpreter, square/non-square windows, V1/V2), AOT PTX, TensorRT."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from timm.models.swin_transformer import SwinTransformerBlock
from timm.models.swin_transformer_v2 import SwinTransformerV2Block

from vitdeploy.plugins.window_attention.reference import (
    inputs_from_timm_block,
    region_ids,
    shift_mask,
    window_attention,
)
from vitdeploy.plugins.ptx import entry_params, ptxas_path, strip_unused_scratch_params
from vitdeploy.plugins.window_attention.spec import SPEC

REPO = Path(__file__).resolve().parents[1]


def _block(dim: int, heads: int, res, window, shift, seed: int, v2: bool = False, **kw):
    """timm V1 (or V2) block with random weights large enough that bias, mask and padding all move
    the output; `res`, `window`, `shift`: int or (h, w). V2 logit scales spread up to the clamp."""
    torch.manual_seed(seed)
    res = (res, res) if isinstance(res, int) else tuple(res)
    cls = SwinTransformerV2Block if v2 else SwinTransformerBlock
    blk = cls(dim, res, num_heads=heads, window_size=window, shift_size=shift, **kw).eval()
    with torch.no_grad():
        for name, p in blk.named_parameters():
            if name.endswith("logit_scale"):
                p.copy_(torch.linspace(1.0, 5.0, heads).view(-1, 1, 1))  # exp: 2.7 .. 100 (5 > log 100 is clamped)
            else:
                p.normal_(0, 0.5)
    return blk


def _qkv(blk, xn):
    attn = blk.attn
    if getattr(attn, "q_bias", None) is not None:  # V2: F.linear with cat(q_bias, 0, v_bias)
        return torch.nn.functional.linear(xn, attn.qkv.weight, torch.cat((attn.q_bias, attn.k_bias, attn.v_bias)))
    return attn.qkv(xn)


def _reference_through_block(blk, x, pad_override="timm"):
    with torch.no_grad():
        xn = blk.norm1(x) if isinstance(blk, SwinTransformerBlock) else x  # V2 is post-norm
        attrs, bias, pad = inputs_from_timm_block(blk)
        if pad_override is None:
            pad = None
        B, H, W, C = x.shape
        core = window_attention(_qkv(blk, xn).reshape(B, H * W, 3 * C), bias, pad, **attrs)
        return blk._attn(xn), blk.attn.proj(core).view(B, H, W, C), attrs


@pytest.mark.parametrize(
    "res,window,shift",
    [(14, 7, 0), (14, 7, 3), (12, 7, 0), (12, 7, 3), (24, 12, 6), (7, 7, 3), (5, 7, 3)],
    ids=["14-unshifted", "14-shifted", "12-padded", "12-padded-shifted", "24-w12-shifted", "7-clamped", "5-clamped"],
)
def test_reference_matches_timm_block(res, window, shift):
    blk = _block(32, 2, res, window, shift, seed=res * 10 + shift)
    x = torch.randn(3, res, res, 32)
    want, got, attrs = _reference_through_block(blk, x)
    assert (got - want).abs().max().item() < 1e-5
    # the effective window/shift are timm's clamped ones (map no larger than the window: no shift)
    if res <= window:
        assert attrs["window_size"] == (res, res) and attrs["shift_size"] == (0, 0)


# (map, window, shift) -> timm's effective per-dimension window and shift
NON_SQUARE = [
    ((8, 12), 7, 3, (7, 7), (3, 3)),  # both padded, square window
    ((6, 10), 7, 3, (6, 7), (0, 3)),  # Swin-T at 192x320, stage 4: clamped in h only
    ((4, 5), 7, 3, (4, 5), (0, 0)),  # 800x1333-style last stage: whole map, no shift
    ((9, 14), (4, 6), (2, 3), (4, 6), (2, 3)),  # non-square window given, padded in h
    ((8, 12), 8, 4, (8, 8), (0, 4)),  # SwinV2-T at 256x384, stage 4: mixed shift
]


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
@pytest.mark.parametrize("res,window,shift,eff_window,eff_shift", NON_SQUARE, ids=[f"{c[0][0]}x{c[0][1]}" for c in NON_SQUARE])
def test_reference_matches_timm_non_square_blocks(res, window, shift, eff_window, eff_shift, v2):
    blk = _block(32, 4, res, window, shift, seed=res[0] * 10 + res[1], v2=v2)
    x = torch.randn(2, *res, 32)
    want, got, attrs = _reference_through_block(blk, x)
    assert (attrs["window_size"], attrs["shift_size"], attrs["cosine"]) == (eff_window, eff_shift, int(v2))
    assert (got - want).abs().max().item() < 2e-5 * max(1.0, want.abs().max().item())
    if v2:  # per-head logit scales, clamped at 100 as timm clamps them
        assert attrs["scale"][0] == pytest.approx(np.e) and attrs["scale"][-1] == pytest.approx(100.0)


@pytest.mark.parametrize("res,window,shift", [(8, 8, 0), (8, 4, 2), (12, 8, 4), (7, 8, 0)],
                         ids=["unshifted", "shifted", "padded-shifted", "clamped"])
def test_reference_matches_timm_v2_square_blocks(res, window, shift):
    """Swin V2: cosine attention, per-head logit scale, continuous position bias, q/v biases only."""
    blk = _block(32, 2, res, window, shift, seed=res + shift, v2=True)
    want, got, attrs = _reference_through_block(blk, torch.randn(2, res, res, 32))
    assert attrs["cosine"] == 1 and (got - want).abs().max().item() < 2e-5 * max(1.0, want.abs().max().item())
    # V2's k bias is a zero buffer: the padding token's k part is zero
    C = 32
    _, _, pad = inputs_from_timm_block(blk)
    assert torch.all(pad[C:2 * C] == 0) and torch.any(pad[:C] != 0)


@pytest.mark.parametrize("dynamic_mask", [False, True])
def test_reference_matches_timm_always_partition(dynamic_mask):
    """always_partition keeps window 7 / shift 3 on a 5x5 map: roll, then pad to one 7x7 window."""
    blk = _block(32, 2, 5, 7, 3, seed=3, always_partition=True, dynamic_mask=dynamic_mask)
    want, got, attrs = _reference_through_block(blk, torch.randn(2, 5, 5, 32))
    assert (attrs["window_size"], attrs["shift_size"]) == ((7, 7), (3, 3))
    assert (got - want).abs().max().item() < 1e-5


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
@pytest.mark.parametrize("res,window,shift", [((10, 12), (7, 7), (3, 3)), ((9, 13), (4, 6), (2, 3)), ((14, 14), (7, 7), (3, 3))],
                         ids=["padded", "non-square-padded", "unpadded"])
def test_pad_first_matches_torchvision(res, window, shift, v2):
    """torchvision (and Hugging Face) pad before rolling: `pad_first=1` is exactly their order."""
    from torchvision.models.swin_transformer import shifted_window_attention

    torch.manual_seed(sum(res))
    C, heads = 32, 2
    n = window[0] * window[1]
    x = torch.randn(2, *res, C)
    w_qkv, b_qkv = torch.randn(3 * C, C) * 0.3, torch.randn(3 * C) * 0.5
    bias = torch.randn(heads, n, n)
    logit_scale = torch.tensor([1.0, 4.0]).view(heads, 1, 1) if v2 else None
    want = shifted_window_attention(x, w_qkv, torch.eye(C), bias, list(window), heads, list(shift),
                                    qkv_bias=b_qkv, logit_scale=logit_scale, training=False)
    pad = b_qkv.clone()
    if v2:
        pad[C:2 * C] = 0  # torchvision zeroes the k bias of V2
    qkv = torch.nn.functional.linear(x, w_qkv, pad).reshape(2, res[0] * res[1], 3 * C)
    scale = torch.exp(logit_scale.flatten()).tolist() if v2 else (C // heads) ** -0.5
    attrs = dict(window_size=window, shift_size=shift, num_heads=heads, height=res[0], width=res[1], scale=scale,
                 cosine=int(v2), pad_first=1)
    got = window_attention(qkv, bias, pad, **attrs).view(2, *res, C)
    assert (got - want).abs().max().item() < 2e-5 * max(1.0, want.abs().max().item())
    timm_order = window_attention(qkv, bias, pad, **dict(attrs, pad_first=0)).view(2, *res, C)
    assert ((timm_order - want).abs().max().item() > 1e-2) == (res[0] % window[0] > 0 or res[1] % window[1] > 0)


def test_padding_tokens_carry_the_qkv_bias():
    """timm pads *before* the qkv Linear: padded keys/values are the Linear's bias, and they matter."""
    blk = _block(32, 2, 12, 7, 3, seed=5)
    x = torch.randn(2, 12, 12, 32)
    want, with_zero_pad, _ = _reference_through_block(blk, x, pad_override=None)
    assert (with_zero_pad - want).abs().max().item() > 1e-2


def test_shift_mask_matches_timm_and_uses_region_ids():
    blk = _block(32, 2, 12, 7, 3, seed=1)
    assert torch.equal(shift_mask(12, 12, 7, 3), blk.attn_mask)
    assert region_ids(14, 7, 3).tolist() == [0] * 7 + [1] * 4 + [2] * 3
    for v2 in (False, True):  # per-dimension windows and shifts, one of them 0
        blk = _block(32, 2, (8, 12), 8, 4, seed=2, v2=v2)
        assert (blk.window_size, blk.shift_size) == ((8, 8), (0, 4))
        assert torch.equal(shift_mask(8, 12, (8, 8), (0, 4)), blk.attn_mask)
    assert shift_mask(8, 12, (8, 8), (0, 4), mask_value=-200.0).min() == -200.0


def test_list_attributes_round_trip_through_onnx_and_the_ort_encoding():
    """window/shift pairs and per-head scales are INTS/FLOATS in ONNX, strings for onnxruntime-extensions,
    tuples for the faces; a graph written with the old scalar attributes still reads (square, one scale)."""
    attrs = dict(window_size=(4, 6), shift_size=(0, 3), num_heads=3, height=8, width=12, scale=[2.5, 10.0, 100.0],
                 cosine=1, mask_value=-200.0, pad_first=1)
    node = helper.make_node(SPEC.name, ["qkv", "bias", "pad_qkv"], ["out"], domain=SPEC.domain, **SPEC.node_attrs(**attrs))
    types = {a.name: a.type for a in node.attribute}
    assert types["window_size"] == onnx.AttributeProto.INTS and types["scale"] == onnx.AttributeProto.FLOATS
    raw = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert SPEC.read_attrs(raw) == dict(attrs, scale=(2.5, 10.0, 100.0))
    ort_side = {a.name: helper.get_attribute_value(SPEC.ort_attribute(a)) for a in node.attribute}
    assert ort_side["window_size"] == b"4,6" and SPEC.read_attrs(ort_side) == SPEC.read_attrs(raw)
    legacy = dict(window_size=7, shift_size=3, num_heads=2, height=14, width=14, scale=0.25)  # before pairs
    got = SPEC.read_attrs(legacy)
    assert (got["window_size"], got["shift_size"], got["scale"], got["cosine"], got["mask_value"], got["pad_first"]) == (
        (7, 7), (3, 3), (0.25,), 0, -100.0, 0)
    with pytest.raises(ValueError, match="window_size must have 2 values"):
        SPEC.node_attrs(**dict(attrs, window_size=(4, 6, 2)))
    with pytest.raises(ValueError, match="must hold integers"):
        SPEC.node_attrs(**dict(attrs, shift_size=(0.5, 3)))


def test_reference_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="height=14"):
        window_attention(torch.zeros(1, 100, 96), torch.zeros(2, 49, 49), window_size=7, shift_size=0,
                         num_heads=2, height=14, width=14, scale=0.1)


# --- ONNX Runtime face ---------------------------------------------------------------------------


def _one_node_model(B, H, W, C, heads, attrs, dtype):
    wh, ww = (attrs["window_size"],) * 2 if isinstance(attrs["window_size"], int) else attrs["window_size"]
    n = wh * ww
    node = helper.make_node(SPEC.name, ["qkv", "bias", "pad_qkv"], ["out"], domain=SPEC.domain, **SPEC.node_attrs(**attrs))
    graph = helper.make_graph(
        [node], "wa",
        [helper.make_tensor_value_info("qkv", dtype, [B, H * W, 3 * C]),
         helper.make_tensor_value_info("bias", dtype, [heads, n, n]),
         helper.make_tensor_value_info("pad_qkv", dtype, [3 * C])],
        [helper.make_tensor_value_info("out", dtype, [B, H * W, C])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(SPEC.domain, 1)])
    onnx.checker.check_model(model)
    return model


ORT_CASES = [  # (H, W, attrs beyond heads/height/width)
    (12, 12, dict(window_size=(7, 7), shift_size=(3, 3), scale=[32 ** -0.5] * 2, cosine=0, mask_value=-100.0)),
    (8, 12, dict(window_size=(6, 7), shift_size=(0, 3), scale=[32 ** -0.5] * 2, cosine=0, mask_value=-100.0)),
    (8, 12, dict(window_size=(8, 8), shift_size=(0, 4), scale=[5.0, 60.0], cosine=1, mask_value=-200.0, pad_first=1)),
]


@pytest.mark.parametrize("case", range(len(ORT_CASES)), ids=["square-v1", "non-square-v1", "v2-mixed-shift"])
@pytest.mark.parametrize("np_dtype,onnx_dtype,tol", [(np.float32, TensorProto.FLOAT, 1e-5), (np.float16, TensorProto.FLOAT16, 2e-3)])
def test_ort_face_matches_reference(np_dtype, onnx_dtype, tol, case):
    from vitdeploy.onnxrt import session

    B, C, heads = 2, 32, 2
    H, W, extra = ORT_CASES[case]
    attrs = dict(num_heads=heads, height=H, width=W, **extra)
    n = extra["window_size"][0] * extra["window_size"][1]
    rng = np.random.default_rng(case)
    feeds = {
        "qkv": rng.standard_normal((B, H * W, 3 * C)).astype(np_dtype),
        "bias": rng.standard_normal((heads, n, n)).astype(np_dtype),
        "pad_qkv": rng.standard_normal(3 * C).astype(np_dtype),
    }
    (got,) = session(_one_node_model(B, H, W, C, heads, attrs, onnx_dtype)).run(None, feeds)
    want = window_attention(*(torch.from_numpy(v.astype(np.float32)) for v in feeds.values()), **attrs).numpy()
    assert got.dtype == np_dtype and got.shape == (B, H * W, C)
    assert np.abs(got.astype(np.float32) - want).max() < tol * max(1.0, np.abs(want).max())


# --- Triton kernel under the CPU interpreter -----------------------------------------------------
# triton.language's reductions are jitted when triton is first imported, so the interpreter must be
# on before that; a child process makes that independent of which tests imported triton first.

KERNEL_CASES = [
    # (map, window, shift, dtype, batch, channels, heads, heads_per_program, cosine); ints are square
    (14, 7, 0, "float32", 2, 32, 2, 1, 0),
    (14, 7, 3, "float32", 2, 32, 2, 2, 0),
    (12, 7, 3, "float32", 1, 32, 2, 1, 0),
    (12, 7, 0, "float16", 2, 32, 2, 1, 0),
    (14, 7, 3, "float16", 1, 32, 2, 1, 0),
    (12, 7, 3, "float16", 2, 32, 2, 2, 0),
    (10, 4, 2, "float32", 1, 48, 3, 3, 0),  # N = 16, head_dim 16, padded, shifted
    (24, 12, 6, "float32", 1, 32, 2, 1, 0),  # N = 144: three query blocks x three key blocks, online softmax
    (16, 9, 4, "float16", 1, 32, 2, 1, 0),  # N = 81, padded: a partly valid second query and key block
    (5, 7, 3, "float32", 2, 32, 2, 1, 0),  # timm always_partition: map smaller than the window, rolled + padded
    # non-square windows and mixed shifts (timm's per-dimension clamping)
    ([6, 10], [6, 7], [0, 3], "float32", 2, 32, 2, 1, 0),  # Swin-T 192x320 stage 4
    ([9, 14], [4, 6], [2, 3], "float16", 1, 48, 3, 3, 0),  # padded in h, N = 24
    ([4, 5], [4, 5], [0, 0], "float32", 1, 32, 2, 2, 0),  # whole-map window, no padding, N = 20
    # Swin V2: cosine attention, per-head logit scales up to 100, zero k in padding tokens
    (8, 8, 4, "float32", 2, 32, 2, 1, 1),
    ([8, 12], [8, 8], [0, 4], "float32", 1, 32, 2, 2, 1),  # SwinV2-T 256x384 stage 4, padded in w
    ([8, 12], [8, 8], [0, 4], "float16", 2, 32, 2, 1, 1),
    (12, 7, 3, "float16", 1, 48, 3, 1, 1),  # padded, N = 49
    (24, 12, 6, "float32", 1, 32, 2, 1, 1),  # V2 12x12 windows: several query and key blocks
    # pad, then roll (torchvision, Hugging Face): padding tokens move into the map
    ([10, 12], [7, 7], [3, 3], "float32", 2, 32, 2, 1, 0, 1),
    ([9, 13], [4, 6], [2, 3], "float16", 1, 32, 2, 2, 1, 1),
]

_CHILD = textwrap.dedent(
    """
    import json, sys, torch
    from vitdeploy.plugins.window_attention.kernel import window_attention_triton, interpreter_active
    from vitdeploy.plugins.window_attention.reference import window_attention
    assert interpreter_active()
    results = []
    for res, ws, shift, dt, B, C, heads, hpp, cosine, *pad_first in json.loads(sys.argv[1]):
        (H, W), (wh, ww) = [(v, v) if isinstance(v, int) else tuple(v) for v in (res, ws)]
        g = torch.Generator().manual_seed(H * 100 + W + cosine)
        dtype = getattr(torch, dt)
        qkv = torch.randn(B, H * W, 3 * C, generator=g).to(dtype)
        bias = torch.randn(heads, wh * ww, wh * ww, generator=g).to(dtype)
        pad = torch.randn(3 * C, generator=g).to(dtype)
        if cosine:  # timm V2: logit scales exp(clamp(.)) in (1, 100], padding tokens' k is zero (no k bias)
            scale = torch.linspace(3.0, 100.0, heads).tolist()
            pad[C:2 * C] = 0
        else:
            scale = (C // heads) ** -0.5
        attrs = dict(window_size=ws, shift_size=shift, num_heads=heads, height=H, width=W, scale=scale, cosine=cosine,
                     pad_first=pad_first[0] if pad_first else 0)
        out = window_attention_triton(qkv, bias, pad, heads_per_program=hpp, **attrs)
        want = window_attention(qkv.float(), bias.float(), pad.float(), **attrs)
        unshifted = window_attention(qkv.float(), bias.float(), pad.float(), **dict(attrs, shift_size=0))
        results.append(dict(err=(out.float() - want).abs().max().item(), scale=want.abs().max().item(),
                            dtype=str(out.dtype), shape=list(out.shape),
                            shift_effect=(want - unshifted).abs().max().item()))
    print(json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def kernel_results():
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(KERNEL_CASES)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _case_id(c):
    fmt = lambda v: str(v) if isinstance(v, int) else "x".join(map(str, v))  # noqa: E731
    return f"{fmt(c[0])}px-w{fmt(c[1])}-s{fmt(c[2])}-{c[3]}-hpp{c[7]}{'-v2' if c[8] else ''}{'-padfirst' if c[9:] else ''}"


@pytest.mark.parametrize("case", range(len(KERNEL_CASES)), ids=[_case_id(c) for c in KERNEL_CASES])
def test_triton_kernel_matches_reference_on_interpreter(kernel_results, case):
    res, ws, shift, dt, B, C, heads, _, cosine = KERNEL_CASES[case][:9]
    H, W = (res, res) if isinstance(res, int) else res
    r = kernel_results[case]
    assert r["shape"] == [B, H * W, C] and r["dtype"] == f"torch.{dt}"
    tol = 1e-5 if dt == "float32" else 4e-3
    if cosine and dt == "float16":  # logits up to 100: FP16 q̂, k̂ carry ~1e-3 relative error into them
        tol = 1e-2
    assert r["err"] < tol * max(1.0, r["scale"])
    if np.any(shift):  # the case really exercises the in-kernel mask
        assert r["shift_effect"] > 10 * tol


def test_launcher_refuses_cpu_tensors_without_interpreter():
    pytest.importorskip("triton")
    from vitdeploy.plugins.window_attention import kernel

    if kernel.interpreter_active():
        pytest.skip("interpreter is on in this process")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        kernel.window_attention_triton(torch.zeros(1, 49, 96), torch.zeros(2, 49, 49), window_size=7, shift_size=0,
                                       num_heads=2, height=7, width=7, scale=0.25)


# --- ahead-of-time PTX ---------------------------------------------------------------------------


@pytest.mark.parametrize("arch,dtype", [(87, "fp16"), (90, "fp16"), (87, "fp32")])
def test_compiles_to_ptx_for_jetson_and_hopper(arch, dtype):
    from vitdeploy.plugins.window_attention import kernel

    if kernel.interpreter_active():
        pytest.skip("AOT compilation needs TRITON_INTERPRET unset")
    cfg = kernel.make_config(window_size=7, shift_size=3, num_heads=3, height=56, width=56, scale=32**-0.5, channels=96)
    name, ptx, meta = kernel.compile_ptx(arch, dtype, cfg)
    assert name == kernel.KERNEL_NAME
    assert any(line.startswith(f".target sm_{arch}") for line in ptx.splitlines())
    assert f".entry {name}(" in ptx
    assert meta.num_warps == cfg.num_warps
    if dtype == "fp16":  # tensor-core dots, not a scalar fallback
        assert "mma" in ptx
    assert "ld.global.v4" in ptx  # 128-bit qkv row loads: the aligned-pointer hint reached the compiler
    # the entry TensorRT launches takes exactly: qkv, bias, pad_qkv, batch, out
    entry = entry_params(strip_unused_scratch_params(ptx, name, keep=kernel.NUM_KERNEL_ARGS), name)
    assert entry == [".u64", ".u64", ".u64", ".u32", ".u64"]


@pytest.mark.parametrize("window,shift,cosine,head_dim", [((24, 24), (12, 12), 1, 32), ((12, 12), (6, 6), 0, 64)],
                         ids=["v2-w24", "w12-hd64"])
def test_fp32_variants_fit_48k_of_shared_memory(window, shift, cosine, head_dim):
    """FP32 tiles are twice FP16's: queries are blocked (64 rows) and wide heads take fewer keys per
    block, so every variant stays within the 48 KiB a launch gets without an opt-in."""
    from vitdeploy.plugins.window_attention import kernel, trt as wa_trt

    if kernel.interpreter_active():
        pytest.skip("AOT compilation needs TRITON_INTERPRET unset")
    cfg = kernel.make_config(window_size=window, shift_size=shift, num_heads=2, height=48, width=48,
                             scale=[10.0, 100.0] if cosine else 0.2, channels=2 * head_dim, cosine=cosine)
    name, ptx, meta = kernel.compile_ptx(90, "fp32", cfg)
    assert 0 < meta.shared <= wa_trt.MAX_STATIC_SHARED
    n = window[0] * window[1]
    assert cfg.query_blocks == -(-n // 64) and cfg.programs_per_image == cfg.num_windows * 2 * cfg.query_blocks


def test_stripped_ptx_still_assembles():
    """The PTX handed to TensorRT (scratch params removed) is valid for ptxas, Triton's own assembler."""
    from vitdeploy.plugins.window_attention import kernel

    if kernel.interpreter_active():
        pytest.skip("AOT compilation needs TRITON_INTERPRET unset")
    ptxas = ptxas_path()
    if ptxas is None:
        pytest.skip("Triton ships no ptxas here")
    cfg = kernel.make_config(window_size=7, shift_size=3, num_heads=6, height=12, width=12, scale=32**-0.5, channels=192)
    name, ptx, _ = kernel.compile_ptx(87, "fp16", cfg)
    stripped = strip_unused_scratch_params(ptx, name, keep=kernel.NUM_KERNEL_ARGS)
    proc = subprocess.run([ptxas, "-arch=sm_87", "-o", os.devnull, "-"], input=stripped, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# --- TensorRT --------------------------------------------------------------------------------------


@pytest.mark.trt
def test_tensorrt_plugin_matches_reference():
    pytest.importorskip("tensorrt", reason="TensorRT is not installed")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT needs a CUDA GPU")
    from vitdeploy.plugins.window_attention import trt as wa_trt

    wa_trt.register()
    B, C, heads = 2, 64, 2
    for H, W, extra in ORT_CASES:  # square V1, non-square V1, V2 with a mixed shift and -200 mask
        attrs = dict(num_heads=heads, height=H, width=W, **extra)
        n = extra["window_size"][0] * extra["window_size"][1]
        g = torch.Generator().manual_seed(H * W)
        qkv = torch.randn(B, H * W, 3 * C, generator=g)
        bias = torch.randn(heads, n, n, generator=g)
        pad = torch.randn(3 * C, generator=g)
        out = wa_trt.run_one_node(qkv, bias, pad, **attrs)
        want = window_attention(qkv, bias, pad, **attrs)
        assert (out.cpu() - want).abs().max().item() < 1e-4 * max(1.0, want.abs().max().item()), extra


# --- benchmark script (CPU smoke run; timings there mean nothing and are not asserted) ---------------


def test_benchmark_dry_run_checks_correctness_and_writes_json(tmp_path):
    out = tmp_path / "wa.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks/kernels/window_attention.py"), "--dry-run", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["dry_run"] is True and data["environment"]["git"]["commit"]
    assert {"torch", "triton", "device", "date_utc"} <= set(data["environment"])
    rows = data["results"]
    assert {(r["stage"], r["batch"]) for r in rows} == {("tiny-a", 1), ("tiny-a", 2), ("tiny-b", 1), ("tiny-v2", 1),
                                                        ("tiny-nonsquare", 1)}
    v2, ns = (next(r for r in rows if r["stage"] == s) for s in ("tiny-v2", "tiny-nonsquare"))
    assert v2["cosine"] and v2["shift"] == [0, 4] and ns["window"] == [6, 7] and ns["shift"] == [0, 3]
    for r in rows:
        assert r["correct"], r
        assert {"eager", "sdpa_subgraph", "sdpa_windows", r["triton_best"]} <= set(r["times_us"])
        assert all(e <= r["tolerance"] for e in r["max_abs_err"].values())


# --- on a CUDA GPU (skipped elsewhere) ---------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", [(torch.float16, 1e-2), (torch.float32, 1e-4)])
@pytest.mark.parametrize("res,C,heads,window,shift,hpp,cosine", [
    (56, 96, 3, 7, 3, 1, 0), (28, 192, 6, 7, 0, 2, 0), (14, 384, 12, 7, 3, 3, 0), (7, 768, 24, 7, 0, 1, 0),
    (12, 64, 2, 7, 3, 1, 0), (24, 128, 4, 12, 6, 1, 0),
    ((6, 10), 768, 24, (6, 7), (0, 3), 1, 0),  # Swin-T 192x320 stage 4
    (64, 96, 3, 8, 4, 1, 1), (8, 768, 24, 8, 0, 3, 1),  # SwinV2-T 256 stages 1 and 4
    ((8, 12), 768, 24, (8, 8), (0, 4), 1, 1),  # SwinV2-T 256x384 stage 4
    (24, 512, 16, 24, 0, 1, 1),  # SwinV2-B 384 stage 3 (24x24 windows: 9 query x 9 key blocks)
])
def test_triton_kernel_on_gpu_matches_reference(dtype, tol, res, C, heads, window, shift, hpp, cosine):
    from vitdeploy.plugins.window_attention.kernel import window_attention_triton

    (H, W), (wh, ww) = [(v, v) if isinstance(v, int) else v for v in (res, window)]
    g = torch.Generator().manual_seed(H + W)
    B = 3
    qkv = torch.randn(B, H * W, 3 * C, generator=g).to(dtype)
    bias = torch.randn(heads, wh * ww, wh * ww, generator=g).to(dtype)
    pad = torch.randn(3 * C, generator=g).to(dtype)
    scale = torch.linspace(3.0, 100.0, heads).tolist() if cosine else (C // heads) ** -0.5
    if cosine and dtype == torch.float16:
        tol = 2e-2  # logits up to 100 from FP16 q̂, k̂
    attrs = dict(window_size=window, shift_size=shift, num_heads=heads, height=H, width=W, scale=scale, cosine=cosine)
    out = window_attention_triton(qkv.cuda(), bias.cuda(), pad.cuda(), heads_per_program=hpp, **attrs)
    want = window_attention(qkv.float(), bias.float(), pad.float(), **attrs)
    assert (out.float().cpu() - want).abs().max().item() < tol * max(1.0, want.abs().max().item())
