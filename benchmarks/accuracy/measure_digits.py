"""Measure FP32 vs FP16 vs INT8 top-1 of the trained digits models (CPU, ONNX Runtime).

    python benchmarks/accuracy/measure_digits.py --out benchmarks/results/digits_precision.json
    python benchmarks/accuracy/measure_digits.py --no-smoke   # skip the swin_t/vit_t/halonet26t photo smoke check
    python benchmarks/accuracy/measure_digits.py --arch halonet   # one model; the others' records are kept

Needs the checkpoints from train_digits.py. Also records, as a smoke check only,
FP16/INT8 agreement with FP32 for swin_t and vit_t with random weights on
scikit-image's sample photographs (random weights say nothing about accuracy).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import digits  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "motorcycle_left", "immunohistochemistry", "hubble_deep_field")
TARGETS = {"fp16_drop_points": 0.1, "int8_entropy_drop_points": 1.0}
SMOKE = {"vit": "vit_t", "swin": "swin_t", "halonet": "halonet26t"}  # the full-size alias of each digits arch


def write_photos(folder: Path) -> list[str]:
    """scikit-image's sample photographs as PNG files (what a user's calibration folder looks like)."""
    import numpy as np
    from PIL import Image
    from skimage import data

    names = []
    for name in PHOTOS:
        try:
            img = getattr(data, name)()
        except Exception:  # some samples need pooch downloads; skip them offline
            continue
        img = np.asarray(img)
        if img.dtype != np.uint8:
            img = (255 * (img - img.min()) / max(float(img.max() - img.min()), 1e-9)).astype(np.uint8)
        Image.fromarray(img).convert("RGB").save(folder / f"{name}.png")
        names.append(name)
    return names


def smoke(alias: str, workdir: Path, photos: Path) -> dict:
    import onnx

    from vitdeploy.calibration.accuracy import compare_models
    from vitdeploy.calibration.data import load_data
    from vitdeploy.calibration.precision import convert_fp16
    from vitdeploy.calibration.quantization import quantize_int8
    from vitdeploy.deploy.export import BatchSpec
    from vitdeploy.deploy.export_step import ExportOptions, export_verified
    from vitdeploy.models import get_info

    info = get_info(alias)
    path = workdir / f"{alias}.onnx"
    _, fields, _ = export_verified(info, path, ExportOptions(batch=BatchSpec.parse("1:4:8")))
    shape = [1, *fields["preprocessing"]["input_size"]]
    data = load_data(photos, fields["preprocessing"], shape, show_progress=False)
    fp16, _ = convert_fp16(onnx.load(str(path)))
    qdq, _, summary = quantize_int8(path, data, "entropy", show_progress=False)
    return {
        "weights": "random (seed 0)",
        "images": len(data),
        "fp16_vs_fp32": compare_models(str(path), fp16, data, batch=4),
        "int8_entropy_vs_fp32": compare_models(str(path), qdq, data, batch=4),
        "int8_nodes": len(summary["int8_nodes"]),
        "note": "calibrated on the same photos; random weights, so agreement is a smoke check, not accuracy",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/digits_precision.json"))
    ap.add_argument("--calib-images", type=int, default=256)
    ap.add_argument("--no-smoke", action="store_true")
    ap.add_argument("--arch", choices=sorted(digits.ARCHS), action="append",
                    help="measure only these (repeatable); the other models' records in --out are kept")
    args = ap.parse_args()
    archs = sorted(args.arch or digits.ARCHS)

    from vitdeploy.artifact import atomic_write_json
    from vitdeploy.deploy.export_step import versions

    started = time.time()
    out = {
        "what": "top-1 on the scikit-learn digits held-out split, FP32 vs FP16 vs INT8 Q/DQ, ONNX Runtime CPU",
        "dataset": {"name": "sklearn.datasets.load_digits", "img_size": digits.IMG, "seed": digits.SEED,
                    "test_fraction": digits.TEST_FRACTION, "upscale": "bilinear, 3 channels, mean/std 0.5"},
        "targets": TARGETS,
        "versions": versions(),
        "git_commit": _git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "models": {},
    }
    this_run = {k: out[k] for k in ("git_commit", "created", "versions")}
    if args.arch and Path(args.out).is_file():  # a partial run updates the committed record
        import json

        previous = json.loads(Path(args.out).read_text())
        for key in ("models", "smoke_photos"):
            out[key] = previous.get(key) or ({} if key == "models" else None)
        out = {k: v for k, v in out.items() if v is not None}
        # the top-level commit/date/versions stay those of the full run; each new record carries its own
        out.update({k: previous[k] for k in ("git_commit", "created", "versions", "seconds") if k in previous})
    with tempfile.TemporaryDirectory(prefix="vitdeploy-digits-") as tmp:
        for arch in archs:
            res = digits.measure(arch, Path(tmp), calib_images=args.calib_images)
            if args.arch:
                res["measured"] = this_run
            r = res["results"]
            res["meets_targets"] = {
                "fp16": r["fp16"]["drop_points"] <= TARGETS["fp16_drop_points"],
                "int8_entropy": r["int8_entropy"]["drop_points"] <= TARGETS["int8_entropy_drop_points"],
            }
            out["models"][arch] = res
            print(arch, {k: round(v["top1"], 2) for k, v in r.items()})
        if not args.no_smoke:
            photos = Path(tmp) / "photos"
            photos.mkdir()
            out.setdefault("smoke_photos", {})["photos"] = write_photos(photos)
            for alias in (SMOKE[a] for a in archs):
                out["smoke_photos"][alias] = smoke(alias, Path(tmp), photos)
                if args.arch:
                    out["smoke_photos"][alias]["measured"] = this_run
                s = out["smoke_photos"][alias]
                print(alias, "fp16 agreement", s["fp16_vs_fp32"]["top1_agreement"], "int8 agreement",
                      s["int8_entropy_vs_fp32"]["top1_agreement"])
    if args.arch:
        out.setdefault("partial_runs", []).append({"archs": archs, "seconds": round(time.time() - started, 1)})
    else:
        out["seconds"] = round(time.time() - started, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, out)
    print(f"wrote {args.out}")


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except Exception:
        return None


if __name__ == "__main__":
    main()
