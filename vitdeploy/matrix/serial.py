"""Run a plan here, one cell at a time (no Ray): what `vitdeploy matrix` does without --ray.

Each prepare runs when its first cell comes up and serves the cells after it; a failed prepare
fails its cells without running them. Ctrl-C stops the cell in progress (its child process is
terminated) and keeps the cells finished before it.
"""
from __future__ import annotations

from pathlib import Path

from vitdeploy.matrix import execute
from vitdeploy.matrix.plan import Cell, Plan
from vitdeploy.matrix.progress import Board
from vitdeploy.matrix.results import Store


def run(plan: Plan, cells: list[Cell], store: Store, board: Board, work: Path, *, max_plan_bytes: int) -> None:
    node = execute.node_info()
    prepared: dict[str, tuple[dict, Path | None]] = {}
    for cell in cells:
        prep_dir = None
        if cell.prepare is not None:
            if cell.prepare not in prepared:
                prep = plan.prepares[cell.prepare]
                board.prepare_started(prep.id, node["hostname"])
                rec, payload = execute.run_prepare(prep, work, node, pack=False)
                store.save_prepare(prep, rec, attempts=1)
                board.prepare_finished(prep.id, rec)
                prepared[prep.id] = (rec, Path(payload["dir"]) if payload else None)
            rec, prep_dir = prepared[cell.prepare]
            if prep_dir is None:
                board.finished(cell.id, store.note_cell(cell, "failed", f"prepare {cell.prepare} failed: {rec['reason']}",
                                                        log_tail=rec.get("log_tail")))
                continue
        board.started(cell.id, node["hostname"])
        rec = execute.run_cell(cell, prep_dir, work, node, max_plan_bytes=max_plan_bytes)
        board.finished(cell.id, store.save_cell(cell, rec, attempts=1))
