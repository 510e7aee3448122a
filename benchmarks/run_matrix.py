#!/usr/bin/env python
"""Run the model matrix in benchmarks/matrix.toml and merge the results into one bench JSON.

    python benchmarks/run_matrix.py --suite trt --out benchmarks/results/matrix_trt.json
    python benchmarks/run_matrix.py --dry-run

Every cell runs the `vitdeploy` CLI in a subprocess (exactly what a user would
type), so one failing cell (an out-of-memory build, a missing calibration set)
is reported and the others still run. Cells whose artifact already exists in
--work are not rebuilt unless --rebuild is given.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SUITE_KEYS = {"name", "backend", "device", "prepare", "models", "precisions", "batches", "warmup_ms", "duration_s",
              "min_iters", "mode", "dynamic_batch", "calib_data"}
PREPARE = ("build", "export", "none")


@dataclass
class Cell:
    suite: str
    model: str
    precision: str
    prepare: list[str] | None  # command that makes the artifact, or None
    bench: list[str]
    json: Path
    artifact: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.suite}/{self.model}/{self.precision}"


def load_matrix(path: Path) -> tuple[dict, list[dict]]:
    data = tomllib.loads(Path(path).read_text())
    defaults = data.get("defaults", {})
    suites = data.get("suite", [])
    if not suites:
        raise SystemExit(f"{path}: no [[suite]] tables")
    for s in suites:
        unknown = set(s) - SUITE_KEYS
        if unknown:
            raise SystemExit(f"{path}: suite {s.get('name', '?')} has unknown keys {sorted(unknown)}")
        for key in ("name", "backend", "models", "precisions"):
            if key not in s:
                raise SystemExit(f"{path}: a suite lacks '{key}'")
        if s.get("prepare", "none") not in PREPARE:
            raise SystemExit(f"{path}: suite {s['name']}: prepare must be one of {PREPARE}")
    return defaults, suites


def vitdeploy_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("vitdeploy")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("vitdeploy")
    return [found] if found else [sys.executable, "-c", "import sys; from vitdeploy.cli import main; sys.exit(main())"]


def plan(defaults: dict, suites: list[dict], work: Path, results: Path, *, only: list[str] | None = None,
         models: list[str] | None = None, calib_data: str | None = None) -> list[Cell]:
    """Expand suites into cells with their exact commands (nothing runs here)."""
    vd = vitdeploy_cmd()
    cells = []
    for s in suites:
        if only and s["name"] not in only:
            continue
        cfg = {**defaults, **s}
        batches = ",".join(str(b) for b in cfg.get("batches", [1]))
        for model in s["models"]:
            if models and model not in models:
                continue
            for prec in s["precisions"]:
                out = work / s["name"] / f"{model}_{prec}"
                js = results / f"{s['name']}_{model}_{prec}.json"
                bench = [*vd, "bench"]
                prepare = None
                notes = []
                kind = cfg.get("prepare", "none")
                if kind == "none":
                    bench += ["--model", model, "--backend", s["backend"], "--precision", prec]
                else:
                    if kind == "build":
                        prepare = [*vd, "build", "--model", model, "-o", str(out), "--dynamic-batch", cfg["dynamic_batch"]]
                        if prec == "fp16":
                            prepare.append("--fp16")
                        elif prec == "int8":
                            data = calib_data or cfg.get("calib_data")
                            if not data:
                                notes.append("int8 needs calibration data: set calib_data or pass --calib-data")
                            prepare += ["--int8", "--calib-data", data or "MISSING"]
                    else:
                        if prec != "fp32":
                            notes.append("export makes fp32 graphs only; use prepare = \"build\" for other precisions")
                        prepare = [*vd, "export", "--model", model, "-o", str(out), "--dynamic-batch", cfg["dynamic_batch"]]
                    bench += [str(out), "--backend", s["backend"]]
                if cfg.get("device"):
                    bench += ["--device", cfg["device"]]
                bench += ["--batch-sizes", batches, "--warmup-ms", str(cfg.get("warmup_ms", 200)),
                          "--duration-s", str(cfg.get("duration_s", 3.0)), "--min-iters", str(cfg.get("min_iters", 10)),
                          "--mode", cfg.get("mode", "compute"), "--json", str(js)]
                cells.append(Cell(s["name"], model, prec, prepare, bench, js, out if prepare else None, notes))
    return cells


def run_cell(cell: Cell, rebuild: bool) -> str | None:
    """Run one cell; None on success, else why it failed."""
    if cell.notes:
        return "; ".join(cell.notes)
    if cell.prepare and (rebuild or not (cell.artifact / "manifest.json").is_file()):
        if cell.artifact.exists():
            shutil.rmtree(cell.artifact)
        rc = subprocess.run(cell.prepare).returncode
        if rc == 4:
            return "TensorRT is not available, so no engine was built (exit 4)"
        if rc != 0:
            return f"{cell.prepare[1]} failed (exit {rc})"
    rc = subprocess.run(cell.bench).returncode
    if rc != 0:
        return f"bench failed (exit {rc})"
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=ROOT / "benchmarks" / "matrix.toml")
    p.add_argument("--suite", action="append", help="Run only this suite (repeatable).")
    p.add_argument("--model", action="append", help="Run only this model (repeatable).")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "matrix.json")
    p.add_argument("--work", type=Path, default=ROOT / "build" / "matrix", help="Where artifacts are built.")
    p.add_argument("--calib-data", help="Calibration data for int8 cells.")
    p.add_argument("--rebuild", action="store_true", help="Rebuild artifacts that already exist.")
    p.add_argument("--dry-run", action="store_true", help="Print the commands and exit.")
    args = p.parse_args(argv)

    defaults, suites = load_matrix(args.config)
    cell_dir = args.out.parent / (args.out.stem + "_cells")
    cells = plan(defaults, suites, args.work, cell_dir, only=args.suite, models=args.model, calib_data=args.calib_data)
    if not cells:
        print("no cell matches --suite/--model", file=sys.stderr)
        return 2
    if args.dry_run:
        for c in cells:
            print(f"# {c.name}" + (f"  ({'; '.join(c.notes)})" if c.notes else ""))
            if c.prepare:
                print(" ".join(c.prepare))
            print(" ".join(c.bench))
        return 0

    from vitdeploy.bench import schema

    cell_dir.mkdir(parents=True, exist_ok=True)
    failures = {}
    try:
        for i, c in enumerate(cells, 1):
            print(f"\n[{i}/{len(cells)}] {c.name}", flush=True)
            why = run_cell(c, args.rebuild)
            if why:
                failures[c.name] = why
                print(f"  skipped: {why}", flush=True)
    except KeyboardInterrupt:
        print("\ninterrupted: merging the cells finished so far", file=sys.stderr)
    docs = [schema.read(c.json) for c in cells if c.json.is_file() and c.name not in failures]
    if docs:
        schema.write(args.out, schema.merge(docs))
        print(f"\nwrote {args.out} ({len(docs)} of {len(cells)} cells)")
    for name, why in failures.items():
        print(f"  {name}: {why}")
    return 0 if docs and not failures else (1 if docs else 3)


if __name__ == "__main__":
    sys.exit(main())
