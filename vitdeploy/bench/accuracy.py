"""`bench --accuracy-data`: attach `vitdeploy accuracy`'s figures to a bench run.

The figures come from `vitdeploy.calibration.accuracy.compare_models` (imported
only when asked for): the artifact's final ONNX graph against the plain export its
manifest lists, both in ONNX Runtime. A graph is never compared with itself: a plain
export has no reference, so it gets label accuracy only (or a one-line refusal
without labels).

One headline number per run, in percent, is what `compare` gates and `report` plots;
it carries a label saying what it is and on which data, e.g. "top-1 agreement vs the
FP32 export, calibration set (not held out)". The full figures are kept beside it.
"""
from __future__ import annotations

from pathlib import Path

from vitdeploy.errors import VitdeployError

# Checked in order; the first numeric one found (at any nesting depth) is the headline.
HEADLINE_KEYS = ("candidate_top1", "candidate_map50", "top1_agreement", "detection_agreement")
METRIC_NAMES = {
    "candidate_top1": "top-1 accuracy (labels)",
    "candidate_map50": "mAP@0.5 (box labels)",
    "top1_agreement": "top-1 agreement vs the FP32 export",
    "detection_agreement": "detection agreement vs the FP32 export (same class, IoU >= 0.5)",
}
DATA_ROLES = {
    "calibration": "calibration set (not held out)",
    "held-out": "held-out data",
    "unknown": "data of unknown provenance",
}
# A figure of this kind earns a ✔ at or above this many percent (`--min-agreement`).
DEFAULT_MIN_AGREEMENT = 99.0
AGREEMENT_METRICS = ("top1_agreement", "detection_agreement")


def _flatten(d, prefix: str = "") -> dict:
    out = {}
    for k, v in (d.items() if isinstance(d, dict) else []):
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = float(v)
    return out


def headline(figures: dict, data_role: str = "unknown") -> dict | None:
    """{"name", "value", "unit", "label", "data"}: the first of HEADLINE_KEYS present (percent)."""
    flat = _flatten(figures)
    for want in HEADLINE_KEYS:
        if want in flat:
            return {"name": want, "value": flat[want], "unit": "%", "data": data_role,
                    "label": f"{METRIC_NAMES[want]}, {DATA_ROLES.get(data_role, data_role)}"}
    return None


def headline_name(run: dict) -> str | None:
    acc = run.get("accuracy")
    if isinstance(acc, dict) and isinstance(acc.get("headline"), dict):
        return acc["headline"].get("name")
    return None


def headline_label(run: dict) -> str | None:
    """What the headline figure is, in words (schema /1 runs carry only the metric name)."""
    acc = run.get("accuracy")
    if not (isinstance(acc, dict) and isinstance(acc.get("headline"), dict)):
        return None
    h = acc["headline"]
    return h.get("label") or METRIC_NAMES.get(h.get("name"), h.get("name"))


def headline_value(run: dict) -> float | None:
    acc = run.get("accuracy")
    if isinstance(acc, dict) and isinstance(acc.get("headline"), dict):
        v = acc["headline"].get("value")
        return float(v) if isinstance(v, (int, float)) else None
    return None


def judged(name: str | None, value: float | None, weights: dict | None, min_agreement: float) -> bool:
    """Whether a figure earns a ✔: real weights and, for agreement, at least `min_agreement` percent."""
    from vitdeploy.weights import is_random

    if value is None or is_random(weights):
        return False
    return name not in AGREEMENT_METRICS or value >= min_agreement


def load_compare_models():
    try:
        from vitdeploy.calibration.accuracy import compare_models
    except ImportError:
        raise VitdeployError("--accuracy-data needs vitdeploy.calibration.accuracy.compare_models, which this installation lacks",
                             "run 'vitdeploy accuracy' separately, or drop --accuracy-data") from None
    return compare_models


def check_possible(artifact, data_path: str | None = None) -> None:
    """Everything that can be refused before minutes of timing."""
    load_compare_models()
    if artifact is None or artifact.onnx is None:
        raise VitdeployError("--accuracy-data needs an artifact with an ONNX graph (accuracy runs in ONNX Runtime)",
                             "bench an export/build directory, or run 'vitdeploy accuracy' separately")
    if artifact.reference is None and data_path is not None and not _has_labels(data_path):
        raise VitdeployError(
            f"{artifact.onnx.name} has no plain export beside it to compare with, and {Path(data_path).name} has no labels: "
            "comparing the graph with itself would print a meaningless 100%",
            "bench the build/export directory (its manifest names the export), or pass a .npz with 'labels'")


def _has_labels(data_path: str) -> bool:
    p = Path(data_path)
    if p.suffix.lower() != ".npz" or not p.is_file():
        return False
    import numpy as np

    from vitdeploy.calibration.data import LABEL_KEYS

    try:
        with np.load(p, allow_pickle=False) as z:
            return any(k in z.files for k in LABEL_KEYS)
    except Exception:
        return False


def _same_data(a, b) -> bool:
    from vitdeploy.artifact import sha256_file

    pa, pb = Path(a), Path(b)
    if not pa.exists() or not pb.exists():
        return False
    if pa.resolve() == pb.resolve():
        return True
    return pa.is_file() and pb.is_file() and sha256_file(pa) == sha256_file(pb)


def calibration_data(manifest: dict, base: Path | None) -> str | None:
    """Where the artifact's INT8 ranges came from, when its manifest says (build options, calibrate record)."""
    build = manifest.get("build") or {}
    if build.get("calibration_data"):
        return str(build["calibration_data"])
    if (build.get("options") or {}).get("calib_data"):  # older builds: the path as given, relative to where it ran
        return str(build["options"]["calib_data"])
    report = (base / "calibration.json") if base is not None else None
    if report is not None and report.is_file():
        import json

        try:
            rec = json.loads(report.read_text())
            return rec.get("data_resolved") or rec.get("data")
        except (OSError, ValueError, AttributeError):
            return None
    return None


def data_role(data_path: str, manifest: dict, base: Path | None, precision: str | None) -> str:
    """calibration / held-out / unknown: whether accuracy data is the set the INT8 ranges were fitted on."""
    calib = calibration_data(manifest, base)
    if calib is not None:
        return "calibration" if _same_data(data_path, calib) else "held-out"
    if precision is not None and "int8" not in precision:
        return "held-out"  # nothing was fitted to data: any data is independent of the artifact
    return "unknown"


def measure(artifact, data_path: str) -> dict:
    """Accuracy record for a resolved artifact (`vitdeploy.bench.artifact.Artifact`)."""
    check_possible(artifact, data_path)
    compare_models = load_compare_models()
    from vitdeploy.calibration.accuracy import input_shape
    from vitdeploy.calibration.data import load_data, preprocessing_for
    from vitdeploy.weights import from_manifest

    cand = artifact.onnx
    ref = artifact.reference  # the plain export, never `cand`; None: labels only
    prep = preprocessing_for(cand) or artifact.manifest.get("preprocessing")
    data = load_data(data_path, prep, input_shape(cand), show_progress=False)
    figures = compare_models(str(ref) if ref is not None else None, str(cand), data)
    role = data_role(data_path, artifact.manifest, artifact.base, artifact.precision)
    return {"data": str(data_path), "data_role": role, "reference": str(ref) if ref is not None else None,
            "candidate": str(cand), "runtime": "onnxruntime", "weights": from_manifest(artifact.manifest),
            "figures": figures, "headline": headline(figures, role)}
