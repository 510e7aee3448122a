#!/usr/bin/env python
"""Swin-T end to end on a CUDA GPU: PyTorch eager vs torch.compile vs eager with vitdeploy's Triton WindowAttention.

    python benchmarks/e2e/swin_t_torch.py --out benchmarks/results/e2e_swin_t.json

Every variant is first checked against eager on the same input (max-abs and
cosine of the logits); a variant that does not match is recorded as failed and
not timed. Timing is `vitdeploy bench`'s: CUDA events, CUDA graph replay when
capture succeeds, warm-up by time, then at least --min-iters iterations over
--duration-s. The output is a `vitdeploy.bench/1` document, so `vitdeploy report`
and `vitdeploy compare` read it directly. Weights are random (no download):
latency does not depend on them.
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

VARIANTS = {
    "eager": "torch",
    "compile": "torch-compile",
    "vitdeploy-triton": "torch+vitdeploy-triton",
}
TOLERANCES = {  # (atol, rtol vs max|ref|, min cosine) per precision
    "fp32": (1e-4, 1e-3, 0.9999),
    "fp16": (1e-3, 2e-2, 0.999),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="JSON result path (vitdeploy.bench/1).")
    p.add_argument("--model", default="swin_t", help="Swin alias from the registry (default swin_t).")
    p.add_argument("--batch", default="1,8,32,64", help="Comma-separated batch sizes.")
    p.add_argument("--img-size", type=int, help="Square input size (multiple of 32; default the model's 224).")
    p.add_argument("--precision", choices=sorted(TOLERANCES), default="fp16")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"Subset of {','.join(VARIANTS)}.")
    p.add_argument("--warmup-ms", type=float, default=500.0)
    p.add_argument("--duration-s", type=float, default=3.0)
    p.add_argument("--min-iters", type=int, default=50)
    p.add_argument("--mode", choices=["compute", "end-to-end"], default="compute")
    p.add_argument("--no-cuda-graph", action="store_true", help="Time plain launches instead of graph replay.")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                   help="cpu only checks the wiring (eager/compile; the Triton variant needs CUDA).")
    args = p.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    return args


def build_variants(model, names: list[str], attention=None) -> dict:
    """name -> module. Copies are taken before any change, so each variant differs from eager in one way only."""
    import torch

    from swin_swap import swap_window_attention

    out = {}
    for name in names:
        if name == "eager":
            out[name] = model
        elif name == "compile":
            out[name] = torch.compile(copy.deepcopy(model))
        elif name == "vitdeploy-triton":
            m = copy.deepcopy(model)
            if swap_window_attention(m, attention=attention) == 0:
                raise SystemExit("no timm SwinTransformerBlock found to swap")
            out[name] = m
    return out


def check_parity(variants: dict, x, precision: str) -> dict:
    """name -> parity record of its logits against eager's on input `x`."""
    import torch

    from vitdeploy.parity import Tolerance, compare

    atol, rtol, cos = TOLERANCES[precision]
    tol = Tolerance(atol=atol, rtol=rtol, min_cosine=cos)
    eager = variants.get("eager")
    with torch.inference_mode():
        ref = (eager if eager is not None else next(iter(variants.values())))(x).float().cpu().numpy()
        records = {}
        for name, module in variants.items():
            got = module(x).float().cpu().numpy()
            records[name] = compare("logits", ref, got, tol).to_dict() | {"tolerance": tol.to_dict()}
    return records


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from vitdeploy.bench import environment, schema
    from vitdeploy.bench.backends.pytorch import ModuleBackend
    from vitdeploy.bench.runner import Settings, run_batches
    from vitdeploy.commands.bench import parse_batches, print_run
    from vitdeploy.models import build_model, get_info
    from vitdeploy.parity import random_images
    from vitdeploy.weights import for_model

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: this benchmark needs a CUDA GPU (PyTorch sees none); --device cpu only checks the wiring",
              file=sys.stderr)
        return 2
    if args.device == "cpu" and "vitdeploy-triton" in args.variants:
        print("error: the vitdeploy-triton variant needs CUDA; pass --variants eager,compile with --device cpu",
              file=sys.stderr)
        return 2
    batches = parse_batches(args.batch)
    info = get_info(args.model)
    if info.family != "swin":
        print(f"error: {args.model} is not a Swin model", file=sys.stderr)
        return 2
    dtype = {"fp32": torch.float32, "fp16": torch.float16}[args.precision]
    size = (args.img_size, args.img_size) if args.img_size else info.input_size
    torch.manual_seed(0)
    model = build_model(info, img_size=size, device=args.device).to(dtype).eval()
    variants = build_variants(model, args.variants)
    x = torch.from_numpy(random_images(2, size, seed=1)).to(args.device, dtype)
    parity = check_parity(variants, x, args.precision)
    env = environment.collect(args.device)
    settings = Settings(warmup_ms=args.warmup_ms, duration_s=args.duration_s, min_iters=args.min_iters)
    runs, failed = [], []
    for name, module in variants.items():
        be = ModuleBackend(module, name=VARIANTS[name], model=args.model, size=size,
                           precision=args.precision, device=args.device, cuda_graph=not args.no_cuda_graph,
                           weights=for_model(args.model), model_record={"alias": args.model, "name": info.name, "reduced": False})
        p = parity[name]
        print(f"{name}: parity vs eager max-abs {p['max_abs']:.3g}, cosine {p['cosine']:.6f} "
              f"({'ok' if p['passed'] else 'MISMATCH'})")
        if p["passed"]:
            run = run_batches(be, batches, args.mode, settings)
        else:
            failed.append(name)
            from vitdeploy.bench.runner import new_run

            run = new_run(be, args.mode, settings)
            run["skipped"] = [{"batch": b, "reason": "outputs do not match eager; not timed"} for b in batches]
        run["variant"] = name
        run["parity_vs_eager"] = p
        print_run(run, env)
        runs.append(run)
        if run["interrupted"]:
            break
    print_speedups(runs)
    schema.write(args.out, schema.new_document(env, runs))
    print(f"wrote {args.out}")
    return 3 if failed else (130 if any(r["interrupted"] for r in runs) else 0)


def speedups(runs: list[dict]) -> list[tuple[str, int, float]]:
    """(variant, batch, eager median / variant median) for every batch eager also measured."""
    eager = next((r for r in runs if r.get("variant") == "eager"), None)
    if eager is None:
        return []
    base = {r["batch"]: r["latency_ms"]["median"] for r in eager["results"]}
    out = []
    for run in runs:
        if run is eager:
            continue
        for r in run["results"]:
            if r["batch"] in base:
                out.append((run["variant"], r["batch"], base[r["batch"]] / r["latency_ms"]["median"]))
    return out


def print_speedups(runs: list[dict]) -> None:
    for variant, batch, s in speedups(runs):
        print(f"  {variant:>17} batch {batch:>3}: {s:.2f}x vs eager (median latency)")


if __name__ == "__main__":
    sys.exit(main())
