"""`vitdeploy lint`: will this ONNX parse on that TensorRT, and is it shaped for TensorRT's fusions?"""
from __future__ import annotations

import sys

import click

from vitdeploy.commands.options import emit_json, json_option, json_to_stdout
from vitdeploy.deploy.lint.tables import NAMED


@click.command("lint")
@click.argument("model", type=click.Path())
@click.option("--trt", "trt", default="auto", show_default=True, metavar="|".join([*NAMED, "auto"]),
              help="TensorRT version to check against (any X.Y works; auto: the one here, else the manifest's target).")
@click.option("--notes/--no-notes", default=True, show_default=True, help="Also print notes (nothing to fix).")
@json_option("the report")
def command(model, trt, notes, json_out):
    """Check MODEL.onnx (or a build directory's final graph) against what TensorRT's ONNX parser accepts
    and what its fusions need.

    Opset and IR range, operators and attributes per TensorRT version (onnx-tensorrt's operator
    tables and importers), types, Q/DQ rules, plugin names and versions, and whether each attention
    block is in the form TensorRT fuses. One line per problem with the node and the fix (identical
    problems on several nodes: one line with the count and the first nodes; --json lists every
    node); exit 1 when there is an error, 0 otherwise. A version newer than the tables describe is
    checked with the newest rules and says so (no ✔). Nothing is run and TensorRT is not needed.

    \b
    Examples:
      vitdeploy lint build/swin_t/model.fp16.onnx --trt 10.3     # will it parse on JetPack 6?
      vitdeploy lint build/vit_t --json                          # a build directory's final graph
    """
    from pathlib import Path

    from rich.markup import escape

    from vitdeploy.artifact import load_onnx
    from vitdeploy.console import console
    from vitdeploy.deploy.lint import fmt, lint_model, parse_trt
    from vitdeploy.deploy.lint.core import grouped_lines
    from vitdeploy.deploy.lint.targets import LintTarget, resolve_auto
    from vitdeploy.errors import VitdeployError

    path = Path(model)
    if path.is_dir():  # a build directory: its final graph
        from vitdeploy.artifact import MANIFEST_NAME, load_manifest

        if not (path / MANIFEST_NAME).is_file():
            raise VitdeployError(f"{path} is a directory without {MANIFEST_NAME}", "pass an .onnx file or a build directory")
        onnx_file = ((load_manifest(path / MANIFEST_NAME).get("files") or {}).get("onnx") or {}).get("path")
        if not onnx_file:
            raise VitdeployError(f"{path / MANIFEST_NAME} names no final ONNX", "pass the .onnx file")
        path = path / onnx_file
    target = None if trt == "auto" else LintTarget(parse_trt(trt), "--trt")  # bad --trt: one line, before loading
    graph = load_onnx(path, hint="pass an .onnx file")
    if target is None:
        target = resolve_auto(path, graph)
    json_to_stdout(json_out)  # --json alone: the report on stdout, these lines on stderr
    report = lint_model(graph, target.version)
    console.print(f"{path.name}: linted for TensorRT {target.label} ({target.reason})")
    newest = report.extrapolated_from
    if newest:
        console.print(f"[yellow]TensorRT {fmt(target.version)} is newer than every release vitdeploy's tables describe "
                      f"(newest {fmt(newest)}): checked with {fmt(newest)}'s rules, which a newer parser may relax or "
                      f"change; read its release notes, or lint with --trt {fmt(newest)}[/]", highlight=False)
    for severity, line in grouped_lines([f for f in report.findings if f.severity != "note" or notes]):
        style = {"error": "red", "warning": "yellow", "note": "dim"}[severity]
        console.print(f"[{style}]{escape(line)}[/]", highlight=False)
    mark = "[red]✘[/] " if report.errors else "[yellow]?[/] " if newest else "[green]✔[/] "
    console.print(mark + report.summary())
    emit_json({"model": str(path), "reason": target.reason, **report.to_dict()}, json_out)
    if report.errors and json_out is None:
        console.print("\n[bold]Next:[/]")
        console.print(f"  vitdeploy lint {path} --trt {'.'.join(map(str, report.tensorrt))} --json   # the findings as JSON")
    sys.exit(1 if report.errors else 0)
