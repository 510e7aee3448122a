"""Record the `swin` pass on the windowed encoders of issue 24 (CPU, ONNX Runtime, random weights).

    python benchmarks/rewrite/windowed_encoders.py --out benchmarks/results/rewrite_windowed_encoders.json
    python benchmarks/rewrite/windowed_encoders.py --full sam_vit_b --out /tmp/sam.json    # full size (1024 px)

For each alias: vitdeploy's builder (`--reduced` sizes by default, the full model with --full), an export
at static batch 1 on a non-square input (the full models at their own size), then the pass in plugin and
native mode. Recorded per run: attention blocks found / replaced, every Softmax left and why (the
census), the largest per-candidate difference from the subgraph it replaced, the rewritten graph vs
PyTorch (max-abs and relative), plugin node types, and the seconds each step took on this machine.
"""
from __future__ import annotations

import argparse
import collections
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

# alias -> (reduced input size, exporter): non-square, and each family's windows padded somewhere
MODELS = {
    "sam_vit_b": ((96, 160), "torchscript"),
    "mobile_sam": ((128, 160), "dynamo"),
    "hiera_t": ((64, 96), "dynamo"),
    "maxvit_t": ((64, 96), "torchscript"),
    "twins_svt_s": ((64, 96), "dynamo"),
}


def run(alias: str, full: bool, workdir: Path) -> dict:
    import numpy as np
    import onnx
    import torch

    from vitdeploy.deploy.export import BatchSpec, export_onnx
    from vitdeploy.deploy.rewrite.driver import run_passes
    from vitdeploy.models import build_model, get_info
    from vitdeploy.onnxrt import session
    from vitdeploy.parity import random_images

    info = get_info(alias)
    size, exporter = (info.input_size, info.exporters[0]) if full else MODELS[alias]
    torch.manual_seed(0)
    model = build_model(info, img_size=size, small=not full)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # position parameters start at zero in timm: make them matter
        for name, p in model.named_parameters():
            if any(k in name for k in ("rel_pos", "attention_biases", "relative_position", "pos_embed")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    for m in model.modules():
        if hasattr(m, "attention_bias_cache"):
            m.attention_bias_cache = {}
        if exporter == "dynamo" and hasattr(m, "fused_attn"):
            m.fused_attn = False  # the dynamo exporter cannot translate timm's SDPA on 3-D / 5-D q, k, v
    path = workdir / f"{alias}.onnx"
    x = random_images(1, size)
    started = time.perf_counter()
    export_onnx(model, torch.from_numpy(x), path, batch=BatchSpec.static(1), exporter=exporter, output_names=info.outputs)
    entry = {"alias": alias, "size": "full" if full else "reduced", "input": list(size), "exporter": exporter,
             "parameters": sum(p.numel() for p in model.parameters()),
             "export_seconds": round(time.perf_counter() - started, 1)}
    src = onnx.load(str(path))
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    for mode in ("plugin", "native"):
        started = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out, report = run_passes(src, ["swin"], mode)
        rep = report["passes"][0]
        got = session(out).run(None, {"input": x})[0]
        err = float(np.abs(got - ref).max())
        entry[mode] = {
            "found": rep["found"], "replaced": rep["replaced"],
            "max_abs_vs_subgraph": max((c.get("max_abs") or 0.0 for c in rep["candidates"]), default=None),
            "refusals": [str(w.message) for w in caught if str(w.message).startswith("swin:")],
            "softmax_left": report["softmax"],
            "softmax_left_by_kind": dict(collections.Counter(c["kind"] for c in report["softmax"])),
            "plugin_nodes": dict(collections.Counter(n.op_type for n in out.graph.node if n.domain == "vitdeploy")),
            "whole_graph_vs_export": report.get("whole_graph", {}).get("passed"),
            "vs_pytorch": {"max_abs": err, "ref_max_abs": float(np.abs(ref).max()),
                           "relative": err / max(float(np.abs(ref).max()), 1e-30)},
            "rewrite_seconds": round(time.perf_counter() - started, 1),
        }
        print(f"{alias} ({entry['size']}, {exporter}) {mode}: {rep['replaced']}/{rep['found']} replaced, "
              f"{entry[mode]['softmax_left_by_kind']} left, vs PyTorch relative {entry[mode]['vs_pytorch']['relative']:.2e}",
              flush=True)
    return entry


def main(argv=None) -> int:
    import tempfile

    from benchmarks.kernels.timing import environment
    from vitdeploy.artifact import atomic_write_json
    from vitdeploy.deploy.export import versions

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/rewrite_windowed_encoders.json")
    ap.add_argument("--models", default=",".join(MODELS), help="aliases at their --reduced size")
    ap.add_argument("--full", default="", help="aliases at full size and their own input size (slow: minutes each)")
    args = ap.parse_args(argv)
    unknown = [a for a in [*args.models.split(","), *args.full.split(",")] if a and a not in MODELS]
    if unknown:
        ap.error(f"unknown alias {unknown[0]}; choose from {', '.join(MODELS)}")
    result = {"what": "the swin rewrite pass on the windowed-encoder aliases (random weights, CPU, ONNX Runtime)",
              "environment": environment("cpu"), "versions": versions(), "runs": []}
    ok = True
    with tempfile.TemporaryDirectory(prefix="vitdeploy-windowed-") as tmp:
        jobs = [(a, False) for a in args.models.split(",") if a] + [(a, True) for a in args.full.split(",") if a]
        for alias, full in jobs:
            entry = run(alias, full, Path(tmp))
            result["runs"].append(entry)
            ok &= all(entry[m]["found"] == entry[m]["replaced"] > 0 and entry[m]["vs_pytorch"]["relative"] <= 1e-4
                      and not any(c["kind"] in ("declined", "attention") for c in entry[m]["softmax_left"])
                      for m in ("plugin", "native"))
            atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
