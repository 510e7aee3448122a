"""WindowAttention: reference vs timm's Swin block, the ORT face, the Triton kernel (CPU interpreter), AOT PTX, TensorRT."""
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

from vitdeploy.plugins.window_attention.reference import (
    inputs_from_timm_block,
    region_ids,
    shift_mask,
    window_attention,
)
from vitdeploy.plugins import base
from vitdeploy.plugins.window_attention.spec import SPEC

REPO = Path(__file__).resolve().parents[1]


def _block(dim: int, heads: int, res: int, window: int, shift: int, seed: int, **kw) -> SwinTransformerBlock:
    """timm block with random weights large enough that bias, mask and padding all move the output."""
    torch.manual_seed(seed)
    blk = SwinTransformerBlock(dim, (res, res), num_heads=heads, window_size=window, shift_size=shift, **kw).eval()
    with torch.no_grad():
        for p in blk.parameters():
            p.normal_(0, 0.5)
    return blk


def _reference_through_block(blk, x, pad_override="timm"):
    with torch.no_grad():
        xn = blk.norm1(x)
        attrs, bias, pad = inputs_from_timm_block(blk)
        if pad_override is None:
            pad = None
        B, H, W, C = x.shape
        core = window_attention(blk.attn.qkv(xn).reshape(B, H * W, 3 * C), bias, pad, **attrs)
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
        assert attrs["window_size"] == res and attrs["shift_size"] == 0


@pytest.mark.parametrize("dynamic_mask", [False, True])
def test_reference_matches_timm_always_partition(dynamic_mask):
    """always_partition keeps window 7 / shift 3 on a 5x5 map: roll, then pad to one 7x7 window."""
    blk = _block(32, 2, 5, 7, 3, seed=3, always_partition=True, dynamic_mask=dynamic_mask)
    want, got, attrs = _reference_through_block(blk, torch.randn(2, 5, 5, 32))
    assert (attrs["window_size"], attrs["shift_size"]) == (7, 3)
    assert (got - want).abs().max().item() < 1e-5


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


def test_reference_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="height=14"):
        window_attention(torch.zeros(1, 100, 96), torch.zeros(2, 49, 49), window_size=7, shift_size=0,
                         num_heads=2, height=14, width=14, scale=0.1)


# --- ONNX Runtime face ---------------------------------------------------------------------------


def _one_node_model(B, H, W, C, heads, attrs, dtype):
    n = attrs["window_size"] ** 2
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


@pytest.mark.parametrize("np_dtype,onnx_dtype,tol", [(np.float32, TensorProto.FLOAT, 1e-5), (np.float16, TensorProto.FLOAT16, 2e-3)])
def test_ort_face_matches_reference(np_dtype, onnx_dtype, tol):
    from vitdeploy.onnxrt import session

    B, H, W, C, heads = 2, 12, 12, 32, 2
    attrs = dict(window_size=7, shift_size=3, num_heads=heads, height=H, width=W, scale=(C // heads) ** -0.5)
    rng = np.random.default_rng(0)
    feeds = {
        "qkv": rng.standard_normal((B, H * W, 3 * C)).astype(np_dtype),
        "bias": rng.standard_normal((heads, 49, 49)).astype(np_dtype),
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
    # (res, window, shift, dtype, batch, channels, heads, heads_per_program)
    (14, 7, 0, "float32", 2, 32, 2, 1),
    (14, 7, 3, "float32", 2, 32, 2, 2),
    (12, 7, 3, "float32", 1, 32, 2, 1),
    (12, 7, 0, "float16", 2, 32, 2, 1),
    (14, 7, 3, "float16", 1, 32, 2, 1),
    (12, 7, 3, "float16", 2, 32, 2, 2),
    (10, 4, 2, "float32", 1, 48, 3, 3),  # N = 16, head_dim 16, padded, shifted
    (24, 12, 6, "float32", 1, 32, 2, 1),  # N = 144: four key blocks, online softmax
    (16, 9, 4, "float16", 1, 32, 2, 1),  # N = 81, padded: a partly valid second key block
    (5, 7, 3, "float32", 2, 32, 2, 1),  # timm always_partition: map smaller than the window, rolled + padded
]

_CHILD = textwrap.dedent(
    """
    import json, sys, torch
    from vitdeploy.plugins.window_attention.kernel import window_attention_triton, interpreter_active
    from vitdeploy.plugins.window_attention.reference import window_attention
    assert interpreter_active()
    results = []
    for res, ws, shift, dt, B, C, heads, hpp in json.loads(sys.argv[1]):
        g = torch.Generator().manual_seed(res * 100 + shift)
        dtype = getattr(torch, dt)
        qkv = torch.randn(B, res * res, 3 * C, generator=g).to(dtype)
        bias = torch.randn(heads, ws * ws, ws * ws, generator=g).to(dtype)
        pad = torch.randn(3 * C, generator=g).to(dtype)
        attrs = dict(window_size=ws, shift_size=shift, num_heads=heads, height=res, width=res, scale=(C // heads) ** -0.5)
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


@pytest.mark.parametrize("case", range(len(KERNEL_CASES)), ids=[f"{c[0]}px-w{c[1]}-s{c[2]}-{c[3]}-hpp{c[7]}" for c in KERNEL_CASES])
def test_triton_kernel_matches_reference_on_interpreter(kernel_results, case):
    res, ws, shift, dt, B, C, heads, _ = KERNEL_CASES[case]
    r = kernel_results[case]
    assert r["shape"] == [B, res * res, C] and r["dtype"] == f"torch.{dt}"
    tol = 1e-5 if dt == "float32" else 4e-3
    assert r["err"] < tol * max(1.0, r["scale"])
    if shift:  # the case really exercises the in-kernel mask
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
    entry = base.entry_params(base.strip_unused_scratch_params(ptx, name, keep=kernel.NUM_KERNEL_ARGS), name)
    assert entry == [".u64", ".u64", ".u64", ".u32", ".u64"]


def test_stripped_ptx_still_assembles():
    """The PTX handed to TensorRT (scratch params removed) is valid for ptxas, Triton's own assembler."""
    from vitdeploy.plugins.window_attention import kernel

    if kernel.interpreter_active():
        pytest.skip("AOT compilation needs TRITON_INTERPRET unset")
    ptxas = base.ptxas_path()
    if ptxas is None:
        pytest.skip("Triton ships no ptxas here")
    cfg = kernel.make_config(window_size=7, shift_size=3, num_heads=6, height=12, width=12, scale=32**-0.5, channels=192)
    name, ptx, _ = kernel.compile_ptx(87, "fp16", cfg)
    stripped = base.strip_unused_scratch_params(ptx, name, keep=kernel.NUM_KERNEL_ARGS)
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
    B, H, W, C, heads = 2, 12, 12, 64, 2
    attrs = dict(window_size=7, shift_size=3, num_heads=heads, height=H, width=W, scale=(C // heads) ** -0.5)
    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(B, H * W, 3 * C, generator=g)
    bias = torch.randn(heads, 49, 49, generator=g)
    pad = torch.randn(3 * C, generator=g)
    out = wa_trt.run_one_node(qkv, bias, pad, **attrs)
    want = window_attention(qkv, bias, pad, **attrs)
    assert (out.cpu() - want).abs().max().item() < 1e-4


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
    assert {(r["stage"], r["batch"]) for r in rows} == {("tiny-a", 1), ("tiny-a", 2), ("tiny-b", 1), ("tiny-b", 2)}
    for r in rows:
        assert r["correct"], r
        assert {"eager", "sdpa_subgraph", "sdpa_windows", r["triton_best"]} <= set(r["times_us"])
        assert all(e <= r["tolerance"] for e in r["max_abs_err"].values())


# --- on a CUDA GPU (skipped elsewhere) ---------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", [(torch.float16, 1e-2), (torch.float32, 1e-4)])
@pytest.mark.parametrize("res,C,heads,window,shift,hpp", [
    (56, 96, 3, 7, 3, 1), (28, 192, 6, 7, 0, 2), (14, 384, 12, 7, 3, 3), (7, 768, 24, 7, 0, 1),
    (12, 64, 2, 7, 3, 1), (24, 128, 4, 12, 6, 1),
])
def test_triton_kernel_on_gpu_matches_reference(dtype, tol, res, C, heads, window, shift, hpp):
    if window > 8 and dtype == torch.float32:
        pytest.skip("FP32 IEEE dots on 256-row tiles take minutes to compile; FP32 window 12 is covered on the interpreter")
    from vitdeploy.plugins.window_attention.kernel import window_attention_triton

    g = torch.Generator().manual_seed(res + shift)
    B = 3
    qkv = torch.randn(B, res * res, 3 * C, generator=g).to(dtype)
    bias = torch.randn(heads, window**2, window**2, generator=g).to(dtype)
    pad = torch.randn(3 * C, generator=g).to(dtype)
    attrs = dict(window_size=window, shift_size=shift, num_heads=heads, height=res, width=res, scale=(C // heads) ** -0.5)
    out = window_attention_triton(qkv.cuda(), bias.cuda(), pad.cuda(), heads_per_program=hpp, **attrs)
    want = window_attention(qkv.float(), bias.float(), pad.float(), **attrs)
    assert (out.float().cpu() - want).abs().max().item() < tol * max(1.0, want.abs().max().item())
