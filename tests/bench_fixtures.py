"""Synthetic bench runs in the current schema, shared by the compare/report/schema tests."""
from __future__ import annotations

import copy

import numpy as np

from vitdeploy.bench import schema
from vitdeploy.bench.runner import Settings, batch_record


def identity(**changes) -> dict:
    """A vit_t ORT run's identity; `changes` replace whole fields (e.g. input=..., weights=...)."""
    ident = schema.make_identity(
        artifact_sha256="a" * 64,
        input={"name": "input", "shape": [3, 224, 224], "dtype": "float32"},
        batch_profile={"kind": "dynamic"},
        model={"alias": "vit_t", "name": "vit_tiny_patch16_224", "reduced": False},
        weights={"kind": "checkpoint", "sha256": "c" * 64},
        plugins={"nodes": {}, "reference_executed": 0},
        threads={"intra_op": None, "usable_cores": 4},
    )
    ident.update(copy.deepcopy(changes))
    return ident


def samples(median: float, cv: float = 0.01, n: int = 201, seed: int = 0) -> list[float]:
    """`n` samples whose median is exactly `median` and whose spread is about `cv` (symmetric, shuffled)."""
    q = np.linspace(-1.7, 1.7, n)  # symmetric: the middle value is 0
    np.random.default_rng(seed).shuffle(q)
    return list(median * (1.0 + cv * q))


QUIET = {"wall_s": 3.0, "load_avg": {"start": [0.1, 0.1, 0.1], "end": [0.2, 0.1, 0.1]}, "cpus": 4, "busy_share": 0.25,
         "own_share": 0.25, "others_share": 0.0, "steal_share": 0.0, "cpu_mhz": {"start": 3000.0, "end": 3000.0,
                                                                                 "source": "scaling_cur_freq"}}


def loaded(others: float = 0.4, **extra) -> dict:
    """Conditions of a run that shared the machine: `others` of the CPUs used by other work."""
    return {**copy.deepcopy(QUIET), "others_share": others, "busy_share": 0.25 + others, **extra}


def make_run(model="vit_t", backend="ort", precision="fp32", medians=(2.0, 9.0), batches=(1, 8), accuracy=None,
             cv=0.01, n=201, seed=0, device="cpu", ident: dict | None = None, conditions: dict | None = QUIET) -> dict:
    """A run with `medians` per batch; `ident` replaces identity fields (e.g. {"input": ...}); `conditions`
    is every batch's machine record (None: not recorded)."""
    results = [batch_record(b, samples(m, cv, n, seed + i), [], {"used": False}, device)
               for i, (b, m) in enumerate(zip(batches, medians))]
    for r in results:
        r["conditions"] = copy.deepcopy(conditions)
    acc = None
    if accuracy is not None:
        acc = {"headline": {"name": "top1_agreement", "value": accuracy, "unit": "%", "data": "held-out",
                            "label": "top-1 agreement vs the FP32 export, held-out data"}}
    return {"model": model, "artifact": None, "backend": backend, "device": device, "precision": precision,
            "mode": "compute", "settings": Settings(0, 0.1, 5).to_dict(), "timing": {"clock": "perf_counter"},
            "identity": identity(**{"model": {"alias": model, "name": None, "reduced": False}, **(ident or {})}),
            "warnings": [], "results": results, "skipped": [], "accuracy": acc, "interrupted": False}


def make_doc(*runs, env=None) -> dict:
    return schema.new_document(env or {"cpu": {"model": "test cpu"}, "versions": {}}, list(runs) or [make_run()])


def write(path, *runs, env=None, schema_id=None) -> str:
    import json

    doc = make_doc(*runs, env=env)
    if schema_id:
        doc["schema"] = schema_id
        path.write_text(json.dumps(doc))
    else:
        schema.write(path, doc)
    return str(path)
