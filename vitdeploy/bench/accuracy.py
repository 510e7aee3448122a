"""`bench --accuracy-data`: attach `vitdeploy accuracy`'s figures to a bench run.

The figures come from `vitdeploy.calibration.accuracy.compare_models` (imported
only when asked for). One headline number per run, in percent, is what
`compare` gates and `report` plots; the full figures are kept beside it.
"""
from __future__ import annotations

from vitdeploy.errors import VitdeployError

# Checked in order; the first numeric one found (at any nesting depth) is the headline.
HEADLINE_KEYS = ("top1_agreement", "top1", "top1_accuracy", "accuracy", "agreement", "map", "mAP")


def _flatten(d, prefix="") -> dict:
    out = {}
    for k, v in (d.items() if isinstance(d, dict) else []):
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = float(v)
    return out


def headline(figures: dict) -> dict | None:
    """{"name", "value"} with the value in percent (fractions in [0, 1] are scaled by 100)."""
    flat = _flatten(figures)
    for want in HEADLINE_KEYS:
        for key, value in flat.items():
            if key.split(".")[-1] == want:
                pct = value * 100.0 if 0.0 <= value <= 1.0 and "pct" not in key and "percent" not in key else value
                return {"name": key, "value": pct, "unit": "%"}
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


def accuracy_record(figures, data_dir: str) -> dict:
    if hasattr(figures, "to_dict"):
        figures = figures.to_dict()
    if not isinstance(figures, dict):
        figures = {"value": figures}
    return {"data": str(data_dir), "figures": figures, "headline": headline(figures)}
