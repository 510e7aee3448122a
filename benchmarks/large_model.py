"""Wall time and peak RSS per build step for a model over the 2 GiB protobuf limit (issue 23 part 2).

Two runs, each in its own process so one's memory does not count against the other:

  model: `vitdeploy build --model vit_huge_patch14_224 --fp16 --no-engine` (timm name, random weights)
  onnx:  the same model exported the way a user would (`torch.onnx.export(..., dynamo=True,
         external_data=True)`: model.onnx + model.onnx.data), then `vitdeploy build --onnx ... --fp16 --no-engine`

Peak RSS per step: the build runs in this process; each stage line (`vitdeploy.console.stage`, as the
pipeline's steps use it) resets the kernel's high-water mark (/proc/self/clear_refs, "5") on entry and reads
VmHWM on exit. A model over the external-data threshold is exported in a child process
(`deploy.export.export_verified_isolated`): the export step's peak is then the child's (getrusage
RUSAGE_CHILDREN). The target is a peak of at most 3x the FP32 weight size.

  python benchmarks/large_model.py --run model --out benchmarks/results/large_model_vith.json
  python benchmarks/large_model.py --run onnx --out benchmarks/results/large_model_vith.json   # merges

Measure on a machine with enough free memory (`free -g`); not part of the unit suite.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _hwm() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _reset_hwm() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def instrument(records: list[dict]) -> None:
    """Wrap the pipeline's stage() so each step records its wall time and peak RSS."""
    import vitdeploy.pipeline.steps as steps

    original = steps.stage

    @contextlib.contextmanager
    def measured(name: str):
        _reset_hwm()
        rss0, t0 = _rss(), time.perf_counter()
        with original(name) as st:
            try:
                yield st
            finally:
                records.append({"step": name, "wall_s": round(time.perf_counter() - t0, 2), "rss_start_bytes": rss0,
                                "peak_rss_bytes": _hwm()})

    steps.stage = measured


def user_export(name: str, folder: Path) -> dict:
    """The model exported as a user would, outside vitdeploy: model.onnx + model.onnx.data, in a child process.

    torch.onnx's dynamo export leaves about twice the weights alive in the process after it returns (torch
    2.14.1: held from C++, not freed by deleting the model and the program); that is the user's export's memory,
    and in the build's process it would be counted against every step."""
    out = subprocess.run([sys.executable, __file__, "--user-export", name, str(folder)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _user_export_here(name: str, folder: Path) -> dict:
    import timm
    import torch

    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    x = torch.randn(1, 3, 224, 224)
    _reset_hwm()
    t0 = time.perf_counter()
    with torch.no_grad():
        prog = torch.onnx.export(model, (x,), None, dynamo=True, opset_version=18, input_names=["input"],
                                 output_names=["logits"])
        prog.save(str(folder / "model.onnx"), external_data=True)
    return {"wall_s": round(time.perf_counter() - t0, 2), "peak_rss_bytes": _hwm(),
            "files": sorted(p.name for p in folder.iterdir())}


def run(kind: str, name: str) -> dict:
    import timm
    import torch

    from vitdeploy.pipeline import BuildOptions, run_build

    with torch.device("meta"):
        weights = sum(p.numel() * 4 for p in timm.create_model(name).parameters())
    records: list[dict] = []
    work = Path(tempfile.mkdtemp(prefix="vitdeploy-large-"))
    try:
        extra = {}
        if kind == "onnx":
            user = work / "user"
            user.mkdir()
            extra["user_export"] = user_export(name, user)
            import gc

            gc.collect()
            opts = BuildOptions(out_dir=work / "build", onnx=user / "model.onnx", fp16=True, no_engine=True)
        else:
            opts = BuildOptions(out_dir=work / "build", alias=name, fp16=True, no_engine=True)
        instrument(records)
        import resource

        children_before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        t0 = time.perf_counter()
        res = run_build(opts)
        wall = time.perf_counter() - t0
        children_after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        if children_after > children_before:  # the export ran in a child process (a model over the threshold)
            export = next(r for r in records if r["step"] == "export")
            export["child_process_peak_rss_bytes"] = children_after
            export["peak_rss_bytes"] = max(export["peak_rss_bytes"], children_after)
        files = {p.name: p.stat().st_size for p in sorted((work / "build").iterdir()) if p.is_file()}
        peak = max(r["peak_rss_bytes"] for r in records)
        return {
            "command": (f"vitdeploy build --model {name} --fp16 --no-engine" if kind == "model" else
                        f"vitdeploy build --onnx model.onnx --fp16 --no-engine (model.onnx + model.onnx.data from "
                        f"torch.onnx.export(dynamo=True, external_data=True) of timm {name})"),
            "fp32_weight_bytes": weights,
            "wall_s": round(wall, 2),
            "steps": [{**r, "peak_over_fp32_weights": round(r["peak_rss_bytes"] / weights, 2)} for r in records],
            "peak_rss_bytes": peak,
            "peak_over_fp32_weights": round(peak / weights, 2),
            "target_peak_over_fp32_weights": 3.0,
            "files": files,
            "parity": (res.manifest.get("export") or {}).get("parity", {}).get("worst"),
            "accuracy": {k: (res.manifest.get("accuracy") or {}).get(k) for k in ("top1_agreement", "cosine_min", "max_abs_error")},
            **extra,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def environment() -> dict:
    from vitdeploy.machine import tool_versions

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = None
    mem = next((ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")), "0")
    return {"device": f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores, "
                      f"{int(mem) // 2**20} GiB RAM (shared machine)",
            "load1_at_start": os.getloadavg()[0], "versions": tool_versions(("torch", "onnx", "onnxscript", "onnxruntime", "timm", "numpy")), "commit": commit,
            "external_data_threshold_bytes": __import__("vitdeploy.onnx_files", fromlist=["x"]).external_threshold()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", choices=["model", "onnx"])
    ap.add_argument("--user-export", nargs=2, metavar=("NAME", "FOLDER"), help=argparse.SUPPRESS)
    ap.add_argument("--model", default="vit_huge_patch14_224")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/large_model_vith.json")
    args = ap.parse_args(argv)
    if args.user_export:
        print(json.dumps(_user_export_here(args.user_export[0], Path(args.user_export[1]))))
        return 0
    if not args.run:
        ap.error("--run is required")
    env = environment()
    result = run(args.run, args.model)
    doc = json.loads(args.out.read_text()) if args.out.is_file() else {"benchmark": "large_model", "runs": {}}
    doc["what"] = ("wall time and peak RSS (VmHWM, reset per step) of each build step for a model over the 2 GiB "
                   "protobuf limit; target: peak RSS <= 3x the FP32 weight size")
    doc["runs"][args.run] = {**result, **env, "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("wall_s", "peak_rss_bytes", "peak_over_fp32_weights")}),
          [(s["step"], s["wall_s"], round(s["peak_rss_bytes"] / 2**30, 2)) for s in result["steps"]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
