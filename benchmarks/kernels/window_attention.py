"""Benchmark: the fused WindowAttention Triton kernel vs what it replaces, on Swin V1 and V2 stages.

Stages: Swin-T's four at 224 (window 7, shift 3), SwinV2-T's four at 256 (cosine attention,
per-head logit scale, window 8, shift 4), and non-square stages: Swin-T's last stage at 192x320
(6x10 map: window (6, 7), shift (0, 3)) and SwinV2-T's at 256x384 (8x12 map: window (8, 8),
shift (0, 4)). `--stages` picks a subset by name prefix (swin_t, swinv2_t, nonsquare).

Compared implementations (all FP16, all from the same original-order qkv [B, H*W, 3C]):
  triton          one kernel; roll/pad/partition/mask/reverse folded into its index math.
                  Every (heads_per_program, num_warps) variant is timed; the default and the
                  best are reported.
  eager           timm's non-fused path: roll, pad, partition, (q*scale)@k^T + bias + mask
                  (V2: normalize(q)@normalize(k)^T * logit_scale + bias + mask), softmax, @v,
                  reverse, crop, roll back (mask precomputed, as timm buffers it).
  sdpa_windows    F.scaled_dot_product_attention with an explicit additive mask (bias + shift
                  mask, precomputed) on q/k/v that are ALREADY partitioned (and, for V2, already
                  normalised with the logit scale folded into q): attention alone, the most
                  favourable case for SDPA.
  sdpa_subgraph   timm's fused path: roll/pad/partition (+ V2 normalisation) + the same SDPA +
                  reverse/roll back, i.e. the whole subgraph the plugin replaces (the fair
                  end-to-end comparison).
Correctness of every implementation is checked against the FP32 reference before timing.

GPU:  python benchmarks/kernels/window_attention.py --out benchmarks/results/kernel_window_attention.json
CPU smoke test (Triton interpreter, tiny shapes, no timing claims):
      python benchmarks/kernels/window_attention.py --dry-run --out /tmp/wa.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

if "--dry-run" in sys.argv:  # the interpreter must be on before triton is first imported
    os.environ["TRITON_INTERPRET"] = "1"

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from benchmarks.kernels.timing import environment, time_cpu, time_cuda  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from vitdeploy.plugins.window_attention import kernel as wa_kernel  # noqa: E402
from vitdeploy.plugins.window_attention.reference import padded_size, shift_mask, window_attention  # noqa: E402



@dataclass(frozen=True)
class Stage:
    name: str
    H: int
    W: int
    C: int
    heads: int
    window: tuple[int, int]
    shift: tuple[int, int]
    cosine: bool = False


def _swin(prefix, sizes, window, cosine):
    return [Stage(f"{prefix}/stage{i + 1}", r, r, c, h, (window, window), (window // 2, window // 2), cosine)
            for i, (r, c, h) in enumerate(sizes)]


STAGES = [
    # Swin-T at 224, SwinV2-T at 256; the last stage's map equals the window, so timm drops its shift.
    *_swin("swin_t", [(56, 96, 3), (28, 192, 6), (14, 384, 12), (7, 768, 24)], 7, False),
    *_swin("swinv2_t", [(64, 96, 3), (32, 192, 6), (16, 384, 12), (8, 768, 24)], 8, True),
    Stage("nonsquare/swin_t_192x320_stage4", 6, 10, 768, 24, (6, 7), (0, 3)),
    Stage("nonsquare/swinv2_t_256x384_stage4", 8, 12, 768, 24, (8, 8), (0, 4), cosine=True),
]
STAGES = [s if s.H > s.window[0] or s.W > s.window[1] else Stage(s.name, s.H, s.W, s.C, s.heads, s.window, (0, 0), s.cosine)
          for s in STAGES]
DRY_STAGES = [
    Stage("tiny-a", 14, 14, 32, 2, (7, 7), (3, 3)),
    Stage("tiny-b", 12, 12, 48, 3, (7, 7), (3, 3)),
    Stage("tiny-v2", 8, 12, 32, 2, (8, 8), (0, 4), cosine=True),
    Stage("tiny-nonsquare", 6, 10, 32, 2, (6, 7), (0, 3)),
]


# --- the implementations being compared -------------------------------------------------------------


def partition(x, B, H, W, ws, s):
    """[B, H*W, D] original order -> [B*nW, N, D] windows of the rolled, zero-padded map (timm's order)."""
    (wh, ww), (sh, sw) = ws, s
    D = x.shape[-1]
    x = x.view(B, H, W, D)
    if sh or sw:
        x = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2))
    hp, wp = padded_size(H, W, ws)
    if (hp, wp) != (H, W):
        x = F.pad(x, (0, 0, 0, wp - W, 0, hp - H))
    return x.view(B, hp // wh, wh, wp // ww, ww, D).permute(0, 1, 3, 2, 4, 5).reshape(-1, wh * ww, D)


def reverse(win, B, H, W, ws, s):
    (wh, ww), (sh, sw) = ws, s
    D = win.shape[-1]
    hp, wp = padded_size(H, W, ws)
    x = win.view(B, hp // wh, wp // ww, wh, ww, D).permute(0, 1, 3, 2, 4, 5).reshape(B, hp, wp, D)[:, :H, :W]
    if sh or sw:
        x = torch.roll(x, shifts=(sh, sw), dims=(1, 2))
    return x.reshape(B, H * W, D)


def split_heads(win, heads):
    Bw, N, C3 = win.shape
    return win.view(Bw, N, 3, heads, C3 // (3 * heads)).permute(2, 0, 3, 1, 4).unbind(0)


# F.normalize's eps (1e-12) is 0 in FP16, so a zero row (a padded key: timm's V2 has no k bias)
# becomes 0/0; the baselines clamp at FP16's smallest normal instead (the kernel normalises in FP32).
NORM_EPS_FP16 = 2.0 ** -14


def normalize(x):
    return F.normalize(x, dim=-1, eps=NORM_EPS_FP16 if x.dtype == torch.float16 else 1e-12)


def eager_subgraph(qkv, bias, mask, B, H, W, ws, s, heads, scale, cosine):
    """timm's non-fused attention path (V1 `fused_attn=False`, V2 as written), qkv to pre-proj output."""
    q, k, v = split_heads(partition(qkv, B, H, W, ws, s), heads)
    if cosine:
        attn = (normalize(q) @ normalize(k).transpose(-2, -1)) * scale + bias.unsqueeze(0)
    else:
        attn = (q * scale) @ k.transpose(-2, -1) + bias.unsqueeze(0)
    N = ws[0] * ws[1]
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


def sdpa_qk(q, k, scale, cosine):
    """(q, k, SDPA scale): V2 normalises q and k and folds the per-head logit scale into q."""
    if cosine:
        return normalize(q) * scale, normalize(k), 1.0
    return q, k, float(scale.flatten()[0])


def sdpa_subgraph(qkv, attn_mask, B, H, W, ws, s, heads, scale, cosine):
    q, k, v = split_heads(partition(qkv, B, H, W, ws, s), heads)
    q, k, sc = sdpa_qk(q, k, scale, cosine)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=sc)
    return reverse(out.transpose(1, 2).reshape(q.shape[0], ws[0] * ws[1], -1), B, H, W, ws, s)


# --- measurement ---------------------------------------------------------------------------------------


def max_err(got, want) -> float:
    return (got.float() - want).abs().max().item()


def triton_variants(heads: int, dry: bool) -> list[dict]:
    hpps = [h for h in (1, 2, 3) if heads % h == 0]
    warps = [4] if dry else [2, 4, 8]
    return [{"heads_per_program": h, "num_warps": w} for h in hpps for w in warps]


def bench_case(st: Stage, B, device, dry, args) -> dict:
    g = torch.Generator(device="cpu").manual_seed(st.H * 1000 + st.W * 10 + B)
    dtype = torch.float16
    H, W, C, heads, ws, s = st.H, st.W, st.C, st.heads, st.window, st.shift
    n = ws[0] * ws[1]
    qkv = torch.randn(B, H * W, 3 * C, generator=g).to(device=device, dtype=dtype)
    if st.cosine:  # V2: continuous position bias in (0, 16), logit scales from 10 (init) up to the clamp at 100
        bias = (16 * torch.sigmoid(torch.randn(heads, n, n, generator=g))).to(device=device, dtype=dtype)
        scales = torch.linspace(10.0, 100.0, heads).tolist()
    else:
        bias = (0.5 * torch.randn(heads, n, n, generator=g)).to(device=device, dtype=dtype)
        scales = [(C // heads) ** -0.5] * heads
    pad = torch.zeros(3 * C, device=device, dtype=dtype)
    scale_t = torch.tensor(scales, device=device, dtype=dtype).view(1, heads, 1, 1)
    attrs = dict(window_size=ws, shift_size=s, num_heads=heads, height=H, width=W, scale=scales, cosine=int(st.cosine))
    mask = shift_mask(H, W, ws, s).to(device=device, dtype=dtype) if any(s) else None
    full_mask = sdpa_mask(bias, mask, B)
    win_q, win_k, win_v = split_heads(partition(qkv, B, H, W, ws, s), heads)
    win_q, win_k, win_scale = sdpa_qk(win_q, win_k, scale_t, st.cosine)
    win_q, win_k, win_v = win_q.contiguous(), win_k.contiguous(), win_v.contiguous()

    impls = {
        "eager": lambda: eager_subgraph(qkv, bias, mask, B, H, W, ws, s, heads, scale_t, st.cosine),
        "sdpa_subgraph": lambda: sdpa_subgraph(qkv, full_mask, B, H, W, ws, s, heads, scale_t, st.cosine),
    }
    # attention on pre-partitioned windows: its output is in window order; it is checked after
    # reversing the partition (padded tokens only exist in window order)
    sdpa_windows = lambda: F.scaled_dot_product_attention(win_q, win_k, win_v, attn_mask=full_mask, scale=win_scale)  # noqa: E731
    variants = triton_variants(heads, dry)
    for v in variants:
        impls[f"triton_hpp{v['heads_per_program']}_w{v['num_warps']}"] = (
            lambda v=v: wa_kernel.window_attention_triton(qkv, bias, pad, **attrs, **v))

    want = window_attention(qkv.float(), bias.float(), pad.float(), **attrs)
    ref_scale = max(1.0, want.abs().max().item())
    tol = args.tol * ref_scale
    errors = {name: max_err(fn(), want) for name, fn in impls.items()}
    got_win = sdpa_windows().transpose(1, 2).reshape(win_q.shape[0], n, -1)
    errors["sdpa_windows"] = max_err(reverse(got_win, B, H, W, ws, s), want)
    failed = {k: e for k, e in errors.items() if not e <= tol}
    row = {"stage": st.name, "H": H, "W": W, "C": C, "heads": heads, "window": list(ws), "shift": list(s),
           "cosine": st.cosine, "batch": B, "dtype": "fp16", "tolerance": tol, "max_abs_err": errors,
           "correct": not failed}
    if failed:
        row["error"] = f"implementations beyond tolerance {tol:.3g}: {sorted(failed)}; not timed"
        return row

    impls["sdpa_windows"] = sdpa_windows
    timer = (lambda fn: time_cpu(fn, reps=1)) if dry else (
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
    ap.add_argument("--stages", default="", help="comma-separated stage name prefixes (default: all)")
    args = ap.parse_args(argv)

    if args.dry_run:
        device, stages, batches = torch.device("cpu"), DRY_STAGES, [1, 2]
    else:
        if not torch.cuda.is_available():
            print("error: no CUDA device (use --dry-run for the CPU smoke test)", file=sys.stderr)
            return 2
        device, stages, batches = torch.device("cuda"), STAGES, [int(b) for b in args.batches.split(",")]
    if args.stages:
        prefixes = [p.strip() for p in args.stages.split(",") if p.strip()]
        stages = [s for s in stages if any(s.name.startswith(p) for p in prefixes)]
        if not stages:
            print(f"error: no stage matches --stages {args.stages}", file=sys.stderr)
            return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, st in enumerate(stages):
        for B in batches if not args.dry_run or k == 0 else batches[:1]:  # dry run: batch 2 once is enough
            row = bench_case(st, B, device, args.dry_run, args)
            rows.append(row)
            write_results(args, device, rows)  # after every case: a crash keeps what was measured
            if "times_us" in row:
                t = row["times_us"]
                print(f"{st.name} B={B:<3} triton {t[row['triton_best']]['median_us']:9.1f} us ({row['triton_best']})  "
                      f"eager {t['eager']['median_us']:9.1f}  sdpa_subgraph {t['sdpa_subgraph']['median_us']:9.1f}  "
                      f"sdpa_windows {t['sdpa_windows']['median_us']:9.1f}", flush=True)
            else:
                print(f"{st.name} B={B}: {row['error']}", flush=True)
    print(f"wrote {args.out}")
    return 0 if all(r["correct"] for r in rows) else 1


def write_results(args, device, rows) -> None:
    result = {"benchmark": "window_attention", "dry_run": args.dry_run, "environment": environment(device),
              "settings": {"dtype": "fp16", "warmup": args.warmup, "reps": args.reps,
                           "inner": args.inner, "tolerance_rel": args.tol,
                           "timing": "python-launch" if args.no_graphs or args.dry_run else "cuda-graph replay"},
              "implementations": {
                  "triton": "fused WindowAttention kernel from original-order qkv",
                  "eager": "timm non-fused path: roll+pad+partition, matmul+bias+mask (V2: cosine, logit scale), "
                           "softmax, matmul, reverse+roll",
                  "sdpa_subgraph": "roll+pad+partition (+V2 normalize, scale folded into q), SDPA with explicit "
                                   "additive mask, reverse+roll (timm fused path)",
                  "sdpa_windows": "SDPA with explicit additive mask on pre-partitioned q/k/v (attention only)"},
              "results": rows}
    tmp = args.out.with_suffix(args.out.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(args.out)


if __name__ == "__main__":
    sys.exit(main())
