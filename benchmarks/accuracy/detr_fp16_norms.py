"""Deformable DETR in FP16: box error with the normalisations (GroupNorm as InstanceNormalization) in FP16 vs FP32.

    python benchmarks/accuracy/detr_fp16_norms.py            # -> benchmarks/results/detr_fp16_norms.json

The reduced configuration (2+2 layers, d_model 64, ResNet-18; random weights, seed 0) at 256x256 on
scikit-image's sample photographs, exported and verified as `vitdeploy export` does, then converted with
vitdeploy's FP16 policy twice: normalisations FP32 (the default since issue 12) and, as before,
InstanceNormalization/GroupNormalization in FP16. Each FP16 graph is compared with the FP32 graph in ONNX
Runtime: pred_boxes (normalised cx, cy, w, h; also in pixels at 256) and logits. With random weights this
is a numerical comparison, not a detection metric (the honest-figures work adds one).

ONNX Runtime's CPU kernel computes an FP16 InstanceNormalization in FP32 and rounds the result (the script
checks that on one tensor and records it), so on the CPU the two policies give the same boxes; what
TensorRT's FP16 InstanceNormalization costs can only be measured with TensorRT. FP32 normalisations are the
conservative choice either way (LayerNorm's policy).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
SIZE = 256


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/detr_fp16_norms.json"))
    args = ap.parse_args()

    import onnx

    from benchmarks.graph_conformance import write_photos
    from vitdeploy.artifact import atomic_write_json
    from vitdeploy.calibration.data import load_data
    from vitdeploy.calibration.precision import DEFAULT_FP32_OPS, convert_fp16
    from vitdeploy.deploy.export_step import ExportOptions, export_verified, versions
    from vitdeploy.models import get_info
    from vitdeploy.onnxrt import session

    started = time.time()
    ort_internal_fp32 = _ort_instancenorm_fp16_is_fp32()
    with tempfile.TemporaryDirectory(prefix="vitdeploy-detr16-") as tmp:
        tmp = Path(tmp)
        path = tmp / "detr.onnx"
        _, fields, parity = export_verified(get_info("deformable_detr"), path,
                                            ExportOptions(img_size=(SIZE, SIZE), small=True))
        photos = write_photos(tmp / "photos")
        data = load_data(photos, fields["preprocessing"], [1, 3, SIZE, SIZE], show_progress=False)
        ref = [session(str(path)).run(None, {"input": x[None]}) for x in data.images]
        policies = {
            "norms_fp32": DEFAULT_FP32_OPS,
            "norms_fp16": tuple(o for o in DEFAULT_FP32_OPS if o not in ("InstanceNormalization", "GroupNormalization")),
        }
        results = {}
        for name, ops in policies.items():
            model, summary = convert_fp16(onnx.load(str(path)), fp32_ops=ops)
            sess = session(model)
            got = [sess.run(None, {"input": x[None]}) for x in data.images]
            box = np.concatenate([np.abs(g[1] - r[1]).reshape(-1) for g, r in zip(got, ref)])
            logit = np.concatenate([np.abs(g[0] - r[0]).reshape(-1) for g, r in zip(got, ref)])
            results[name] = {
                "fp32_ops": summary["fp32_ops"],
                "box_abs_error": {"max": float(box.max()), "mean": float(box.mean()), "p99": float(np.quantile(box, 0.99))},
                "box_abs_error_px": {"max": float(box.max() * SIZE), "mean": float(box.mean() * SIZE)},
                "logits_abs_error": {"max": float(logit.max()), "mean": float(logit.mean())},
            }
            print(name, results[name]["box_abs_error"], results[name]["fp32_ops"], flush=True)
    atomic_write_json(args.out, {
        "what": __doc__.strip().splitlines()[0], "model": "deformable_detr (reduced, random weights, seed 0)",
        "img_size": SIZE, "images": len(data), "export_parity": parity["worst"], "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "results": results,
        "ort_fp16_instancenorm_computes_in_fp32": ort_internal_fp32,
        "seconds": round(time.time() - started, 1)})
    print(f"wrote {args.out}")


def _ort_instancenorm_fp16_is_fp32() -> bool:
    """Does ORT's CPU FP16 InstanceNormalization equal FP32 InstanceNormalization rounded to FP16, bit for bit?"""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    x = (np.random.default_rng(0).standard_normal((1, 32, 50, 60)) * 30 + 100).astype(np.float16)

    def run(t, dt):
        n = helper.make_node("InstanceNormalization", ["x", "s", "b"], ["y"], epsilon=1e-5)
        g = helper.make_graph([n], "g", [helper.make_tensor_value_info("x", t, list(x.shape))],
                              [helper.make_tensor_value_info("y", t, list(x.shape))],
                              [numpy_helper.from_array(np.ones(32, dt), "s"), numpy_helper.from_array(np.zeros(32, dt), "b")])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(None, {"x": x.astype(dt)})[0]

    return bool(np.array_equal(run(TensorProto.FLOAT16, np.float16), run(TensorProto.FLOAT, np.float32).astype(np.float16)))


if __name__ == "__main__":
    main()
