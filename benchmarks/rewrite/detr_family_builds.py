"""Every issue-25 alias through vitdeploy: the full-size models' deformable attention rewritten, and the
reduced models built to the engine step with FP16 and INT8 accuracy against FP32.

Part 1 (full size, CPU): each alias's published configuration (random weights, convs at fan-in scale as
`build` makes them) at a small input, exported with its exporter, rewritten in plugin mode (--msda-impl
stock, the default) and native mode; blocks found / replaced, what each became, per-block and whole-graph
errors, and the rewritten graph against PyTorch.

Part 2 (reduced, CLI): `vitdeploy build --model ALIAS --reduced --fp16`, then `--int8` (min-max calibration
on seeded random images) in the same directory (export and rewrite cached), to the engine step (no
TensorRT here: the build stops before it and prints the command); the manifest's rewrite, accuracy
(detection agreement, matched IoU, score deltas; Mask2Former: semantic-map agreement, mask IoU) and
post-processing records. Random weights: the figures show the pipeline works, not a model's accuracy.

    python benchmarks/rewrite/detr_family_builds.py --out benchmarks/results/detr_family_builds.json
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

ALIASES = ("rtdetr_r18", "rtdetr_r50", "rtdetr_v2_r18", "dfine_n", "dfine_s", "mask2former_swin_t")


def full_size(alias: str, size: int, workdir: Path) -> dict:
    """`size`: at least enough pixels that the encoder has the 300 tokens RT-DETR / D-FINE select queries from."""
    import onnx
    import torch

    from vitdeploy.deploy.export import export_onnx
    from vitdeploy.deploy.rewrite.driver import run_passes
    from vitdeploy.models import build_model, get_info
    from vitdeploy.onnxrt import session

    info = get_info(alias)
    torch.manual_seed(0)
    model = build_model(info, img_size=(size, size))
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    path = workdir / f"{alias}.onnx"
    started = time.perf_counter()
    res = export_onnx(model, x, path, output_names=info.outputs, exporter="torchscript" if "torchscript" in info.exporters else "auto")
    rec = {"alias": alias, "img": size, "exporter": res.exporter, "export_s": round(time.perf_counter() - started, 1),
           "config": {k: getattr(model.config, k, None) for k in ("d_model", "num_feature_levels", "decoder_n_points",
                                                                  "decoder_layers", "encoder_layers", "num_queries")},
           "modes": {}}
    with torch.no_grad():
        out = model(x)
    want = [getattr(out, n).numpy() for n in info.outputs]
    graph = onnx.load(str(path))
    for mode in ("plugin", "native"):
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rewritten, report = run_passes(graph, list(info.passes), mode, options={"msda_impl": "stock"})
        got = session(rewritten).run(None, {"input": x.numpy()})
        passes = {}
        for p in report["passes"]:
            passes[p["pass"]] = {"found": p["found"], "replaced": p["replaced"], "notes": p["notes"],
                                 "max_block_abs_err": max((c["max_abs"] for c in p["candidates"]), default=None),
                                 "emitted": sorted({c.get("emitted") for c in p["candidates"] if c.get("emitted")}),
                                 "refused": [c.get("reason") for c in p["candidates"] if not c["replaced"]]}
        rec["modes"][mode] = {
            "passes": passes, "whole_graph_passed": report.get("whole_graph", {}).get("passed"),
            "normalized": (report.get("normalized") or {}).get("normalized", 0),
            "max_abs_err_vs_pytorch": {n: float(np.abs(w - g).max()) for n, w, g in zip(info.outputs, want, got)},
            "plugin_nodes": sorted({n.op_type for n in rewritten.graph.node if n.domain not in ("", "ai.onnx")}),
            "seconds": round(time.perf_counter() - started, 1)}
        print(f"{alias:20s} {mode:7s} " + ", ".join(f"{k} {v['replaced']}/{v['found']}" for k, v in passes.items())
              + f"  vs PyTorch {max(rec['modes'][mode]['max_abs_err_vs_pytorch'].values()):.2g}", flush=True)
    return rec


def reduced_builds(alias: str, workdir: Path, size: int) -> dict:
    calib = workdir / "calib.npz"
    if not calib.exists():
        np.savez(calib, images=np.random.default_rng(0).standard_normal((8, 3, size, size)).astype(np.float32))
    out = workdir / f"build_{alias}"
    rec = {"alias": alias, "img": size}
    for label, extra in (("fp16", ["--fp16"]), ("int8", ["--int8", "--calib-data", str(calib), "--calib-method", "minmax"])):
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "vitdeploy", "build", "--model", alias, "--reduced", "--img-size", str(size),
                               "-o", str(out), *extra], cwd=REPO, capture_output=True, text=True)
        m = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").exists() else {}
        acc = m.get("accuracy") or {}
        keys = ("task", "detection_agreement", "matched_iou_mean", "matched_score_delta_max", "query_box_iou_mean",
                "score_delta_max", "segmentation_agreement", "query_mask_iou_mean", "class_prob_delta_max", "data")
        rec[label] = {
            "exit_code": proc.returncode, "seconds": round(time.perf_counter() - started, 1),
            "rewrite": {p["pass"]: f"{p['replaced']}/{p['found']}" for p in (m.get("rewrite") or {}).get("passes", []) if p["found"]},
            "plugins": (m.get("rewrite") or {}).get("plugins"),
            "precision": (m.get("precision") or {}).get("applied"),
            "accuracy_vs_fp32": {k: acc[k] for k in keys if k in acc},
            "engine_step": "stopped before the engine: no TensorRT here" if "engine skipped" in proc.stdout + proc.stderr else None,
            "error": (proc.stdout + proc.stderr).strip().splitlines()[-1][:300] if proc.returncode else None,
        }
        rec["postprocessing"] = m.get("postprocessing")
        print(f"{alias:20s} {label:5s} exit {proc.returncode}  {rec[label]['rewrite']}  "
              + json.dumps(rec[label]["accuracy_vs_fp32"])[:160], flush=True)
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--aliases", default=",".join(ALIASES))
    ap.add_argument("--full-size-img", type=int, default=128, help="input side of the full-size exports (CPU-sized)")
    ap.add_argument("--reduced-img", type=int, default=64)
    args = ap.parse_args()
    from benchmarks.fuzz.run import environment

    result = {"benchmark": "detr_family_builds", "environment": environment(), "full_size": [], "reduced_builds": []}
    out = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="vitdeploy-detr-") as tmp:
        for alias in args.aliases.split(","):
            size = 256 if alias == "dfine_n" else args.full_size_img  # strides 16/32 only: 128 gives 80 tokens < 300
            result["full_size"].append(full_size(alias, size, Path(tmp)))
            out.write_text(json.dumps(result, indent=2, default=str))
        for alias in args.aliases.split(","):
            result["reduced_builds"].append(reduced_builds(alias, Path(tmp), args.reduced_img))
            out.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
