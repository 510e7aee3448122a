"""Benchmark: the fused HaloAttention Triton kernel vs what it replaces, at every HaloNet stage shape.

The shapes are taken from timm itself: each model (halonet26t, sehalonet33ts, halonet50ts,
eca_halonext26ts at 256x256) runs once on the CPU with hooks on its HaloAttn modules, which
record the kv map size, block, halo, stride, heads, dims and relative tables. Every
implementation starts from the q and kv conv outputs (NCHW) and ends at HaloAttn's NCHW output
before the optional pool, FP16:
  triton          one kernel; neighbourhoods read from the unpadded map with bounds checks.
                  Every TensorRT tactic (kernel.TACTICS) is timed; the default and best are reported.
  eager           timm's HaloAttn core as it runs: blocking, F.pad + unfold + unfold, q·kᵀ, timm's
                  PosEmbedRel, softmax, @v, fold.
  sdpa_unfold     the same pad + unfold + PosEmbedRel, then F.scaled_dot_product_attention with the
                  relative logits as its additive mask, then the fold: the whole subgraph.
  sdpa_attention  SDPA alone on neighbourhoods and relative logits prepared outside the timing
                  (the most favourable case for SDPA).
Times are CUDA-event medians of replayed CUDA graphs (no Python launch overhead, as inside a
TensorRT engine); `hbm_fraction` = bytes of q, kv and the output once / time / peak HBM
bandwidth (memory clock x bus width from the device properties; a device-to-device copy's
bandwidth is recorded next to it). Every implementation is checked against the FP32 reference
before timing; only the Triton kernel is gated on it.

GPU:      python benchmarks/kernels/halo_attention.py --out benchmarks/results/kernel_halo_attention.json
CPU:      python benchmarks/kernels/halo_attention.py --dry-run --out /tmp/halo.json   (interpreter, tiny shape)
AOT PTX:  python benchmarks/kernels/halo_attention.py --ptx-only --out benchmarks/results/kernel_halo_attention_ptx.json
          (CPU: every tactic x stage shape x sm_87/sm_90, shared memory per variant)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

if "--dry-run" in sys.argv:  # the interpreter must be on before triton is first imported
    os.environ["TRITON_INTERPRET"] = "1"
elif "--ptx-only" in sys.argv:
    os.environ["TRITON_INTERPRET"] = "0"

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.kernels.timing import environment, time_cpu, time_cuda  # noqa: E402
from vitdeploy.plugins.halo_attention import kernel as K  # noqa: E402
from vitdeploy.plugins.halo_attention.reference import halo_attention  # noqa: E402

MODELS = ("halonet26t", "sehalonet33ts", "halonet50ts", "eca_halonext26ts")


# --- the shapes, from timm -----------------------------------------------------------------------------


def stage_shapes(models=MODELS, img: int = 256) -> list[dict]:
    """One entry per distinct HaloAttn geometry in `models` (first model/stage that has it names it)."""
    import timm
    from timm.layers.halo_attn import HaloAttn

    from vitdeploy.plugins.halo_attention.reference import inputs_from_timm

    seen: dict[tuple, dict] = {}
    for alias in models:
        torch.manual_seed(0)
        model = timm.create_model(alias).eval()
        found: list[tuple[HaloAttn, tuple]] = []
        hooks = [m.register_forward_hook(lambda mod, inp, out, found=found: found.append((mod, tuple(inp[0].shape))))
                 for m in model.modules() if isinstance(m, HaloAttn)]
        with torch.no_grad():
            model(torch.zeros(1, 3, img, img))
        for h in hooks:
            h.remove()
        for i, (mod, shape) in enumerate(found):
            attrs, th, tw = inputs_from_timm(mod)
            key = (shape[2], shape[3], *sorted(attrs.items()))
            seen.setdefault(key, {"name": f"{alias}.attn{i + 1}", "used_by": [], "H": shape[2], "W": shape[3],
                                  "attrs": attrs, "height_rel": th, "width_rel": tw})
            seen[key]["used_by"].append(f"{alias}.attn{i + 1}")
    return list(seen.values())


def tiny_shapes() -> list[dict]:
    g = torch.Generator().manual_seed(0)
    attrs = dict(block_size=4, halo_size=1, num_heads=2, dim_head_qk=16, dim_head_v=16, scale=0.25,
                 scale_pos_embed=0, block_stride=1)
    return [{"name": "tiny", "used_by": [], "H": 8, "W": 8, "attrs": attrs,
             "height_rel": 0.3 * torch.randn(11, 16, generator=g), "width_rel": 0.3 * torch.randn(11, 16, generator=g)}]


# --- the implementations being compared -------------------------------------------------------------


def _pos_embed(attrs, th, tw):
    from timm.layers.halo_attn import PosEmbedRel

    bs, halo, stride = attrs["block_size"], attrs["halo_size"], attrs["block_stride"]
    pe = PosEmbedRel(bs // stride, bs + 2 * halo, attrs["dim_head_qk"], attrs["scale"]).to(th.device, th.dtype)
    with torch.no_grad():
        pe.height_rel.copy_(th)
        pe.width_rel.copy_(tw)
    return pe.eval()


def _block_q(q, a, B, nh, nw):
    bsd, dqk = a["block_size"] // a["block_stride"], a["dim_head_qk"]
    q = q.reshape(-1, dqk, nh, bsd, nw, bsd).permute(0, 1, 3, 5, 2, 4)
    return q.reshape(B * a["num_heads"], dqk, -1, nh * nw).transpose(1, 3)


def _unfold_kv(kv, a, B, nh, nw):
    bs, halo, dqk, dv = a["block_size"], a["halo_size"], a["dim_head_qk"], a["dim_head_v"]
    win = bs + 2 * halo
    kv = F.pad(kv, [halo, halo, halo, halo])
    kv = kv.unfold(2, win, bs).unfold(3, win, bs).reshape(B * a["num_heads"], dqk + dv, nh * nw, -1).permute(0, 2, 3, 1)
    return torch.split(kv, [dqk, dv], dim=-1)


def _fold(out, a, B, H, W, nh, nw):
    bsd, s = a["block_size"] // a["block_stride"], a["block_stride"]
    out = out.transpose(1, 3).reshape(-1, bsd, bsd, nh, nw).permute(0, 3, 1, 4, 2)
    return out.contiguous().view(B, a["num_heads"] * a["dim_head_v"], H // s, W // s)


def eager(q, kv, pe, a):
    """timm's HaloAttn.forward from the conv outputs to the fold (line for line)."""
    B, _, H, W = kv.shape
    nh, nw = H // a["block_size"], W // a["block_size"]
    qb = _block_q(q, a, B, nh, nw)
    k, v = _unfold_kv(kv, a, B, nh, nw)
    if a["scale_pos_embed"]:
        attn = (qb @ k.transpose(-1, -2) + pe(qb)) * a["scale"]
    else:
        attn = (qb @ k.transpose(-1, -2)) * a["scale"] + pe(qb)
    return _fold(attn.softmax(-1) @ v, a, B, H, W, nh, nw)


def sdpa_parts(q, kv, pe, a):
    B, _, H, W = kv.shape
    nh, nw = H // a["block_size"], W // a["block_size"]
    qb = _block_q(q, a, B, nh, nw)
    k, v = _unfold_kv(kv, a, B, nh, nw)
    rel = pe(qb)
    return qb, k, v, (rel * a["scale"] if a["scale_pos_embed"] else rel)


def sdpa_unfold(q, kv, pe, a):
    B, _, H, W = kv.shape
    qb, k, v, mask = sdpa_parts(q, kv, pe, a)
    out = F.scaled_dot_product_attention(qb, k, v, attn_mask=mask, scale=a["scale"])
    return _fold(out, a, B, H, W, H // a["block_size"], W // a["block_size"])


# --- measurement ---------------------------------------------------------------------------------------


def peak_bandwidth(device) -> dict:
    """Theoretical HBM bandwidth from the device properties, and a measured device-to-device copy."""
    p = torch.cuda.get_device_properties(device)
    theoretical = 2.0 * p.memory_clock_rate * 1e3 * p.memory_bus_width / 8  # DDR: two transfers per clock
    x = torch.empty(256 * 2 ** 20, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    t = time_cuda(lambda: y.copy_(x), 5, 20, 5, graphs=True)
    copy = 2 * x.numel() / (t["median_us"] * 1e-6)
    return {"theoretical_GBps": theoretical / 1e9, "copy_GBps": copy / 1e9,
            "memory_clock_khz": p.memory_clock_rate, "bus_width_bits": p.memory_bus_width}


def bench_case(shape: dict, B: int, device, dry: bool, args, peak_bps: float | None) -> dict:
    a, H, W = shape["attrs"], shape["H"], shape["W"]
    heads, dqk, dv, s = a["num_heads"], a["dim_head_qk"], a["dim_head_v"], a["block_stride"]
    dtype = torch.float32 if dry else torch.float16
    g = torch.Generator().manual_seed(H * 1000 + B)
    q = torch.randn(B, heads * dqk, H // s, W // s, generator=g).to(device, dtype)
    kv = torch.randn(B, heads * (dqk + dv), H, W, generator=g).to(device, dtype)
    th, tw = shape["height_rel"].to(device, dtype), shape["width_rel"].to(device, dtype)
    pe = _pos_embed(a, th, tw)
    qb, k, v, mask = sdpa_parts(q, kv, pe, a)
    qb, k, v, mask = qb.contiguous(), k.contiguous(), v.contiguous(), mask.contiguous()
    impls = {
        "eager": lambda: eager(q, kv, pe, a),
        "sdpa_unfold": lambda: sdpa_unfold(q, kv, pe, a),
    }
    dt = "fp32" if dry else "fp16"
    tactics = range(1, len(K.TACTICS[dt]) + 1)
    for t in tactics:
        impls[f"triton_t{t}"] = lambda t=t: K.halo_attention_triton(q, kv, th, tw, tactic=t, **a)
    with torch.no_grad():
        want = halo_attention(q.float(), kv.float(), th.float(), tw.float(), **a)
        tol = args.tol * max(1.0, want.abs().max().item())
        errors = {name: (fn().float() - want).abs().max().item() for name, fn in impls.items()}
        out = F.scaled_dot_product_attention(qb, k, v, attn_mask=mask, scale=a["scale"])
        errors["sdpa_attention"] = (_fold(out, a, B, H, W, H // a["block_size"], W // a["block_size"]).float() - want).abs().max().item()
    bad = {k: e for k, e in errors.items() if k.startswith("triton") and not e <= tol}
    row = {"shape": shape["name"], "used_by": shape["used_by"], "H": H, "W": W, "batch": B, "dtype": dt,
           **{k: a[k] for k in ("block_size", "halo_size", "block_stride", "num_heads", "dim_head_qk", "dim_head_v",
                                "scale_pos_embed")},
           "tolerance": tol, "max_abs_err": errors, "correct": not bad}
    if bad:
        row["error"] = f"Triton tactics beyond tolerance {tol:.3g}: {sorted(bad)}; not timed"
        return row
    impls["sdpa_attention"] = lambda: F.scaled_dot_product_attention(qb, k, v, attn_mask=mask, scale=a["scale"])
    with torch.no_grad():
        timer = (lambda fn: time_cpu(fn)) if dry else (
            lambda fn: time_cuda(fn, args.warmup, args.reps, args.inner, not args.no_graphs))
        times = {name: timer(fn) for name, fn in impls.items()}
    tri = {k: t for k, t in times.items() if k.startswith("triton_")}
    best = min(tri, key=lambda k: tri[k]["median_us"])
    row.update(times_us=times, triton_default="triton_t1", triton_best=best)
    row["speedup_best_vs"] = {k: times[k]["median_us"] / tri[best]["median_us"] for k in ("eager", "sdpa_unfold", "sdpa_attention")}
    nbytes = (q.numel() + kv.numel() + B * heads * dv * (H // s) * (W // s)) * q.element_size()
    row["bytes_io"] = nbytes
    if peak_bps and not dry:
        row["hbm_fraction"] = {k: nbytes / (tri[k]["median_us"] * 1e-6) / peak_bps for k in ("triton_t1", best)}
    return row


def ptx_sweep(shapes: list[dict]) -> list[dict]:
    """Compile every tactic of both types for sm_87 and sm_90 at every stage shape (CPU)."""
    rows = []
    for shape in shapes:
        a = shape["attrs"]
        for arch in (87, 90):
            for dt in ("fp16", "fp32"):
                for t in range(1, len(K.TACTICS[dt]) + 1):
                    cfg = K.make_config(height=shape["H"], width=shape["W"], dtype=dt, tactic=t, **a)
                    row = {"shape": shape["name"], "arch": arch, "dtype": dt, "tactic": t, "block_m": cfg.block_m,
                           "block_n": cfg.block_n, "num_warps": cfg.num_warps}
                    try:
                        name, ptx, meta = K.ptx_for_tensorrt(arch, dt, cfg)
                        row.update(shared_bytes=meta.shared, ptx_bytes=len(ptx), within_48k=meta.shared <= K.SHARED_MEMORY_LIMIT)
                    except Exception as e:  # recorded, and the run fails
                        row.update(error=f"{type(e).__name__}: {str(e)[:200]}", within_48k=False)
                    rows.append(row)
                    print(f"{shape['name']} sm_{arch} {dt} t{t}: {row.get('shared_bytes', row.get('error'))}", flush=True)
    return rows


def _write(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(path)
    print(f"wrote {path}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="JSON results file")
    ap.add_argument("--batches", default="1,8,64")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--warmup", type=int, default=25)
    ap.add_argument("--reps", type=int, default=50, help="timed samples per implementation")
    ap.add_argument("--inner", type=int, default=20, help="calls per timed sample")
    ap.add_argument("--no-graphs", action="store_true", help="launch from Python instead of replaying CUDA graphs")
    ap.add_argument("--tol", type=float, default=2e-2, help="max-abs tolerance (relative to max |ref|) for FP16")
    ap.add_argument("--dry-run", action="store_true", help="CPU + Triton interpreter, one tiny shape, batch 1-2")
    ap.add_argument("--ptx-only", action="store_true", help="CPU: AOT-compile every tactic at every stage shape")
    args = ap.parse_args(argv)

    models = tuple(m for m in args.models.split(",") if m)
    if args.ptx_only:
        rows = ptx_sweep(stage_shapes(models))
        _write(args.out, {"benchmark": "halo_attention_ptx", "environment": environment("cpu"),
                          "shared_memory_limit": K.SHARED_MEMORY_LIMIT, "tactics": K.TACTICS, "results": rows})
        return 0 if all(r["within_48k"] for r in rows) else 1
    if args.dry_run:
        device, shapes, batches, peak = torch.device("cpu"), tiny_shapes(), [1, 2], None
    else:
        if not torch.cuda.is_available():
            print("error: no CUDA device (use --dry-run for the CPU smoke test, --ptx-only for the AOT sweep)", file=sys.stderr)
            return 2
        device, shapes, batches = torch.device("cuda"), stage_shapes(models), [int(b) for b in args.batches.split(",")]
        peak = peak_bandwidth(device)
    result = {"benchmark": "halo_attention", "dry_run": args.dry_run, "environment": environment(device),
              "bandwidth": peak,
              "settings": {"dtype": "fp32" if args.dry_run else "fp16", "warmup": args.warmup, "reps": args.reps,
                           "inner": args.inner, "tolerance_rel": args.tol, "img_size": 256, "models": list(models),
                           "timing": "python-launch" if args.no_graphs or args.dry_run else "cuda-graph replay"},
              "implementations": {
                  "triton": "fused HaloAttention kernel: neighbourhoods read from the unpadded NCHW map",
                  "eager": "timm HaloAttn core: blocking, pad + unfold, q·kᵀ, PosEmbedRel, softmax, @v, fold",
                  "sdpa_unfold": "pad + unfold + PosEmbedRel, SDPA with the relative logits as additive mask, fold",
                  "sdpa_attention": "SDPA alone on pre-unfolded neighbourhoods and precomputed relative logits"},
              "targets": {"speedup_vs_eager_at_batch_64": 5.0, "speedup_vs_sdpa_unfold_at_batch_64": 2.0,
                          "hbm_fraction": 0.5},
              "results": []}
    status = 0
    for shape in shapes:
        for B in batches:
            row = bench_case(shape, B, device, args.dry_run, args, peak and peak["theoretical_GBps"] * 1e9)
            result["results"].append(row)
            _write(args.out, result)  # after every case: a crash keeps what was measured
            if "times_us" in row:
                t = row["times_us"]
                print(f"{shape['name']} B={B:<3} triton {t[row['triton_best']]['median_us']:9.1f} us ({row['triton_best']})  "
                      f"eager {t['eager']['median_us']:9.1f}  sdpa_unfold {t['sdpa_unfold']['median_us']:9.1f}  "
                      f"sdpa_attention {t['sdpa_attention']['median_us']:9.1f}", flush=True)
            else:
                status = 1
                print(f"{shape['name']} B={B}: {row['error']}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
