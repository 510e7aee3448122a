"""The bench result file: one versioned JSON layout that `bench` writes and `compare`/`report` read.

    {"schema": "vitdeploy.bench/1", "created": ..., "vitdeploy": ..., "environment": {...},
     "runs": [{"model", "artifact", "backend", "device", "precision", "mode", "settings",
               "timing", "accuracy", "interrupted", "skipped": [{"batch", "reason"}],
               "node": {"id", "hostname", "ip", "device_type"} and "environment": {...}  (optional:
               `vitdeploy matrix` says where each run was measured),
               "results": [{"batch", "iterations", "latency_ms": {min, mean, median, p90, p95,
                            p99, max, std, cv, count}, "throughput_ips", "host_enqueue_ms",
                            "cuda_graph", "samples_ms", "samples_total", "warnings"}]}]}

A reader accepts only its own major version: numbers from a different layout
must never be compared silently.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from vitdeploy.errors import VitdeployError

SCHEMA = "vitdeploy.bench/1"
SCHEMA_PREFIX = "vitdeploy.bench/"
SAMPLES_CAP = 2000  # raw per-iteration samples kept per batch (for distribution plots)

_STAT_KEYS = ("count", "min", "mean", "median", "p90", "p95", "p99", "max", "std", "cv")
_RUN_FIELDS = {
    "model": str,
    "backend": str,
    "device": str,
    "precision": str,
    "mode": str,
    "settings": dict,
    "timing": dict,
    "results": list,
    "skipped": list,
    "interrupted": bool,
}
_RESULT_FIELDS = {
    "batch": int,
    "iterations": int,
    "latency_ms": dict,
    "throughput_ips": (int, float),
    "samples_ms": list,
    "warnings": list,
}


def new_document(environment: dict, runs: list[dict] | None = None) -> dict:
    from vitdeploy import __version__

    return {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "vitdeploy": __version__,
        "environment": environment,
        "runs": list(runs or []),
    }


def run_device(run: dict) -> str:
    """cpu / cuda, and for a matrix run the device type it ran on ("cuda@h100"): an H100 and an L4
    run of the same model are different measurements, never one overwriting the other."""
    device_type = (run.get("node") or {}).get("device_type")
    return f"{run['device']}@{device_type}" if device_type else run["device"]


def run_key(run: dict) -> tuple[str, str, str, str, str]:
    """What makes two runs comparable: same model, backend, precision, device and timing mode."""
    return (run["model"], run["backend"], run["precision"], run_device(run), run["mode"])


def run_label(run: dict) -> str:
    return f"{run['model']} {run['backend']}/{run['precision']} ({run_device(run)}, {run['mode']})"


def run_environment(doc: dict, run: dict) -> dict:
    """Where a run was measured: its own record (runs merged from several machines), else the file's."""
    return run.get("environment") or doc["environment"]


def _fail(where: str, what: str) -> None:
    raise VitdeployError(f"bench result {where}: {what}", "write it again with 'vitdeploy bench --json FILE'")


def _check_fields(obj, fields: dict, where: str) -> None:
    if not isinstance(obj, dict):
        _fail(where, "is not an object")
    for name, typ in fields.items():
        if name not in obj:
            _fail(where, f"has no '{name}'")
        value = obj[name]
        allowed = typ if isinstance(typ, tuple) else (typ,)
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            _fail(f"{where}.{name}", f"has the wrong type ({type(value).__name__})")


def validate(doc, source: str = "document") -> dict:
    """Raise VitdeployError naming the first field that breaks the layout; return `doc` if it is valid."""
    if not isinstance(doc, dict) or "schema" not in doc:
        raise VitdeployError(f"{source} is not a vitdeploy bench result (no 'schema' field)",
                             "pass a file written by 'vitdeploy bench --json'")
    got = doc["schema"]
    if got != SCHEMA:
        if isinstance(got, str) and got.startswith(SCHEMA_PREFIX):
            raise VitdeployError(f"{source} uses schema {got}, this vitdeploy reads {SCHEMA}",
                                 "re-run the benchmark with this vitdeploy version")
        raise VitdeployError(f"{source} is not a vitdeploy bench result (schema {got!r})",
                             "pass a file written by 'vitdeploy bench --json'")
    where = Path(source).name if source != "document" else source
    _check_fields(doc, {"environment": dict, "runs": list}, where)
    for i, run in enumerate(doc["runs"]):
        _check_fields(run, _RUN_FIELDS, f"{where} runs[{i}]")
        for j, res in enumerate(run["results"]):
            at = f"{where} runs[{i}].results[{j}]"
            _check_fields(res, _RESULT_FIELDS, at)
            missing = [k for k in _STAT_KEYS if not isinstance(res["latency_ms"].get(k), (int, float))]
            if missing:
                _fail(f"{at}.latency_ms", f"lacks {', '.join(missing)}")
        for j, sk in enumerate(run["skipped"]):
            _check_fields(sk, {"batch": int, "reason": str}, f"{where} runs[{i}].skipped[{j}]")
        if "node" in run:
            _check_fields(run["node"], {"hostname": str}, f"{where} runs[{i}].node")
            for k in ("id", "device_type"):
                if not isinstance(run["node"].get(k), (str, type(None))):
                    _fail(f"{where} runs[{i}].node.{k}", "must be a string or null")
        if "environment" in run and not isinstance(run["environment"], dict):
            _fail(f"{where} runs[{i}].environment", "is not an object")
    return doc


def write(path: str | os.PathLike, doc: dict) -> None:
    """Validate, then write atomically (a crash never leaves half a result file)."""
    from vitdeploy.deploy.artifacts import atomic_write_json

    validate(doc)
    p = Path(path)
    if p.parent and not p.parent.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(p, doc)


def read(path: str | os.PathLike) -> dict:
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise VitdeployError(f"bench result {p} does not exist", "check the path") from None
    except IsADirectoryError:
        raise VitdeployError(f"{p} is a directory, not a bench result", "pass the JSON file") from None
    except UnicodeDecodeError:
        raise VitdeployError(f"{p} is not a JSON text file", "pass a file written by 'vitdeploy bench --json'") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise VitdeployError(f"{p} is not valid JSON ({e.msg} at line {e.lineno})",
                             "pass a file written by 'vitdeploy bench --json'") from None
    return validate(doc, str(p))


def merge(docs: list[dict]) -> dict:
    """One document holding the runs of several (e.g. one per matrix cell); environment of the first."""
    if not docs:
        raise ValueError("nothing to merge")
    out = dict(docs[0])
    out["runs"] = [r for d in docs for r in d["runs"]]
    return validate(out)
