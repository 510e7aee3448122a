"""`vitdeploy models`: the supported aliases."""
from __future__ import annotations

import click


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def command(as_json):
    """List supported model aliases with source, parameters, input size and rewrite passes.

    \b
    Example:
      vitdeploy models
    """
    import json

    from rich.table import Table

    from vitdeploy.console import console
    from vitdeploy.models import REGISTRY, count_parameters

    rows = []
    for info in REGISTRY.values():
        rows.append(
            {
                "alias": info.alias,
                "family": info.family,
                "source": info.source,
                "name": info.name,
                "parameters": count_parameters(info),
                "input_size": list(info.input_size),
                "passes": list(info.passes),
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    t = Table(title="vitdeploy models")
    for col in ("alias", "source", "model", "params", "input", "rewrite passes"):
        t.add_column(col, justify="right" if col == "params" else "left")
    for r in rows:
        t.add_row(
            r["alias"],
            r["source"],
            r["name"],
            f"{r['parameters'] / 1e6:.1f}M",
            "x".join(map(str, r["input_size"])),
            ", ".join(r["passes"]) or "-",
        )
    console.print(t)
