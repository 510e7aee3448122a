"""`vitdeploy compare`: gate latency and accuracy regressions between two bench results (for CI)."""
from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command("compare")
@click.argument("baseline", type=click.Path(dir_okay=False))
@click.argument("candidate", type=click.Path(dir_okay=False))
@click.option("--max-latency-regression", default="5%", show_default=True,
              help="Largest allowed median-latency increase per batch (e.g. 5%).")
@click.option("--max-accuracy-drop", type=click.FloatRange(min=0), default=0.3, show_default=True,
              help="Largest allowed headline-accuracy drop, in percentage points.")
@click.option("--confidence", type=float, default=0.95, show_default=True,
              help="Confidence of the bootstrap interval on the median-latency ratio.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False), help="Also write the table as Markdown (PR comment).")
def command(baseline, candidate, max_latency_regression, max_accuracy_drop, confidence, markdown_path):
    """Compare CANDIDATE.json against BASELINE.json per model, precision and batch.

    Runs must measure the same thing (input shape, batch profile, model, weights,
    threads, device, plugins on a real backend or not); only the code under test
    may differ. A latency regression is declared when the whole bootstrap interval
    of the median ratio lies above the limit; when the interval contains the limit
    the noise is too large to tell, and the verdict is inconclusive.

    Exit codes: 0 no regression, 1 a threshold was crossed, 5 inconclusive (rerun
    longer or on a quieter machine), 2 unusable input (unreadable file, schema /1,
    runs that measure different things). See docs/benchmarking.md.

    \b
    Example:
      vitdeploy compare main/bench.json pr/bench.json --max-latency-regression 5% --markdown comment.md
    """
    from vitdeploy.bench import schema
    from vitdeploy.bench.compare import (
        INCONCLUSIVE, REGRESSION, accuracy_footnote, compare, parse_percent, regression_lines, to_markdown, to_table,
        verdict_line,
    )
    from vitdeploy.artifact import atomic_write_bytes
    from vitdeploy.bench.tables import console_width
    from vitdeploy.console import console
    from vitdeploy.errors import EXIT_INCONCLUSIVE, EXIT_REGRESSION

    limit = parse_percent(max_latency_regression)
    base, cand = schema.read(baseline), schema.read(candidate)
    schema.require_identity(base, baseline)
    schema.require_identity(cand, candidate)
    cmp = compare(base, cand, max_latency_regression=limit, max_accuracy_drop=max_accuracy_drop, confidence=confidence)
    if cmp.random_weights:
        from vitdeploy.weights import banner

        banner(f"the runs in {Path(baseline).name} and {Path(candidate).name}")
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
    line = verdict_line(cmp)
    if cmp.verdict == REGRESSION:
        console.print(f"[bold red]✘ {line}[/] beyond the limits")
        sys.exit(EXIT_REGRESSION)  # SystemExit: the same code through main(), CliRunner and the console script
    if cmp.verdict == INCONCLUSIVE:
        console.print(f"[bold yellow]? {line}[/]: rerun longer or on a quieter machine (docs/benchmarking.md)")
        sys.exit(EXIT_INCONCLUSIVE)
    console.print(f"[green]✔[/] {line}")
