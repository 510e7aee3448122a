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
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False), help="Also write the table as Markdown (PR comment).")
def command(baseline, candidate, max_latency_regression, max_accuracy_drop, markdown_path):
    """Compare CANDIDATE.json against BASELINE.json per model, precision and batch.

    Exit codes: 0 no regression, 1 a threshold was crossed, 2 unusable input
    (unreadable file, different schema, no matching model/batch).

    \b
    Example:
      vitdeploy compare main.json pr.json --max-latency-regression 5% --markdown comment.md
    """
    from vitdeploy.bench import schema
    from vitdeploy.bench.compare import compare, parse_percent, to_markdown, to_table
    from vitdeploy.commands.bench import wide_print
    from vitdeploy.console import console
    from vitdeploy.deploy.artifacts import atomic_write_bytes
    from vitdeploy.errors import EXIT_REGRESSION

    limit = parse_percent(max_latency_regression)
    base, cand = schema.read(baseline), schema.read(candidate)
    cmp = compare(base, cand, max_latency_regression=limit, max_accuracy_drop=max_accuracy_drop)
    wide_print(to_table(cmp))
    for note in cmp.notes:
        console.print(f"  [yellow]note:[/] {note}")
    if markdown_path:
        Path(markdown_path).parent.mkdir(parents=True, exist_ok=True)  # as `bench --json` does
        atomic_write_bytes(markdown_path, to_markdown(cmp).encode())
        console.print(f"[green]✔[/] wrote {markdown_path}")
    n_bad = sum(1 for r in cmp.rows if r.regressions)
    if n_bad:
        console.print(f"[bold red]✘ {n_bad} regression{'s' if n_bad != 1 else ''}[/] beyond the limits")
        sys.exit(EXIT_REGRESSION)  # SystemExit: the same code through main(), CliRunner and the console script
    console.print(f"[green]✔[/] no regression ({len(cmp.rows)} comparisons)")
