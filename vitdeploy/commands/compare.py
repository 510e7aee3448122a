"""`vitdeploy compare`: gate latency and accuracy regressions between two bench results (for CI),
or bench two artifacts interleaved in one window and gate on the paired ratio (`--run`)."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from vitdeploy.errors import VitdeployError

# bench's options that only make sense with --run (name -> flag, for the refusal without it)
_RUN_ONLY = {"backend": "--backend", "device": "--device", "batch_text": "--batch-sizes", "warmup_ms": "--warmup-ms",
             "duration_s": "--duration-s", "min_iters": "--min-iters", "mode": "--mode", "threads": "--threads",
             "block_ms": "--block-ms", "json_out": "--json", "cuda_graph": "--cuda-graph", "gate_on": "--gate-on"}


def _looks_like_artifact(path: str) -> bool:
    from vitdeploy.bench.identity import ENGINE_SUFFIXES

    p = Path(path)
    return p.is_dir() or p.suffix in (".onnx", *ENGINE_SUFFIXES)


def _check_mode(run: bool, baseline: str, candidate: str, given: dict) -> None:
    """Validate the arguments against the mode before any file is read or any model loaded."""
    if run:
        for p in (baseline, candidate):
            if Path(p).suffix == ".json":
                raise VitdeployError(f"--run benches artifacts, and {p} is a bench result",
                                     "drop --run to compare two bench JSON files")
        return
    extra = [flag for name, flag in _RUN_ONLY.items() if given.get(name)]
    if extra:
        raise VitdeployError(f"{extra[0]} applies to --run (benching two artifacts)",
                             f"vitdeploy compare --run BASELINE CANDIDATE {extra[0]} ...")
    for p in (baseline, candidate):
        if _looks_like_artifact(p):
            raise VitdeployError(f"{p} is an artifact, not a bench result",
                                 f"add --run to bench both artifacts interleaved: vitdeploy compare --run {baseline} {candidate}")


def _backends(baseline, candidate, backend, device, threads, cuda_graph):
    """Both backends, built with the same options; refused before timing when they measure different things."""
    from vitdeploy.bench.schema import identity_difference
    from vitdeploy.commands.bench import make_backend, parse_backends

    names = parse_backends(backend)
    if len(names) > 1:
        raise VitdeployError("--run times one backend", f"pick one of {', '.join(names)}")
    pair = [make_backend(p, None, names[0], device, None, None, cuda_graph, threads)[0] for p in (baseline, candidate)]
    b, c = pair
    ib, ic = b.identity(), c.identity()
    if ib["model"]["alias"] != ic["model"]["alias"] and (ib["model"]["name"] is None or ic["model"]["name"] is None):
        # a loose ONNX without a manifest is named after its file: old.onnx vs new.onnx is one model
        c.model = b.model
        ic = {**ic, "model": ib["model"]}
    diff = identity_difference({"identity": ib}, {"identity": ic})
    if diff:
        what, vb, vc = diff
        raise VitdeployError(f"{what} differs (baseline {vb}, candidate {vc})",
                             "interleave two builds of the same model, input and batch profile: only the code under test may differ")
    if b.name != c.name:
        raise VitdeployError(f"the baseline runs on {b.name} and the candidate on {c.name}", "pass --backend for both")
    return b, c


def _run_session(baseline, candidate, backend, device, batch_text, warmup_ms, duration_s, min_iters, mode, cuda_graph,
                 threads, block_ms, quiet, json_out):
    from vitdeploy.bench import environment, schema
    from vitdeploy.bench.interleave import PairedSettings, interleave, session_document
    from vitdeploy.bench.runner import Settings
    from vitdeploy.commands.bench import parse_batches
    from vitdeploy.console import console

    batches = parse_batches(batch_text)
    settings = Settings(warmup_ms=float(warmup_ms), duration_s=float(duration_s), min_iters=int(min_iters))
    paired = PairedSettings(block_ms=float(block_ms))
    base_be, cand_be = _backends(baseline, candidate, backend, device, threads, cuda_graph)
    from vitdeploy.weights import banner, is_random

    if is_random(base_be.identity()["weights"]):
        banner(f"{Path(baseline).name} and {Path(candidate).name}", plural=True)
    console.print(f"interleaving {baseline} (baseline) and {candidate} (candidate): {base_be.name} on {base_be.device}, "
                  f"blocks of ~{block_ms:g} ms in random order, {duration_s:g} s a side per batch size")
    env = environment.collect(base_be.device)
    session = interleave(base_be, cand_be, batches, mode, settings, paired, progress=not quiet)
    doc = session_document(session, env)
    if json_out:
        schema.write(json_out, doc)
        console.print(f"[green]✔[/] wrote {json_out}")
    interrupted = any(r["interrupted"] for r in session["runs"])
    if not any(r["results"] for r in session["runs"]):
        if interrupted:
            console.print("[yellow]interrupted[/] before a batch size finished")
            sys.exit(130)
        skipped = [s["reason"] for s in session["runs"][0]["skipped"]]
        raise VitdeployError("no batch size could be measured", skipped[0] if skipped else None)
    return doc, interrupted


@click.command("compare")
@click.argument("baseline", type=click.Path())
@click.argument("candidate", type=click.Path())
@click.option("--run", "run", is_flag=True,
              help="BASELINE and CANDIDATE are artifacts (ONNX, engine, build directory): bench them interleaved in one "
                   "process window and gate on the paired ratio (holds on shared machines).")
@click.option("--max-latency-regression", default="5%", show_default=True,
              help="Largest allowed median-latency increase per batch (e.g. 5%).")
@click.option("--max-accuracy-drop", type=click.FloatRange(min=0), default=0.3, show_default=True,
              help="Largest allowed headline-accuracy drop, in percentage points.")
@click.option("--confidence", type=float, default=0.95, show_default=True,
              help="Confidence of the interval on the latency ratio.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False), help="Also write the table as Markdown (PR comment).")
@click.option("--backend", metavar="NAME", help="--run: trt or ort (default: trt for engines, ort for ONNX).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), help="--run: default cuda for trt, else cpu.")
@click.option("--batch-sizes", "batch_text", default=None, help="--run: comma-separated batch sizes (default 1).")
@click.option("--warmup-ms", type=click.FloatRange(min=0), default=None, help="--run: warm-up per batch, both sides (default 200).")
@click.option("--duration-s", type=click.FloatRange(min=0), default=None,
              help="--run: timed seconds per side and batch size (default 3; longer narrows the interval).")
@click.option("--min-iters", type=click.IntRange(min=1), default=None, help="--run: minimum iterations per side (default 10).")
@click.option("--mode", type=click.Choice(["compute", "end-to-end"]), default=None, help="--run: as bench's --mode.")
@click.option("--cuda-graph/--no-cuda-graph", default=None, help="--run: replay a CUDA graph when capture succeeds (default on).")
@click.option("--threads", type=click.IntRange(min=1), help="--run: CPU threads, the same for both sides.")
@click.option("--block-ms", type=click.FloatRange(min=0), default=None,
              help="--run: target length of one block of iterations (default 50; at least one iteration).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="--run: also write the session (both runs, every block) as a bench result.")
@click.option("--gate-on", "gate_on", type=click.Choice(["latency", "cpu-time"]), default=None,
              help="--run: gate on latency (default) or, for CPU runs on a shared machine, on the process CPU time "
                   "each iteration took (steadier under load; use with --threads 1).")
@click.option("--quiet", is_flag=True, help="--run: no progress bar.")
def command(baseline, candidate, run, max_latency_regression, max_accuracy_drop, confidence, markdown_path, backend,
            device, batch_text, warmup_ms, duration_s, min_iters, mode, cuda_graph, threads, block_ms, json_out, gate_on,
            quiet):
    """Compare CANDIDATE against BASELINE per model, precision and batch.

    Without --run, BASELINE and CANDIDATE are bench results (JSON). Runs must measure
    the same thing (input shape, batch profile, model, weights, threads, device,
    plugins on a real backend or not); only the code under test may differ. A latency
    regression is declared when the whole bootstrap interval of the median ratio lies
    above the limit; when it contains the limit, or when the runs' recorded conditions
    (load, steal, clocks) could have produced the verdict by themselves, the verdict is
    inconclusive.

    With --run, BASELINE and CANDIDATE are artifacts, benched in one process with the
    same threads and inputs, in alternating short blocks in random order, so load that
    changes meanwhile hits both; the gate reads the paired ratio of the blocks and its
    signed-rank interval. Use it on shared CI runners.

    Exit codes: 0 no regression, 1 a threshold was crossed, 5 inconclusive (rerun
    longer, on a quieter machine, or with --run), 2 unusable input. See docs/benchmarking.md.

    \b
    Examples:
      vitdeploy compare main/bench.json pr/bench.json --max-latency-regression 5% --markdown comment.md
      vitdeploy compare --run main/build/vit_s pr/build/vit_s --batch-sizes 1,8 --duration-s 10 --markdown comment.md
    """
    from vitdeploy.bench import schema
    from vitdeploy.bench.compare import (
        INCONCLUSIVE, REGRESSION, accuracy_footnote, compare, compare_interleaved, parse_percent, regression_lines,
        to_markdown, to_table, verdict_line,
    )
    from vitdeploy.artifact import atomic_write_bytes
    from vitdeploy.bench.tables import console_width
    from vitdeploy.console import console
    from vitdeploy.errors import EXIT_INCONCLUSIVE, EXIT_REGRESSION

    given = dict(backend=backend, device=device, batch_text=batch_text, warmup_ms=warmup_ms, duration_s=duration_s,
                 min_iters=min_iters, mode=mode, threads=threads, block_ms=block_ms, json_out=json_out,
                 cuda_graph=cuda_graph is not None, gate_on=gate_on)
    _check_mode(run, baseline, candidate, given)
    limit = parse_percent(max_latency_regression)
    if not 0.5 <= confidence < 1.0:
        raise VitdeployError(f"--confidence {confidence:g} is outside [0.5, 1)", "for example --confidence 0.95")
    if gate_on == "cpu-time" and (device == "cuda" or (backend or "").strip() == "trt"):
        raise VitdeployError("--gate-on cpu-time applies to CPU runs", "gate a GPU run on latency (CUDA events)")
    interrupted = False
    if run:
        from vitdeploy.bench.interleave import DEFAULT_BLOCK_MS

        doc, interrupted = _run_session(
            baseline, candidate, backend, device, batch_text or "1", 200.0 if warmup_ms is None else warmup_ms,
            3.0 if duration_s is None else duration_s, 10 if min_iters is None else min_iters, mode or "compute",
            True if cuda_graph is None else cuda_graph, threads, DEFAULT_BLOCK_MS if block_ms is None else block_ms,
            quiet or gate_on == "cpu-time", json_out)  # a redrawing bar's thread would add its CPU time
        cmp = compare_interleaved(doc, max_latency_regression=limit, confidence=confidence, figure=gate_on or "latency")
    else:
        base, cand = schema.read(baseline), schema.read(candidate)
        schema.require_identity(base, baseline)
        schema.require_identity(cand, candidate)
        cmp = compare(base, cand, max_latency_regression=limit, max_accuracy_drop=max_accuracy_drop, confidence=confidence)
        if cmp.random_weights:
            from vitdeploy.weights import banner

            banner(f"the runs in {Path(baseline).name} and {Path(candidate).name}", plural=True)
    console.print(to_table(cmp, console_width()))
    foot = accuracy_footnote(cmp)
    if foot:
        console.print(f"  {foot}")
    for line in regression_lines(cmp):
        console.print(f"  [bold red]✘[/] {line}")
    for note in cmp.notes:
        console.print(f"  [yellow]note:[/] {note}")
    if markdown_path:
        Path(markdown_path).parent.mkdir(parents=True, exist_ok=True)  # as `bench --json` does
        atomic_write_bytes(markdown_path, to_markdown(cmp).encode())
        console.print(f"[green]✔[/] wrote {markdown_path}")
    if interrupted:
        console.print("[yellow]interrupted:[/] kept the batch sizes measured before Ctrl-C")
    line = verdict_line(cmp)
    if cmp.verdict == REGRESSION:
        console.print(f"[bold red]✘ {line}[/] beyond the limits")
        sys.exit(EXIT_REGRESSION)  # SystemExit: the same code through main(), CliRunner and the console script
    if cmp.verdict == INCONCLUSIVE:
        hint = "rerun longer" if run else "rerun longer, on a quieter machine, or interleaved with --run"
        console.print(f"[bold yellow]? {line}[/]: {hint} (docs/benchmarking.md)")
        sys.exit(EXIT_INCONCLUSIVE)
    if interrupted:
        sys.exit(130)
    console.print(f"[green]✔[/] {line}")
