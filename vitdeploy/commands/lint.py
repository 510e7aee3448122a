"""`vitdeploy lint`: will this ONNX parse on that TensorRT, and is it shaped for TensorRT's fusions?"""
from __future__ import annotations

import sys

import click

from vitdeploy.deploy.lint.tables import NAMED


@click.command("lint")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--trt", "trt", default="auto", show_default=True, metavar="|".join([*NAMED, "auto"]),
              help="TensorRT version to check against (any X.Y works; auto: the one here, else the manifest's target).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--notes/--no-notes", default=True, show_default=True, help="Also print notes (nothing to fix).")
def command(model, trt, as_json, notes):
    """Check MODEL.onnx against what TensorRT's ONNX parser accepts and what its fusions need.

    Opset and IR range, operators and attributes per TensorRT version (onnx-tensorrt's operator
    tables and importers), types, Q/DQ rules, plugin names and versions, and whether each attention
    block is in the form TensorRT fuses. One line per problem with the node and the fix; exit 1 when
    there is an error, 0 otherwise. Nothing is run and TensorRT is not needed.

    \b
    Examples:
      vitdeploy lint build/swin_t/model.fp16.onnx --trt 10.3     # will it parse on JetPack 6?
      vitdeploy lint model.int8.onnx --json
    """
    import json
    from pathlib import Path

    from rich.markup import escape

    from vitdeploy.console import console
    from vitdeploy.deploy.artifacts import load_onnx
    from vitdeploy.deploy.lint import lint_model, parse_trt
    from vitdeploy.deploy.lint.targets import LintTarget, resolve_auto

    path = Path(model)
    target = None if trt == "auto" else LintTarget(parse_trt(trt), "--trt")  # bad --trt: one line, before loading
    graph = load_onnx(path, hint="pass an .onnx file")
    if target is None:
        target = resolve_auto(path, graph)
    report = lint_model(graph, target.version)
    if as_json:
        click.echo(json.dumps({"model": str(path), "reason": target.reason, **report.to_dict()}, indent=2))
    else:
        console.print(f"{path.name}: linted for TensorRT {target.label} ({target.reason})")
        for f in report.findings:
            if f.severity != "note" or notes:
                style = {"error": "red", "warning": "yellow", "note": "dim"}[f.severity]
                console.print(f"[{style}]{escape(f.line())}[/]", highlight=False)
        console.print(("[red]✘[/] " if report.errors else "[green]✔[/] ") + report.summary())
        if report.errors:
            console.print("\n[bold]Next:[/]")
            console.print(f"  vitdeploy lint {path} --trt {'.'.join(map(str, report.tensorrt))} --json   # the findings as JSON")
    sys.exit(1 if report.errors else 0)
