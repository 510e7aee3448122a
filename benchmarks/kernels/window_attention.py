"""Benchmark: the fused WindowAttention Triton kernel vs what it replaces, on Swin-T's four stages.

Compared implementations (all FP16, all from the same original-order qkv [B, H*W, 3C]):
  triton          one kernel; roll/pad/partition/mask/reverse folded into its index math.
                  Every (heads_per_program, num_warps) variant is timed; the default and the
                  best are reported.
  eager           timm's non-fused path: roll, pad, partition, (q*scale)@k^T + bias + mask,
                  softmax, @v, reverse, crop, roll back (mask precomputed, as timm buffers it).
  sdpa_windows    F.scaled_dot_product_attention with an explicit additive mask (bias + shift
                  mask, precomputed) on q/k/v that are ALREADY partitioned: attention alone,
                  the most favourable case for SDPA.
  sdpa_subgraph   timm's fused path: roll/pad/partition + the same SDPA + reverse/roll back,
                  i.e. the whole subgraph the plugin replaces (the fair end-to-end comparison).
Correctness of every implementation is checked against the FP32 reference before timing.

GPU:  python benchmarks/kernels/window_attention.py --out benchmarks/results/window_attention.json
CPU smoke test (Triton interpreter, tiny shapes, no timing claims):
      python benchmarks/kernels/window_attention.py --dry-run --out /tmp/wa.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

if "--dry-run" in sys.argv:  # the interpreter must be on before triton is first imported
    os.environ["TRITON_INTERPRET"] = "1"

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from benchmarks.kernels.common import environment  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from vitdeploy.plugins.window_attention import kernel as wa_kernel  # noqa: E402
from vitdeploy.plugins.window_attention.reference import padded_size, shift_mask, window_attention  # noqa: E402

# Swin-T at 224: (name, H=W, channels, heads); window 7, shifted blocks (shift 3).
SWIN_T_STAGES = [("stage1", 56, 96, 3), ("stage2", 28, 192, 6), ("stage3", 14, 384, 12), ("stage4", 7, 768, 24)]
DRY_STAGES = [("tiny-a", 14, 32, 2), ("tiny-b", 12, 48, 3)]


# --- the implementations being compared -------------------------------------------------------------


def partition(x, B, H, W, ws, s):
    """[B, H*W, D] original order -> [B*nW, N, D] windows of the rolled, zero-padded map (timm's order)."""
    D = x.shape[-1]
    x = x.view(B, H, W, D)
    if s:
        x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
    hp, wp = padded_size(H, W, ws)
    if (hp, wp) != (H, W):
        x = F.pad(x, (0, 0, 0, wp - W, 0, hp - H))
    x = x.view(B, hp // ws, ws, wp // ws, ws, D).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, D)
    return x


def reverse(win, B, H, W, ws, s):
    D = win.shape[-1]
    hp, wp = padded_size(H, W, ws)
    x = win.view(B, hp // ws, wp // ws, ws, ws, D).permute(0, 1, 3, 2, 4, 5).reshape(B, hp, wp, D)[:, :H, :W]
    if s:
        x = torch.roll(x, shifts=(s, s), dims=(1, 2))
    return x.reshape(B, H * W, D)


def split_heads(win, heads):
    Bw, N, C3 = win.shape
    return win.view(Bw, N, 3, heads, C3 // (3 * heads)).permute(2, 0, 3, 1, 4).unbind(0)


def eager_subgraph(qkv, bias, mask, B, H, W, ws, s, heads, scale):
    """timm's non-fused attention path (its `fused_attn=False` branch), from qkv to pre-proj output."""
    q, k, v = split_heads(partition(qkv, B, H, W, ws, s), heads)
    attn = (q * scale) @ k.transpose(-2, -1) + bias.unsqueeze(0)
    N = ws * ws
    if mask is not None:
        nw = mask.shape[0]
        attn = (attn.view(-1, nw, heads, N, N) + mask.unsqueeze(1).unsqueeze(0)).view(-1, heads, N, N)
    out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(q.shape[0], N, -1)
    return reverse(out, B, H, W, ws, s)


def sdpa_mask(bias, mask, B):
    """Additive mask [B*nW, heads, N, N] = rel-pos bias + shift mask, broadcast over batch (no copy)."""
    m = bias.unsqueeze(0) if mask is None else bias.unsqueeze(0) + mask.unsqueeze(1)  # [nW|1, heads, N, N]
    nw = m.shape[0]
    return m.unsqueeze(0).expand(B, nw, *m.shape[1:]).reshape(-1, *m.shape[1:]) if nw > 1 else m


def sdpa_subgraph(qkv, attn_mask, B, H, W, ws, s, heads, scale):
    q, k, v = split_heads(partition(qkv, B, H, W, ws, s), heads)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale)
    return reverse(out.transpose(1, 2).reshape(q.shape[0], ws * ws, -1), B, H, W, ws, s)


# --- measurement ---------------------------------------------------------------------------------------


def time_cuda(fn, warmup: int, reps: int, inner: int, graphs: bool) -> dict:
    """Median/min/p90 microseconds per call; each sample times `inner` back-to-back calls with CUDA events.

    With `graphs`, the `inner` calls are captured once in a CUDA graph and replayed, so the numbers
    are GPU time without Python launch overhead (as inside a TensorRT engine); if capture fails the
    calls are launched from Python and the entry says so.
    """
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()

    def launch_all():
        for _ in range(inner):
            fn()

    block, mode = launch_all, "python-launch"
    if graphs:
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    fn()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                launch_all()
            block, mode = graph.replay, "cuda-graph"
        except Exception as e:  # record why, keep measuring without the graph
            mode = f"python-launch (graph capture failed: {type(e).__name__})"
            torch.cuda.synchronize()
    for _ in range(3):
        block()
    torch.cuda.synchronize()
    samples = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        block()
        b.record()
        b.synchronize()
        samples.append(a.elapsed_time(b) * 1000.0 / inner)
    samples.sort()
    return {"median_us": statistics.median(samples), "min_us": samples[0],
            "p90_us": samples[int(0.9 * (len(samples) - 1))], "reps": reps, "inner": inner, "mode": mode}


def time_cpu(fn, reps: int = 2) -> dict:
    """Dry-run stand-in (wall clock, interpreter): exercises the code path, means nothing."""
    samples = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1e6)
    return {"median_us": statistics.median(samples), "min_us": min(samples), "p90_us": max(samples), "reps": reps, "inner": 1}


def max_err(got, want) -> float:
    return (got.float() - want).abs().max().item()


def triton_variants(heads: int, dry: bool) -> list[dict]:
    hpps = [h for h in (1, 2, 3) if heads % h == 0]
    warps = [4] if dry else [2, 4, 8]
    return [{"heads_per_program": h, "num_warps": w} for h in hpps for w in warps]


def bench_case(stage, res, C, heads, B, ws, s, device, dry, args) -> dict:
    g = torch.Generator(device="cpu").manual_seed(res * 1000 + B)
    dtype = torch.float16
    qkv = torch.randn(B, res * res, 3 * C, generator=g).to(device=device, dtype=dtype)
    bias = (0.5 * torch.randn(heads, ws * ws, ws * ws, generator=g)).to(device=device, dtype=dtype)
    pad = torch.zeros(3 * C, device=device, dtype=dtype)
    scale = (C // heads) ** -0.5
    attrs = dict(window_size=ws, shift_size=s, num_heads=heads, height=res, width=res, scale=scale)
    mask = shift_mask(res, res, ws, s).to(device=device, dtype=dtype) if s else None
    full_mask = sdpa_mask(bias, mask, B)
    win_q, win_k, win_v = [t.contiguous() for t in split_heads(partition(qkv, B, res, res, ws, s), heads)]

    impls = {
        "eager": lambda: eager_subgraph(qkv, bias, mask, B, res, res, ws, s, heads, scale),
        "sdpa_subgraph": lambda: sdpa_subgraph(qkv, full_mask, B, res, res, ws, s, heads, scale),
    }
    # attention on pre-partitioned windows: its output is in window order; it is checked after
    # reversing the partition (padded tokens only exist in window order)
    sdpa_windows = lambda: F.scaled_dot_product_attention(win_q, win_k, win_v, attn_mask=full_mask, scale=scale)  # noqa: E731
    variants = triton_variants(heads, dry)
    for v in variants:
        impls[f"triton_hpp{v['heads_per_program']}_w{v['num_warps']}"] = (
            lambda v=v: wa_kernel.window_attention_triton(qkv, bias, pad, **attrs, **v))

    want = window_attention(qkv.float(), bias.float(), pad.float(), **attrs)
    ref_scale = max(1.0, want.abs().max().item())
    tol = args.tol * ref_scale
    errors = {name: max_err(fn(), want) for name, fn in impls.items()}
    got_win = sdpa_windows().transpose(1, 2).reshape(win_q.shape[0], ws * ws, -1)
    errors["sdpa_windows"] = max_err(reverse(got_win, B, res, res, ws, s), want)
    failed = {k: e for k, e in errors.items() if not e <= tol}
    row = {"stage": stage, "H": res, "W": res, "C": C, "heads": heads, "window": ws, "shift": s, "batch": B,
           "dtype": "fp16", "tolerance": tol, "max_abs_err": errors, "correct": not failed}
    if failed:
        row["error"] = f"implementations beyond tolerance {tol:.3g}: {sorted(failed)}; not timed"
        return row

    impls["sdpa_windows"] = sdpa_windows
    timer = (lambda fn: time_cpu(fn)) if dry else (
        lambda fn: time_cuda(fn, args.warmup, args.reps, args.inner, not args.no_graphs))
    times = {name: timer(fn) for name, fn in impls.items()}
    tri = {k: t for k, t in times.items() if k.startswith("triton_")}
    best = min(tri, key=lambda k: tri[k]["median_us"])
    cfg = wa_kernel.make_config(channels=C, **attrs)
    default = f"triton_hpp{cfg.heads_per_program}_w{cfg.num_warps}"
    row.update(times_us=times, triton_best=best, triton_default=default if default in tri else best)
    t_best = tri[best]["median_us"]
    row["speedup_best_vs"] = {k: times[k]["median_us"] / t_best for k in ("eager", "sdpa_subgraph", "sdpa_windows")}
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="JSON results file")
    ap.add_argument("--batches", default="1,8,64")
    ap.add_argument("--warmup", type=int, default=25)
    ap.add_argument("--reps", type=int, default=50, help="timed samples per implementation")
    ap.add_argument("--inner", type=int, default=20, help="calls per timed sample")
    ap.add_argument("--no-graphs", action="store_true", help="launch from Python instead of replaying CUDA graphs")
    ap.add_argument("--tol", type=float, default=2e-2, help="max-abs tolerance (relative to max |ref|) for FP16")
    ap.add_argument("--dry-run", action="store_true", help="CPU + Triton interpreter, tiny shapes, batch 1-2")
    args = ap.parse_args(argv)

    if args.dry_run:
        device, stages, batches = torch.device("cpu"), DRY_STAGES, [1, 2]
    else:
        if not torch.cuda.is_available():
            print("error: no CUDA device (use --dry-run for the CPU smoke test)", file=sys.stderr)
            return 2
        device, stages, batches = torch.device("cuda"), SWIN_T_STAGES, [int(b) for b in args.batches.split(",")]
    ws, shift = 7, 3
    rows = []
    for stage, res, C, heads in stages:
        for B in batches:
            row = bench_case(stage, res, C, heads, B, ws, shift, device, args.dry_run, args)
            rows.append(row)
            if "times_us" in row:
                t = row["times_us"]
                print(f"{stage} B={B:<3} triton {t[row['triton_best']]['median_us']:9.1f} us ({row['triton_best']})  "
                      f"eager {t['eager']['median_us']:9.1f}  sdpa_subgraph {t['sdpa_subgraph']['median_us']:9.1f}  "
                      f"sdpa_windows {t['sdpa_windows']['median_us']:9.1f}", flush=True)
            else:
                print(f"{stage} B={B}: {row['error']}", flush=True)
    result = {"benchmark": "window_attention", "dry_run": args.dry_run, "environment": environment(device),
              "settings": {"window": ws, "shift": shift, "dtype": "fp16", "warmup": args.warmup, "reps": args.reps,
                           "inner": args.inner, "tolerance_rel": args.tol,
                           "timing": "python-launch" if args.no_graphs or args.dry_run else "cuda-graph replay"},
              "implementations": {
                  "triton": "fused WindowAttention kernel from original-order qkv",
                  "eager": "timm non-fused path: roll+pad+partition, matmul+bias+mask, softmax, matmul, reverse+roll",
                  "sdpa_subgraph": "roll+pad+partition, SDPA with explicit additive mask, reverse+roll (timm fused path)",
                  "sdpa_windows": "SDPA with explicit additive mask on pre-partitioned q/k/v (attention only)"},
              "results": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(args.out.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(args.out)
    print(f"wrote {args.out}")
    return 0 if all(r["correct"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
