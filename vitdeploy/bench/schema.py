"""The bench result file: one versioned JSON layout that `bench` writes and `compare`/`report` read.

    {"schema": "vitdeploy.bench/3", "created": ..., "vitdeploy": ..., "environment": {...},
     "runs": [{"model", "artifact", "backend", "device", "precision", "mode", "settings",
               "timing", "identity": {...}, "warnings": [...], "accuracy", "interrupted",
               "skipped": [{"batch", "reason"}],
               "node": {"id", "hostname", "ip", "device_type"} and "environment": {...}  (optional:
               `vitdeploy matrix` says where each run was measured),
               "results": [{"batch", "iterations", "latency_ms": {min, mean, median, p90, p95,
                            p99, max, std, cv, count}, "throughput_ips", "host_enqueue_ms",
                            "cuda_graph", "samples_ms", "samples_total", "warnings",
                            "conditions": {...} | null,
                            "paired": {...}  (optional: measured by `compare --run`)}],
               "interleaved": {"session", "role", "block_ms", "seed", "min_rounds"}  (optional)}]}

`conditions` (/3) is what the machine was doing while the batch was timed (load average, CPU
steal, other work's share of the CPUs, CPU/GPU clocks: `conditions.py`); `compare` will not
trust two separate runs whose conditions could produce the verdict by themselves. null only in
runs merged from /2 files (not recorded). `paired` holds an interleaved session's block medians
(`interleave.py`), from which `compare --run`'s verdict can be recomputed.

`identity` says what was measured, so that `compare` pairs only runs of the same thing:

    artifact_sha256   sha256 of the timed ONNX/plan (None for models built in PyTorch)
    input             {"name", "shape": [C, H, W], "dtype"} of the image input
    batch_profile     {"kind": "static", "batch"} | {"kind": "dynamic"[, "min", "opt", "max"]}
                      (min/opt/max only where they change the measured thing: TensorRT profiles)
    model             {"alias", "name", "reduced"} as resolved (reduced Deformable DETR or the real one)
    weights           {"kind": "random" | "checkpoint" | "pretrained" | "unknown", "seed"/"sha256"/"tag"}
    plugins           {"nodes": {op: count}, "reference_executed": N}: N plugin nodes ran on the CPU
                      Python reference (ONNX Runtime), which times the reference, not the plugin
    threads           {"intra_op", "usable_cores"} for CPU work, None on a GPU-only backend
    fp16_on_cpu       True when an FP16 graph ran on the CPU (casts and slow kernels, not FP16 speed)

`run_fields()` is the one list of run fields; `MUST_MATCH` the identity fields two runs must
share to be compared (only the code under test, and what it produces, may differ).

/3 added `conditions` (and the optional `paired`/`interleaved`); /2 files are read and compared
as before, their conditions unrecorded, and merge into /3 documents.
/2 replaced /1 because /1 runs cannot be compared honestly: they lack `identity`, and their
precision label came from file names. /1 files are still read (`report` plots them); `compare`
refuses them in one line. A reader accepts only the versions it knows: numbers from another
layout must never be compared silently.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from vitdeploy.errors import VitdeployError

SCHEMA = "vitdeploy.bench/3"
SCHEMA_PREFIX = "vitdeploy.bench/"
V1, V2 = "vitdeploy.bench/1", "vitdeploy.bench/2"
READABLE = (V1, V2, SCHEMA)  # /1: read for plots, refused by compare (no identity); /2: no conditions
WITH_IDENTITY = (V2, SCHEMA)
SAMPLES_CAP = 2000  # raw per-iteration samples kept per batch (for distribution plots and the gate's bootstrap)

_STAT_KEYS = ("count", "min", "mean", "median", "p90", "p95", "p99", "max", "std", "cv")
_RUN_FIELDS_V1 = {
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
_RUN_FIELDS = {**_RUN_FIELDS_V1, "identity": dict, "warnings": list}
_RESULT_FIELDS = {
    "batch": int,
    "iterations": int,
    "latency_ms": dict,
    "throughput_ips": (int, float),
    "samples_ms": list,
    "warnings": list,
}
IDENTITY_FIELDS = ("artifact_sha256", "input", "batch_profile", "model", "weights", "plugins", "threads", "fp16_on_cpu")
# What must be equal for two runs to be compared: everything that is not the code under test.
# artifact_sha256 and plugins.nodes may differ (the code under test produces them); they are reported.
MUST_MATCH = ("input", "batch_profile", "model", "weights", "threads", "fp16_on_cpu", "reference_executed")
_FIELD_NAMES = {
    "input": "input shape",
    "batch_profile": "batch profile",
    "model": "resolved model",
    "weights": "weights",
    "threads": "backend threads",
    "fp16_on_cpu": "FP16 on the CPU",
    "reference_executed": "plugin nodes on the CPU reference",
}


def run_fields() -> dict:
    """Field -> type of a run in this schema version (what `validate` checks; extra fields are allowed)."""
    return dict(_RUN_FIELDS)


def make_identity(*, artifact_sha256: str | None, input: dict | None, batch_profile: dict | None, model: dict,
                  weights: dict, plugins: dict | None = None, threads: dict | None = None,
                  fp16_on_cpu: bool = False) -> dict:
    """The identity record of a run; every backend builds it through here."""
    plugins = plugins or {"nodes": {}, "reference_executed": 0}
    return {"artifact_sha256": artifact_sha256, "input": input, "batch_profile": batch_profile, "model": model,
            "weights": weights, "plugins": {"nodes": dict(plugins.get("nodes") or {}),
                                            "reference_executed": int(plugins.get("reference_executed") or 0)},
            "threads": threads, "fp16_on_cpu": bool(fp16_on_cpu)}


def _identity_value(ident: dict, name: str):
    if name == "reference_executed":
        n = (ident.get("plugins") or {}).get("reference_executed") or 0
        return "yes" if n else "no"  # real vs reference; two reference runs may differ in the count
    return ident.get(name)


def _show(name: str, value) -> str:
    if value is None:
        return "unrecorded"
    if name == "input" and isinstance(value, dict):
        return f"{'x'.join(map(str, value.get('shape') or []))} {value.get('dtype', '')}".strip()
    if name == "batch_profile" and isinstance(value, dict):
        if value.get("kind") == "static":
            return f"static batch {value.get('batch')}"
        if "min" in value:
            return f"dynamic {value.get('min')}:{value.get('opt')}:{value.get('max')}"
        return "dynamic batch"
    if name == "model" and isinstance(value, dict):
        reduced = value.get("reduced")
        return f"{value.get('alias')}" + (" (reduced)" if reduced else " (full size)" if reduced is False else "")
    if name == "weights":
        from vitdeploy.weights import describe

        return describe(value)
    if name == "threads" and isinstance(value, dict):
        return f"{value.get('intra_op') or 'default'} intra-op threads on {value.get('usable_cores')} usable cores"
    if name == "fp16_on_cpu":
        return "yes" if value else "no"
    if name == "reference_executed":
        return str(value)
    return json.dumps(value, sort_keys=True)


def identity_difference(a: dict, b: dict) -> tuple[str, str, str] | None:
    """(field, value in a, value in b) of the first MUST_MATCH field that differs, or None."""
    ia, ib = a.get("identity") or {}, b.get("identity") or {}
    for name in MUST_MATCH:
        va, vb = _identity_value(ia, name), _identity_value(ib, name)
        if va != vb:
            return _FIELD_NAMES[name], _show(name, va), _show(name, vb)
    return None


def run_caveats(run: dict) -> list[str]:
    """Why a run's figures do not measure what their labels suggest, short enough for a plot: read from
    its identity (plugin nodes timed on the CPU reference, FP16 on the CPU), the same facts `bench`
    printed as warnings on the terminal."""
    ident = run.get("identity") or {}
    out = []
    plugins = ident.get("plugins") or {}
    n = plugins.get("reference_executed") or 0
    if n:
        ops = ", ".join(f"{op}×{c}" for op, c in sorted((plugins.get("nodes") or {}).items()))
        out.append(f"{n} plugin node{'s' if n != 1 else ''} ({ops}) timed on ONNX Runtime's CPU Python reference, "
                   "not the plugin")
    if ident.get("fp16_on_cpu"):
        out.append("FP16 graph on the CPU: casts and few FP16 kernels, not FP16 speed")
    return out


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
    """How runs pair up: same model, backend, precision, device and timing mode (then `identity` must match)."""
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
    if got not in READABLE:
        if isinstance(got, str) and got.startswith(SCHEMA_PREFIX):
            raise VitdeployError(f"{source} uses schema {got}, this vitdeploy reads {', '.join(READABLE[:-1])} and {READABLE[-1]}",
                                 "re-run the benchmark with this vitdeploy version")
        raise VitdeployError(f"{source} is not a vitdeploy bench result (schema {got!r})",
                             "pass a file written by 'vitdeploy bench --json'")
    where = Path(source).name if source != "document" else source
    fields = _RUN_FIELDS if got in WITH_IDENTITY else _RUN_FIELDS_V1
    _check_fields(doc, {"environment": dict, "runs": list}, where)
    for i, run in enumerate(doc["runs"]):
        _check_fields(run, fields, f"{where} runs[{i}]")
        if got in WITH_IDENTITY:
            missing = [k for k in IDENTITY_FIELDS if k not in run["identity"]]
            if missing:
                _fail(f"{where} runs[{i}].identity", f"lacks {', '.join(missing)}")
        for j, res in enumerate(run["results"]):
            at = f"{where} runs[{i}].results[{j}]"
            _check_fields(res, _RESULT_FIELDS, at)
            missing = [k for k in _STAT_KEYS if not isinstance(res["latency_ms"].get(k), (int, float))]
            if missing:
                _fail(f"{at}.latency_ms", f"lacks {', '.join(missing)}")
            if got == SCHEMA:
                if "conditions" not in res:
                    _fail(at, "has no 'conditions'")
                if not isinstance(res["conditions"], (dict, type(None))):
                    _fail(f"{at}.conditions", "must be an object or null")
                paired = res.get("paired")
                if paired is not None:
                    _check_fields(paired, {"session": str, "role": str, "block_iters": int, "block_medians_ms": list},
                                  f"{at}.paired")
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


def has_identity(doc: dict) -> bool:
    """Whether `compare` can pair this document's runs honestly (schema /2 and later)."""
    return doc.get("schema") in WITH_IDENTITY


def upgrade(doc: dict) -> dict:
    """A /2 document as /3 (conditions: null, i.e. not recorded); other versions unchanged."""
    if doc.get("schema") != V2:
        return doc
    import copy

    out = copy.deepcopy(doc)
    out["schema"] = SCHEMA
    for run in out["runs"]:
        for res in run["results"]:
            res.setdefault("conditions", None)
    return out


def require_identity(doc: dict, source: str) -> None:
    """compare's refusal of /1 files: their runs cannot be matched on what was measured."""
    if not has_identity(doc):
        raise VitdeployError(
            f"{source} uses schema {doc.get('schema')}, whose runs lack the identity fields compare needs "
            "(artifact sha256, input shape, batch profile, model, weights, plugins, threads)",
            "re-run the benchmark with this vitdeploy to write schema " + SCHEMA)


def write(path: str | os.PathLike, doc: dict) -> None:
    """Validate, then write atomically (a crash never leaves half a result file)."""
    from vitdeploy.artifact import atomic_write_json

    if doc.get("schema") != SCHEMA:
        raise VitdeployError(f"refusing to write schema {doc.get('schema')}", f"this vitdeploy writes {SCHEMA}")
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
    docs = [upgrade(d) for d in docs]  # /2 cells (an earlier matrix run resumed) join /3 ones
    versions = {d.get("schema") for d in docs}
    if len(versions) > 1:
        raise VitdeployError(f"cannot merge bench results of schemas {', '.join(sorted(map(str, versions)))}",
                             "re-run the older benchmarks with this vitdeploy")
    out = dict(docs[0])
    out["runs"] = [r for d in docs for r in d["runs"]]
    return validate(out)
