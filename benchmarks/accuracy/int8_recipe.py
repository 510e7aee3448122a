"""The INT8 recipe before/after issue 12 on the trained digits Swin and ViT: top-1 and where the Q/DQ sit.

    python benchmarks/accuracy/int8_recipe.py --label after                       # this tree
    git archive d9dc7db | tar -x -C /tmp/before && \\
      PYTHONPATH=/tmp/before python benchmarks/accuracy/int8_recipe.py --label before

Each run adds `runs[label]` to benchmarks/results/digits_int8_recipe.json (others are kept): FP32 / FP16 /
INT8 (entropy, percentile, minmax; 256 training images) top-1 on the 450 held-out digits through ONNX
Runtime, plus per INT8 graph the Q/DQ count per consumer op type, how many attention BMMs read DQ outputs,
and the activation scales that are FP16 subnormals. `vitdeploy` is whatever PYTHONPATH imports, so the
same script measures the old code ("before": attention BMMs and Softmax output quantized, Softmax FP32)
and the new ("after": only Linear/Conv inputs, Softmax FP16).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import digits  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FP16_TINY = float(np.finfo(np.float16).tiny)


def placement(model) -> dict:
    """Q/DQ per consumer op type, attention BMMs fed by DQ, activation scales (written here so that the
    "before" run, whose vitdeploy has no lint module, measures the same way)."""
    import onnx

    init = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    per_op: dict[str, Counter] = defaultdict(Counter)
    bmm_quantized = 0
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        dq = [producer[i] for i in n.input if i in producer and producer[i].op_type == "DequantizeLinear"]
        if not dq:
            continue
        per_op[n.op_type]["nodes"] += 1
        per_op[n.op_type]["dequantize"] += len(dq)
        per_op[n.op_type]["quantize"] += sum(1 for d in dq if d.input[0] in producer
                                             and producer[d.input[0]].op_type == "QuantizeLinear")
        if n.op_type == "MatMul" and len(dq) == 2 and not any(d.input[0] in init for d in dq):
            bmm_quantized += 1
    scales = []
    softmax_out = {n.output[0] for n in model.graph.node if n.op_type == "Softmax"}
    casts = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Cast"}
    softmax_q = 0
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[1] in init:
            scales.append(float(onnx.numpy_helper.to_array(init[n.input[1]]).astype(np.float32).min()))
            softmax_q += n.input[0] in softmax_out or casts.get(n.input[0]) in softmax_out
    return {"qdq_per_op": {k: dict(v) for k, v in sorted(per_op.items())}, "attention_bmms_quantized": bmm_quantized,
            "softmax_outputs_quantized": int(softmax_q), "activation_scale_min": min(scales) if scales else None,
            "activation_scales_subnormal_fp16": sum(1 for s in scales if 0 < s < FP16_TINY)}


def measure(arch: str, workdir: Path, calib_images: int) -> dict:
    import onnx

    import vitdeploy
    from vitdeploy.calibration.accuracy import accuracy_points, compare_logits, run_model
    from vitdeploy.calibration.data import CalibrationData
    from vitdeploy.calibration.precision import convert_fp16
    from vitdeploy.calibration.quantization import quantize_int8

    xtr, _, xte, yte = digits.dataset()
    test = CalibrationData(xte, yte, "digits held-out split")
    calib = CalibrationData(xtr[:calib_images], None, "digits training split")
    path = digits.export(arch, workdir / f"digits_{arch}.onnx")
    fp32 = run_model(str(path), test, batch=64)
    top1 = accuracy_points(fp32, yte)
    out = {"vitdeploy": str(Path(vitdeploy.__file__).parent), "fp32": {"top1": top1}}

    def entry(logits):
        cmp = compare_logits(fp32, logits)
        t = accuracy_points(logits, yte)
        return {"top1": t, "drop_points": top1 - t, "top1_agreement": cmp["top1_agreement"],
                "max_abs_error": cmp["max_abs_error"]}

    fp16, summary = convert_fp16(onnx.load(str(path)))
    out["fp16"] = {**entry(run_model(fp16, test, batch=64)), "fp32_ops": summary["fp32_ops"]}
    for method in ("entropy", "percentile", "minmax"):
        qdq, _, s = quantize_int8(path, calib, method, show_progress=False)
        out[f"int8_{method}"] = {**entry(run_model(qdq, test, batch=64)), "int8_nodes": len(s["int8_nodes"]),
                                 "quantize_linear": s["quantize_linear"], "dequantize_linear": s["dequantize_linear"],
                                 "fp32_ops": s["precision"]["fp32_ops"], **placement(qdq)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--label", required=True, help="e.g. before / after")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/digits_int8_recipe.json"))
    ap.add_argument("--calib-images", type=int, default=256)
    ap.add_argument("--commit", help="Record this commit (a `git archive` snapshot has no .git).")
    args = ap.parse_args()

    import vitdeploy
    from vitdeploy.deploy.export import versions

    src = Path(vitdeploy.__file__).resolve().parents[1]
    started = time.time()
    run = {"vitdeploy_tree": str(src), "git_commit": args.commit or _commit(src), "versions": versions(),
           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "calibration_images": args.calib_images,
           "test_images": 450, "models": {}}
    with tempfile.TemporaryDirectory(prefix="vitdeploy-recipe-") as tmp:
        for arch in ("vit", "swin"):
            run["models"][arch] = measure(arch, Path(tmp), args.calib_images)
            r = run["models"][arch]
            print(arch, {k: round(v["top1"], 2) for k, v in r.items() if isinstance(v, dict) and "top1" in v}, flush=True)
    run["seconds"] = round(time.time() - started, 1)
    out = Path(args.out)
    record = json.loads(out.read_text()) if out.is_file() else {
        "what": "digits top-1 and Q/DQ placement, INT8 recipe before/after issue 12 (ONNX Runtime CPU)",
        "dataset": {"name": "sklearn.datasets.load_digits", "img_size": digits.IMG, "seed": digits.SEED,
                    "test_fraction": digits.TEST_FRACTION}, "runs": {}}
    record["runs"][args.label] = run
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out} (runs: {', '.join(record['runs'])})")


def _commit(tree: Path) -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=tree, capture_output=True, text=True,
                              check=True).stdout.strip() or None
    except Exception:
        return None


if __name__ == "__main__":
    main()
