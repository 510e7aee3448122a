"""What comes back from the cells, under -o DIR, and the one merged bench file.

    DIR/cells/SUITE/DEVICE_TYPE/MODEL_PRECISION/  bench.json, manifest.json, build.log, bench.log,
                                                  model.plan (up to --max-plan-mb), cell.json
    DIR/prepare/ID/                               manifest.json, prepare.log, prepare.json
    DIR/summary.json                              every cell: status, node, seconds, reason, log tail
    DIR/bench.json (or --json FILE)               the cells' runs merged: vitdeploy.bench/3

A cell is written as soon as it finishes (files first, cell.json last), so Ctrl-C or a lost
driver keeps every finished cell, and `--resume` skips exactly the cells whose cell.json says
done for the same spec with a readable bench.json.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from vitdeploy.artifact import atomic_write_bytes, atomic_write_json
from vitdeploy.errors import VitdeployError
from vitdeploy.matrix.plan import Cell, Plan, Prepare

SUMMARY_SCHEMA = "vitdeploy.matrix/1"


class Store:
    def __init__(self, out: Path, plan: Plan):
        self.out = out
        self.plan = plan
        self.cells: dict[str, dict] = {}  # id -> record (no file bodies)
        self.prepares: dict[str, dict] = {}

    def cell_dir(self, cell: Cell) -> Path:
        return self.out / "cells" / cell.dirname

    def finished_before(self, cell: Cell) -> dict | None:
        """The record of an earlier run of this exact cell that succeeded, else None."""
        from vitdeploy.bench import schema

        d = self.cell_dir(cell)
        try:
            rec = json.loads((d / "cell.json").read_text())
            if rec.get("status") != "done" or rec.get("spec") != cell.spec:
                return None
            schema.read(d / "bench.json")
        except (OSError, ValueError, VitdeployError):
            return None
        return rec

    def save_cell(self, cell: Cell, rec: dict, attempts: int | None = None) -> dict:
        d = self.cell_dir(cell)
        d.mkdir(parents=True, exist_ok=True)
        (d / "cell.json").unlink(missing_ok=True)  # until the new record is complete, the cell is not done
        for name in ("bench.json", "manifest.json", "build.log", "bench.log"):
            if name not in rec.get("files", {}):
                (d / name).unlink(missing_ok=True)
        for name, data in rec.get("files", {}).items():
            atomic_write_bytes(d / name, data)
        meta = {k: v for k, v in rec.items() if k != "files"}
        meta.update(spec=cell.spec, suite=cell.suite, model=cell.model, precision=cell.precision, backend=cell.backend,
                    device_type=cell.device_type.name, prepare=cell.prepare, dir=str(d), attempts=attempts,
                    finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        atomic_write_json(d / "cell.json", meta)
        self.cells[cell.id] = meta
        return meta

    def note_cell(self, cell: Cell, status: str, reason: str | None, **extra) -> dict:
        """A cell that did not run here (resumed, not runnable, cancelled): recorded in the summary only."""
        meta = {"id": cell.id, "status": status, "reason": reason, "suite": cell.suite, "model": cell.model,
                "precision": cell.precision, "backend": cell.backend, "device_type": cell.device_type.name,
                "prepare": cell.prepare, "dir": str(self.cell_dir(cell)), **extra}
        self.cells[cell.id] = meta
        return meta

    def save_prepare(self, prep: Prepare, rec: dict, attempts: int | None = None) -> dict:
        d = self.out / "prepare" / prep.id
        d.mkdir(parents=True, exist_ok=True)
        if rec.get("log"):
            atomic_write_bytes(d / "prepare.log", rec["log"])
        if rec.get("manifest"):
            atomic_write_json(d / "manifest.json", rec["manifest"])
        meta = {k: v for k, v in rec.items() if k not in ("log", "manifest")}
        meta.update(model=prep.model, precision=prep.precision, command=["vitdeploy", *prep.args], attempts=attempts)
        atomic_write_json(d / "prepare.json", meta)
        self.prepares[prep.id] = meta
        return meta

    def merged(self) -> dict | None:
        """Every done cell's runs (this run's and resumed ones) in one vitdeploy.bench/3 document."""
        from vitdeploy.bench import schema

        docs = []
        for cell in self.plan.cells:
            if (self.cells.get(cell.id) or {}).get("status") in ("done", "resumed"):
                docs.append(schema.read(self.cell_dir(cell) / "bench.json"))
        if not docs:
            return None
        doc = schema.merge(docs)
        doc["matrix"] = {"source": str(self.plan.source), "cells": len(docs), "of": len(self.plan.cells)}
        return doc

    def write_summary(self, *, ray: str | None, seconds: float, interrupted: bool, nodes: list[dict] | None) -> Path:
        counts: dict[str, int] = {}
        for rec in self.cells.values():
            counts[rec["status"]] = counts.get(rec["status"], 0) + 1
        summary = {
            "schema": SUMMARY_SCHEMA,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "matrix": str(self.plan.source),
            "ray": ray,
            "seconds": round(seconds, 2),
            "interrupted": interrupted,
            "counts": counts,
            "nodes": nodes,
            "devices": {name: d.to_dict() for name, d in self.plan.devices.items()},
            "prepares": self.prepares,
            "cells": [self.cells[c.id] for c in self.plan.cells if c.id in self.cells],
        }
        path = self.out / "summary.json"
        atomic_write_json(path, summary)
        return path
