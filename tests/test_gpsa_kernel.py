"""GatedPositionalAttention Triton kernel: vs the reference under TRITON_INTERPRET=1, and AOT PTX for sm_87/sm_90.

Triton decides interpreter-or-compiler when a kernel is decorated (at import), so each
mode runs in its own subprocess with TRITON_INTERPRET set explicitly; the outcome does not
depend on which test modules were imported first.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

INTERPRET = textwrap.dedent("""
    import json, sys, torch
    from vitdeploy.plugins.gated_positional_attention.kernel import gated_positional_attention_triton
    from vitdeploy.plugins.gated_positional_attention.reference import gated_positional_attention
    res = []
    for b, n, h, d, dt, bm, bn in json.loads(sys.argv[1]):
        dt = getattr(torch, dt)
        g = torch.Generator().manual_seed(n * h)
        c = h * d
        qk = torch.randn(b, n, 2 * c, generator=g).to(dt)
        v = torch.randn(b, n, c, generator=g).to(dt)
        pos = torch.softmax(3 * torch.randn(h, n, n, generator=g), -1).to(dt)
        gate = torch.rand(h, generator=g).to(dt)
        got = gated_positional_attention_triton(qk, v, pos, gate, num_heads=h, scale=d ** -0.5, block_m=bm, block_n=bn)
        ref = gated_positional_attention(qk.double(), v.double(), pos.double(), gate.double(), num_heads=h, scale=d ** -0.5)
        res.append({"dtype": str(got.dtype), "shape": list(got.shape), "max_abs": (got.double() - ref).abs().max().item()})
    print(json.dumps(res))
""")

AOT = textwrap.dedent("""
    import json, os, subprocess, sys, triton
    from vitdeploy.plugins.ptx import entry_params, ptxas_path
    from vitdeploy.plugins.gated_positional_attention import kernel as K
    assert isinstance(K.gpsa_fwd_kernel, triton.runtime.JITFunction)
    ptxas = ptxas_path()
    res = []
    for arch, dt, tactic in json.loads(sys.argv[1]):
        name, ptx, md = K.ptx_for_tensorrt(arch, dt, 4, 48, 48 ** -0.5, tactic)
        asm = None
        if ptxas:
            target = ptx.split(".target", 1)[1].split()[0].strip(",")  # sm_87, or sm_90a on Hopper
            proc = subprocess.run([ptxas, f"-arch={target}", "-o", os.devnull, "-"], input=ptx, capture_output=True, text=True)
            asm = proc.returncode == 0 or proc.stderr[-500:]
        res.append({"arch": arch, "dtype": dt, "tactic": tactic, "warps": K.config(dt, tactic)[2], "name": name, "ptx": ptx, "entry": entry_params(ptx, name),
                    "shared": md.shared, "num_warps": md.num_warps, "assembles": asm})
    print(json.dumps(res))
""")


def _run(script: str, arg, interpret: bool, timeout: int = 300) -> list[dict]:
    env = {**os.environ, "TRITON_INTERPRET": "1" if interpret else "0"}
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(arg)], env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_kernel_matches_reference_under_interpreter():
    cases = [
        # B, N, heads, head_dim, dtype, BLOCK_M, BLOCK_N (None = the dtype's production tiles)
        [2, 36, 2, 24, "float32", 16, 16],   # rows, columns and head_dim (24 -> 32) all masked
        [2, 36, 2, 24, "float16", 16, 16],
        [1, 196, 1, 48, "float16", None, None],  # ConViT's N=196 in 64-wide tiles (masked to 256), head_dim 48
        [1, 100, 1, 48, "float32", None, None],  # N=100 (160x160 input), FP32 tiles
    ]
    # every TensorRT tactic's tiles on N=196 (tactic 1 is the default case above)
    from vitdeploy.plugins.gated_positional_attention.kernel import CONFIGS

    cases += [[1, 196, 1, 48, "float16", bm, bn] for bm, bn, _, _ in CONFIGS["fp16"][1:]]
    cases += [[1, 100, 1, 48, "float32", bm, bn] for bm, bn, _, _ in CONFIGS["fp32"][1:]]
    res = _run(INTERPRET, cases, interpret=True)
    for case, r in zip(cases, res):
        b, n, h, d, dt = case[:5]
        assert r["shape"] == [b, n, h * d] and r["dtype"] == f"torch.{dt}"
        assert r["max_abs"] < (2e-5 if dt == "float32" else 2e-3), (case, r)


def test_aot_ptx_for_jetson_orin_and_hopper():
    from vitdeploy.plugins.gated_positional_attention.kernel import CONFIGS

    # sm_90: every TensorRT tactic of both types; sm_87 (Jetson Orin): the default FP16 and FP32 tiles
    cases = [[90, dt, t] for dt in ("fp16", "fp32") for t in range(1, len(CONFIGS[dt]) + 1)]
    cases += [[87, "fp16", 1], [87, "fp32", 1]]
    res = _run(AOT, cases, interpret=False)
    assert len(res) == len(cases)
    for r in res:
        ptx = r["ptx"]
        assert r["name"] == "gpsa_fwd_kernel"
        assert f".target sm_{r['arch']}" in ptx and ".entry gpsa_fwd_kernel" in ptx
        # the entry TensorRT launches takes exactly: qk, v, pos, gate, N, out (Triton's scratch params dropped)
        assert r["entry"] == [".u64", ".u64", ".u64", ".u64", ".u32", ".u64"]
        assert r["num_warps"] == r["warps"]
        assert r["shared"] <= 48 * 1024, r  # launchable without a dynamic shared-memory opt-in
        assert "ld.global.v4" in ptx  # 128-bit loads: the aligned-pointer hint reached the compiler
        if r["dtype"] == "fp16":
            assert "mma.sync" in ptx or "wgmma" in ptx  # tensor-core dots
        assert r["assembles"] in (None, True), r["assembles"]  # None: Triton ships no ptxas here


@pytest.mark.gpu
@pytest.mark.parametrize("dtype_name,tol", [("float16", 2e-3), ("float32", 1e-4)])
@pytest.mark.parametrize("batch,tokens,heads", [(1, 196, 4), (3, 196, 9), (2, 100, 16)])
def test_kernel_on_cuda_matches_reference(dtype_name, tol, batch, tokens, heads):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    import triton

    from vitdeploy.plugins.gated_positional_attention.kernel import gated_positional_attention_triton, gpsa_fwd_kernel

    if not isinstance(gpsa_fwd_kernel, triton.runtime.JITFunction):
        pytest.skip("the kernel was imported under TRITON_INTERPRET=1 in this process")
    from vitdeploy.plugins.gated_positional_attention.reference import gated_positional_attention

    dt = getattr(torch, dtype_name)
    g = torch.Generator().manual_seed(tokens + heads)
    c = heads * 48
    qk = torch.randn(batch, tokens, 2 * c, generator=g).to("cuda", dt)
    v = torch.randn(batch, tokens, c, generator=g).to("cuda", dt)
    pos = torch.softmax(3 * torch.randn(heads, tokens, tokens, generator=g), -1).to("cuda", dt)
    gate = torch.rand(heads, generator=g).to("cuda", dt)
    got = gated_positional_attention_triton(qk, v, pos, gate, num_heads=heads, scale=48 ** -0.5)
    ref = gated_positional_attention(qk.double(), v.double(), pos.double(), gate.double(), num_heads=heads, scale=48 ** -0.5)
    assert got.dtype == dt and (got.double() - ref).abs().max().item() < tol
