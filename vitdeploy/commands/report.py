"""`vitdeploy report`: plot bench results to PNG and a Markdown summary."""
from __future__ import annotations

from pathlib import Path

import click


@click.command("report")
@click.argument("results", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--label", "labels", multiple=True, metavar="NAME",
              help="Legend name of each result file, in order (repeat once per file). Default: the shortest path "
                   "suffix that tells the files apart, e.g. main/bench and pr/bench.")
def command(results, out_dir, labels):
    """Plot RESULTS.json files: latency distribution per batch, throughput vs batch, accuracy vs latency.

    Writes PNGs and a README.md that embeds them (ready for a docs page or a PR).

    \b
    Examples:
      vitdeploy report trt.json ort.json -o report/
      vitdeploy report main/bench.json pr/bench.json --label main --label pr -o report/
    """
    from vitdeploy.artifact import staging
    from vitdeploy.bench import schema
    from vitdeploy.bench.report import build, random_weight_runs, source_labels
    from vitdeploy.console import console

    names = source_labels(list(results), labels)
    docs = [(name, schema.read(p)) for name, p in zip(names, results)]
    if random_weight_runs(docs):
        from vitdeploy.weights import banner

        runs = random_weight_runs(docs)
        banner(", ".join(runs[:3]) + (" ..." if len(runs) > 3 else ""), plural=len(runs) > 1)
    with staging(out_dir) as tmp:
        written = build(docs, tmp)
    for p in written:
        console.print(f"[green]✔[/] wrote {Path(out_dir) / p.name}")
