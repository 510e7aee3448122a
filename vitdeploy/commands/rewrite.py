"""`vitdeploy rewrite`: replace attention subgraphs with plugin nodes (or folded plain ONNX), verified."""
from __future__ import annotations

import click


@click.command("rewrite")
@click.argument("src", metavar="IN.onnx", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "dst", required=True, type=click.Path(dir_okay=False), help="Where to write the rewritten graph.")
@click.option("--passes", help="Comma-separated passes (swin, gpsa, msda, halo). Default: the model family's when IN sits "
                               "next to a vitdeploy manifest.json, else every installed pass.")
@click.option("--mode", "--swin-mode", "mode", type=click.Choice(["plugin", "native"]), default="plugin", show_default=True,
              help="plugin: vitdeploy plugin nodes (TensorRT >= 10.9); native: plain ONNX TensorRT fuses itself "
                   "(JetPack 6 / TensorRT 10.3). Applies to every pass; --swin-mode is the same flag.")
@click.option("--msda-impl", type=click.Choice(["stock", "vitdeploy"]), default="stock", show_default=True,
              help="Deformable attention: TensorRT's stock MultiscaleDeformableAttnPlugin_TRT or vitdeploy's Triton plugin.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of a table.")
def command(src, dst, passes, mode, msda_impl, as_json):
    """Find attention subgraphs by structure, replace each one that verifies, and write OUT.

    Every candidate is checked numerically (original subgraph vs replacement, on real activations
    and on random inputs) before it is kept; a candidate that fails stays untouched and is listed
    with its reason. The whole rewritten graph is then compared with IN; if it differs, nothing is
    written and the exit code is 3.

    \b
    Examples:
      vitdeploy rewrite out/swin_t/model.onnx -o out/swin_t/model.rewritten.onnx
      vitdeploy rewrite swin.onnx -o swin.native.onnx --passes swin --swin-mode native --json
    """
    import json

    from vitdeploy.deploy.rewrite_flow import run_rewrite

    names = [p.strip() for p in passes.split(",") if p.strip()] if passes else None
    report = run_rewrite(src, dst, passes=names, mode=mode, options={"msda_impl": msda_impl}, as_json=as_json)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
