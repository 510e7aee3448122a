"""The Swin-T end-to-end suite's CPU-checkable parts: the WindowAttention swap into timm and the bookkeeping."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
E2E = ROOT / "benchmarks" / "e2e"
sys.path.insert(0, str(E2E))

import swin_swap  # noqa: E402
import swin_t_torch  # noqa: E402


def tiny_swin(img_size):
    from timm.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    return SwinTransformer(img_size=img_size, patch_size=4, window_size=4, embed_dim=16, depths=(2, 2),
                           num_heads=(2, 4), num_classes=10).eval()


@pytest.mark.parametrize("img_size", [64, 56])  # 56: 14x14 map, padded to the 4x4 windows
def test_swap_matches_eager_with_the_reference(img_size):
    from vitdeploy.plugins.window_attention.reference import window_attention

    model = tiny_swin(img_size)
    x = torch.randn(2, 3, img_size, img_size)
    calls = []

    def spy(*a, **kw):
        calls.append(kw)
        return window_attention(*a, **kw)

    with torch.no_grad():
        ref = model(x)
        assert swin_swap.swap_window_attention(model, attention=spy) == 4
        got = model(x)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert len(calls) == 4
    assert [c["shift_size"] for c in calls] == [(0, 0), (2, 2), (0, 0), (2, 2)]  # W-MSA then SW-MSA in every stage
    assert calls[0]["height"] == img_size // 4


def test_swap_is_really_used():
    from vitdeploy.plugins.window_attention.reference import window_attention

    model = tiny_swin(64)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        swin_swap.swap_window_attention(model, attention=lambda *a, **k: window_attention(*a, **k) * 0)
        assert (model(x) - ref).abs().max() > 1e-3


def test_swap_with_the_triton_kernel_under_the_interpreter():
    """The default attention is the Triton launcher; TRITON_INTERPRET must be set before triton's import."""
    pytest.importorskip("vitdeploy.plugins.window_attention.kernel", reason="kernel not in this tree")
    code = f"""
import sys, torch
sys.path.insert(0, {str(E2E)!r}); sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_bench_swin_e2e import tiny_swin
import swin_swap
m = tiny_swin(32); x = torch.randn(1, 3, 32, 32)
with torch.no_grad():
    ref = m(x); n = swin_swap.swap_window_attention(m); got = m(x)
print(n, float((got - ref).abs().max()))
"""
    env = dict(os.environ, TRITON_INTERPRET="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    n, err = out.stdout.split()
    assert int(n) == 4 and float(err) < 1e-4


def test_script_arguments_and_speedups():
    args = swin_t_torch.parse_args(["--out", "x.json", "--variants", "eager,vitdeploy-triton", "--batch", "1,8"])
    assert args.variants == ["eager", "vitdeploy-triton"] and args.precision == "fp16"
    with pytest.raises(SystemExit):
        swin_t_torch.parse_args(["--out", "x.json", "--variants", "eager,tensorrt"])

    def run(variant, medians):
        return {"variant": variant, "results": [{"batch": b, "latency_ms": {"median": m}} for b, m in medians]}

    runs = [run("eager", [(1, 4.0), (8, 20.0)]), run("vitdeploy-triton", [(1, 2.0), (8, 25.0)])]
    assert swin_t_torch.speedups(runs) == [("vitdeploy-triton", 1, 2.0), ("vitdeploy-triton", 8, 0.8)]


def test_parity_check_flags_a_wrong_variant():
    model = tiny_swin(64)
    wrong = tiny_swin(64)
    with torch.no_grad():
        wrong.head.fc.weight.mul_(1.5)
    rec = swin_t_torch.check_parity({"eager": model, "same": model, "wrong": wrong}, torch.randn(2, 3, 64, 64), "fp32")
    assert rec["eager"]["passed"] and rec["same"]["passed"] and rec["same"]["max_abs"] == 0
    assert not rec["wrong"]["passed"]


def test_script_refuses_without_cuda(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("has CUDA")
    assert swin_t_torch.main(["--out", str(tmp_path / "r.json")]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_script_end_to_end_on_cpu_writes_a_bench_document(tmp_path):
    """The whole flow (build, parity, timing, JSON) with the eager variant at a small input size."""
    from vitdeploy.bench import schema

    out = tmp_path / "e2e.json"
    rc = swin_t_torch.main(["--out", str(out), "--device", "cpu", "--variants", "eager", "--precision", "fp32",
                            "--img-size", "64", "--batch", "1", "--duration-s", "0", "--warmup-ms", "0", "--min-iters", "2"])
    assert rc == 0
    run = schema.read(out)["runs"][0]
    assert (run["model"], run["backend"], run["variant"]) == ("swin_t", "torch", "eager")
    assert run["parity_vs_eager"]["passed"] and run["results"][0]["iterations"] == 2
