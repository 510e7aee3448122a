"""`bench --accuracy-data`: attach `vitdeploy accuracy`'s figures to a bench run.

The figures come from `vitdeploy.calibration.accuracy.compare_models` (imported
only when asked for): the artifact's final ONNX graph against its plain export,
both in ONNX Runtime. One headline number per run, in percent (labelled top-1
accuracy when the data has labels, else top-1 agreement with the export), is what
`compare` gates and `report` plots; the full figures are kept beside it.
"""
from __future__ import annotations

from vitdeploy.errors import VitdeployError

# Checked in order; the first numeric one found (at any nesting depth) is the headline.
HEADLINE_KEYS = ("candidate_top1", "top1_agreement")


def _flatten(d, prefix: str = "") -> dict:
    out = {}
    for k, v in (d.items() if isinstance(d, dict) else []):
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = float(v)
    return out


def headline(figures: dict) -> dict | None:
    """{"name", "value", "unit"}: the first of HEADLINE_KEYS present (compare_models reports percent)."""
    flat = _flatten(figures)
    for want in HEADLINE_KEYS:
        if want in flat:
            return {"name": want, "value": flat[want], "unit": "%"}
    return None


def headline_name(run: dict) -> str | None:
    acc = run.get("accuracy")
    if isinstance(acc, dict) and isinstance(acc.get("headline"), dict):
        return acc["headline"].get("name")
    return None


def headline_value(run: dict) -> float | None:
    acc = run.get("accuracy")
    if isinstance(acc, dict) and isinstance(acc.get("headline"), dict):
        v = acc["headline"].get("value")
        return float(v) if isinstance(v, (int, float)) else None
    return None


def load_compare_models():
    try:
        from vitdeploy.calibration.accuracy import compare_models
    except ImportError:
        raise VitdeployError("--accuracy-data needs vitdeploy.calibration.accuracy.compare_models, which this installation lacks",
                             "run 'vitdeploy accuracy' separately, or drop --accuracy-data") from None
    return compare_models


def check_possible(artifact) -> None:
    load_compare_models()
    if artifact is None or artifact.onnx is None:
        raise VitdeployError("--accuracy-data needs an artifact with an ONNX graph (accuracy runs in ONNX Runtime)",
                             "bench an export/build directory, or run 'vitdeploy accuracy' separately")


def measure(artifact, data_path: str) -> dict:
    """Accuracy record for a resolved artifact (`vitdeploy.bench.artifact.Artifact`)."""
    check_possible(artifact)
    compare_models = load_compare_models()
    from vitdeploy.calibration.accuracy import input_shape
    from vitdeploy.calibration.data import load_data, preprocessing_for

    cand = artifact.onnx
    ref = artifact.reference or cand
    prep = preprocessing_for(ref) or artifact.manifest.get("preprocessing")
    data = load_data(data_path, prep, input_shape(ref), show_progress=False)
    figures = compare_models(str(ref), str(cand), data)
    return {"data": str(data_path), "reference": str(ref), "candidate": str(cand), "runtime": "onnxruntime",
            "figures": figures, "headline": headline(figures)}
