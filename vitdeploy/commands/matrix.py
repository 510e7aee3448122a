"""`vitdeploy matrix`: build and benchmark model x precision x device type, here or on a Ray cluster."""
from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path

import click

from vitdeploy.errors import VitdeployError

FAILED = ("failed", "lost", "cancelled", "not-run")
DEFAULT_WORK = "~/.cache/vitdeploy/matrix"  # expanded on each node
LOG_LINES_SHOWN = 6  # per failed cell on the console; summary.json keeps the longer tail


@click.command("matrix")
@click.argument("matrix_file", metavar="MATRIX.toml", type=click.Path(dir_okay=False))
@click.option("--suite", "suites", multiple=True, metavar="NAME", help="Run only this suite (repeatable).")
@click.option("--model", "models", multiple=True, metavar="ALIAS", help="Run only this model (repeatable).")
@click.option("--ray", "ray_address", metavar="auto|ADDRESS",
              help="Run on a Ray cluster: 'auto' (the one this machine belongs to), HOST:PORT or ray://HOST:PORT.")
@click.option("-o", "--output", "out_dir", default="build/matrix", show_default=True, type=click.Path(file_okay=False),
              help="Where results come back: cells/, prepare/, summary.json, bench.json.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Merged bench result (default DIR/bench.json).")
@click.option("--resume", is_flag=True, help="Skip cells whose results in DIR are complete for the same settings.")
@click.option("--dry-run", is_flag=True, help="Print the prepares and cells with their commands and resources; run nothing.")
@click.option("--work", metavar="DIR",
              help="Where each node keeps prepared artifacts and engines, reused by later runs "
                   "(default ~/.cache/vitdeploy/matrix; a shared filesystem saves copying).")
@click.option("--calib-data", help="Calibration data for INT8 cells (the same path on every node).")
@click.option("--max-plan-mb", type=click.FloatRange(min=0), default=256, show_default=True,
              help="Engine plans up to this size come back to DIR; larger ones stay on the node (path recorded).")
@click.option("--max-retries", type=click.IntRange(min=0), default=2, show_default=True,
              help="--ray: retries of a task lost with its worker or node (a failing command is never retried).")
@click.option("--allow-pending", is_flag=True,
              help="--ray: submit cells even when no node offers their device type yet (autoscaling clusters).")
def command(matrix_file, suites, models, ray_address, out_dir, json_path, resume, dry_run, work, calib_data,
            max_plan_mb, max_retries, allow_pending):
    """Run a benchmark matrix: every suite's models x precisions x device types.

    Device-independent work (export, rewrite, precision, calibration) is prepared
    once per model, precision and batch range, cached like 'vitdeploy build';
    each device type then builds its engine and runs 'vitdeploy bench'. Without
    --ray the cells run here one at a time; with --ray they run on the cluster's
    nodes by resources ([devices.NAME] in the matrix file). Results come back to
    DIR and merge into one vitdeploy.bench/3 file for 'report' and 'compare'.
    A failing cell fails alone; Ctrl-C keeps the finished cells.

    \b
    Examples:
      vitdeploy matrix benchmarks/matrix.toml --suite ort-cpu -o build/matrix
      vitdeploy matrix benchmarks/matrix.toml --suite trt --ray auto --calib-data /data/calib.npz
      vitdeploy matrix benchmarks/matrix.toml --ray 10.0.0.1:6379 --resume --dry-run
    """
    from vitdeploy.matrix.plan import expand

    if ray_address is not None:
        from vitdeploy.matrix.ray_runner import import_ray

        if not ray_address.strip():
            raise VitdeployError("--ray needs an address", "use --ray auto or --ray HOST:PORT")
        import_ray()  # before anything else: without Ray, say how to install it
    plan = expand(matrix_file, suites=list(suites) or None, models=list(models) or None, calib_data=calib_data,
                  local=ray_address is None)
    out = Path(out_dir)
    json_path = Path(json_path) if json_path else out / "bench.json"
    if dry_run:
        _print_plan(plan, ray_address, out, resume)
        return
    from vitdeploy.artifact import ensure_writable_dir
    from vitdeploy.console import console
    from vitdeploy.matrix.progress import Board
    from vitdeploy.matrix.results import Store

    store = Store(out, plan)
    todo = []
    for cell in plan.cells:
        earlier = store.finished_before(cell) if resume else None
        if earlier is not None:
            store.note_cell(cell, "resumed", None, node=earlier.get("node"), seconds=earlier.get("seconds"))
        elif cell.problem:
            store.note_cell(cell, "not-run", cell.problem)
        else:
            todo.append(cell)
    ray = nodes = None
    if ray_address and todo:  # an unreachable cluster is a one-line error before anything is written
        from vitdeploy.matrix import ray_runner

        ray = ray_runner.connect(ray_address)
        nodes = ray_runner.cluster_nodes(ray)
    ensure_writable_dir(out)
    for w in plan.warnings:
        console.print(f"[yellow]warning:[/] {w}")
    resumed = sum(1 for r in store.cells.values() if r["status"] == "resumed")
    prepares = list(dict.fromkeys(c.prepare for c in todo if c.prepare))
    where = f"Ray cluster at {ray_address}" if ray_address else "here, one cell at a time"
    console.print(f"[bold]matrix[/] {plan.source.name}: {len(plan.cells)} cells, {len(prepares)} "
                  f"prepare{'' if len(prepares) == 1 else 's'} to run"
                  f"{f', {resumed} resumed' if resumed else ''} ({where})")
    if nodes is not None:
        console.print(f"  {len(nodes)} node(s): " + "; ".join(_node_line(n) for n in nodes))

    started = time.time()
    interrupted = False
    board = Board(plan, todo, prepares, label=f"ray {ray_address}" if ray_address else "local")
    try:
        if not todo:
            console.print("  nothing to run: every cell is done or cannot run")
        elif ray is not None:
            with board:
                remote_work = work or DEFAULT_WORK  # a path on every node: never relative
                if not remote_work.startswith("~"):
                    remote_work = str(Path(remote_work).resolve())
                ray_runner.run(ray, plan, todo, store, board, remote_work,
                               max_plan_bytes=int(max_plan_mb * 2**20), max_retries=max_retries,
                               check_resources=not allow_pending)
        else:
            from vitdeploy.matrix import serial

            work_dir = Path(os.path.expanduser(work or DEFAULT_WORK))
            work_dir.mkdir(parents=True, exist_ok=True)
            with board:
                serial.run(plan, todo, store, board, work_dir.resolve(), max_plan_bytes=int(max_plan_mb * 2**20))
    except KeyboardInterrupt:
        interrupted = True
        console.print("\n[yellow]interrupted:[/] cancelled the cells not finished; keeping the finished ones")
        for cell in todo:
            if cell.id not in store.cells:
                store.note_cell(cell, "cancelled", "cancelled (Ctrl-C)")
    finally:
        if ray is not None:
            ray.shutdown()
    _finish(plan, store, out, json_path, ray_address, started, interrupted, nodes, matrix_file, suites, resume)


def _node_line(n: dict) -> str:
    res = {k: v for k, v in n["resources"].items()
           if not k.startswith(("node:", "memory", "object_store_memory")) and v}
    return f"{n['hostname'] or n['ip']} {n['id'][:8]} (" + ", ".join(f"{k} {v:g}" for k, v in sorted(res.items())) + ")"


def _finish(plan, store, out: Path, json_path: Path, ray_address, started, interrupted, nodes, matrix_file, suites,
            resume) -> None:
    from vitdeploy.bench import schema
    from vitdeploy.console import console, next_steps

    doc = store.merged()
    if doc is not None:
        schema.write(json_path, doc)
    summary = store.write_summary(ray=ray_address, seconds=time.time() - started, interrupted=interrupted, nodes=nodes)
    recs = list(store.cells.values())
    bad = [r for r in recs if r["status"] in FAILED]
    for r in bad:
        console.print(f"[red]✘ {r['id']}[/] {r['status']}: {r.get('reason')}")
        tail = [ln for ln in (r.get("log_tail") or "").splitlines() if ln.strip()][-LOG_LINES_SHOWN:]
        if tail and not r["reason"].startswith("no TensorRT"):
            console.print("\n".join(f"    {line}" for line in tail), markup=False, style="dim")
    if doc is not None and any(run["results"] for run in doc["runs"]):  # what was measured, before the tally
        from vitdeploy.bench.tables import console_width, latency_table

        console.print()
        console.print(latency_table([run for run in doc["runs"] if run["results"]], "measured latency", console_width()))
    done = sum(1 for r in recs if r["status"] in ("done", "resumed"))
    console.print(f"[{'green' if not bad else 'yellow'}]{'✔' if not bad else '!'}[/] [bold]matrix[/] {done} of "
                  f"{len(plan.cells)} cells done, {len(bad)} not  [dim]{time.time() - started:.1f} s[/]")
    if doc is not None:
        console.print(f"  wrote {json_path} ({len(doc['runs'])} runs) and {summary}")
    else:
        console.print(f"  no cell finished: wrote {summary} only")
    steps = []
    if doc is not None:
        steps += [f"vitdeploy report {json_path} -o {out / 'report'}",
                  f"vitdeploy compare BASELINE.json {json_path} --max-latency-regression 5%"]
    if bad or interrupted:
        again = ["vitdeploy", "matrix", str(matrix_file), *[a for s in suites for a in ("--suite", s)],
                 *([f"--ray={ray_address}"] if ray_address else []), "-o", str(out), "--resume"]
        steps.append(shlex.join(again) + "   # reruns only the cells not done")
    next_steps(steps)
    if interrupted:
        sys.exit(130)
    if bad:
        sys.exit(1)


def _print_plan(plan, ray_address, out: Path, resume: bool) -> None:
    from vitdeploy.console import console
    from vitdeploy.matrix.results import Store

    store = Store(out, plan)
    nodes = None
    if ray_address:
        from vitdeploy.matrix import ray_runner

        ray = ray_runner.connect(ray_address)
        try:
            nodes = ray_runner.cluster_nodes(ray)
        finally:
            ray.shutdown()
    console.print(f"# {plan.source}: {len(plan.prepares)} prepares, {len(plan.cells)} cells")
    for prep in plan.prepares.values():
        n = len(plan.cells_of(prep.id))
        console.print(f"\n# prepare {prep.id}  ({n} cell{'s use' if n != 1 else ' uses'} it)", markup=False)
        console.print(shlex.join(["vitdeploy", *prep.args, "-o", f"WORK/prepare/{prep.id}"]), markup=False)
    for cell in plan.cells:
        dt = cell.device_type
        head = f"\n# {cell.id}  on {dt.name}: {dt.describe()}"
        if nodes is not None:
            from vitdeploy.matrix.ray_runner import offers

            n = sum(1 for nd in nodes if offers(nd, dt))
            head += f"  [{n} node(s) offer it]" if n else "  [no node offers it]"
        if resume and store.finished_before(cell):
            head += "  (done: --resume skips it)"
        if cell.problem:
            head += f"  (not run: {cell.problem})"
        console.print(head, markup=False)
        artifact = []
        if cell.engine_args:
            console.print(shlex.join(["vitdeploy", *cell.engine_args, "-o", f"WORK/cells/{cell.dirname}/artifact"]),
                          markup=False)
            artifact = [f"WORK/cells/{cell.dirname}/artifact"]
        elif cell.prepare:
            artifact = [f"WORK/prepare/{cell.prepare}"]
        console.print(shlex.join(["vitdeploy", "bench", *artifact, *cell.bench_args, "--json",
                                  f"WORK/cells/{cell.dirname}/bench.json"]), markup=False)
