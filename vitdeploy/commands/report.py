"""`vitdeploy report`: plot bench results to PNG and a Markdown summary."""
from __future__ import annotations

from pathlib import Path

import click


@click.command("report")
@click.argument("results", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False), help="Output directory.")
def command(results, out_dir):
    """Plot RESULTS.json files: latency distribution per batch, throughput vs batch, accuracy vs latency.

    Writes PNGs and a README.md that embeds them (ready for a docs page or a PR).

    \b
    Example:
      vitdeploy report trt.json ort.json -o report/
    """
    from vitdeploy.bench import schema
    from vitdeploy.bench.report import build
    from vitdeploy.console import console
    from vitdeploy.deploy.artifacts import staging

    docs = [(Path(p).stem, schema.read(p)) for p in results]
    with staging(out_dir) as tmp:
        written = build(docs, tmp)
    for p in written:
        console.print(f"[green]✔[/] wrote {Path(out_dir) / p.name}")
