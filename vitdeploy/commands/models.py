"""`vitdeploy models`: the supported aliases."""
from __future__ import annotations

import click

from vitdeploy.commands.common import emit_json, json_option, json_to_stdout


def parameter_counts(infos) -> dict[str, int]:
    """Parameter counts per alias, computed on the meta device once per timm/transformers version and cached
    in ~/.cache/vitdeploy (the first run builds every model: a progress bar, not 10 silent seconds)."""
    import json
    import os
    from importlib.metadata import PackageNotFoundError, version
    from pathlib import Path

    from vitdeploy.console import progress
    from vitdeploy.models import count_parameters

    def v(dist):
        try:
            return version(dist)
        except PackageNotFoundError:
            return None

    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vitdeploy"
    path = root / "parameter_counts.json"
    key = {"timm": v("timm"), "transformers": v("transformers")}
    try:
        cached = json.loads(path.read_text())
        counts = cached["counts"] if cached.get("versions") == key else {}
    except (OSError, ValueError, KeyError, TypeError):
        counts = {}
    todo = [i for i in infos if i.alias not in counts]
    if todo:
        from vitdeploy.console import err_console

        err_console.print(f"[dim]counting the parameters of {len(todo)} models (once per timm/transformers version)[/]")
        with progress(len(todo), "counting parameters", unit="models") as advance:
            for info in todo:
                counts[info.alias] = count_parameters(info)
                advance(1)
        try:
            from vitdeploy.artifact import atomic_write_json

            root.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, {"versions": key, "counts": counts})
        except OSError:  # a read-only home: counted again next time, nothing else lost
            pass
    return counts


@click.command("models")
@json_option("the list")
def command(json_out):
    """List supported model aliases with source, parameters, input size and rewrite passes.

    \b
    Example:
      vitdeploy models
    """
    from rich.table import Table

    from vitdeploy.console import console
    from vitdeploy.models import REGISTRY

    json_to_stdout(json_out)
    counts = parameter_counts(list(REGISTRY.values()))
    rows = []
    for info in REGISTRY.values():
        rows.append(
            {
                "alias": info.alias,
                "family": info.family,
                "source": info.source,
                "name": info.name,
                "parameters": counts[info.alias],
                "input_size": list(info.input_size),
                "passes": list(info.passes),
            }
        )
    if json_out:
        emit_json(rows, json_out)
        if json_out == "-":
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
