"""`vitdeploy rewrite`: replace attention subgraphs with plugin nodes (or folded plain ONNX), verified."""
from __future__ import annotations

import click

from vitdeploy.commands.common import emit_json, json_option, json_to_stdout, renamed


@click.command("rewrite")
@click.argument("src", metavar="IN.onnx", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "dst", required=True, type=click.Path(dir_okay=False), help="Where to write the rewritten graph.")
@click.option("--passes", help="Comma-separated passes (swin, gpsa, msda, halo). Default: the model family's when IN sits "
                               "next to a vitdeploy manifest.json, else every installed pass.")
@click.option("--plugins", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="on: vitdeploy plugin nodes (TensorRT >= 10.9); off: plugin-free plain ONNX TensorRT fuses itself "
                   "(JetPack 6 / TensorRT 10.3); auto: by the TensorRT here (on without one). As in 'build'.")
@click.option("--msda-impl", type=click.Choice(["stock", "vitdeploy"]), default="stock", show_default=True,
              help="Deformable attention: TensorRT's stock MultiscaleDeformableAttnPlugin_TRT or vitdeploy's Triton plugin.")
@json_option("the report")
@renamed("--mode", "plugins", "--plugins", convert=lambda v: {"plugin": "on", "native": "off"}[v],
         type=click.Choice(["plugin", "native"]))
@renamed("--swin-mode", "plugins", "--plugins", convert=lambda v: {"plugin": "on", "native": "off"}[v],
         type=click.Choice(["plugin", "native"]))
def command(src, dst, passes, plugins, msda_impl, json_out):
    """Find attention subgraphs by structure, replace each one that verifies, and write OUT.

    Every candidate is checked numerically (original subgraph vs replacement, on real activations
    and on random inputs) before it is kept; a candidate that fails stays untouched and is listed
    with its reason. The whole rewritten graph is then compared with IN; if it differs, nothing is
    written and the exit code is 3.

    \b
    Examples:
      vitdeploy rewrite out/swin_t/model.onnx -o out/swin_t/model.rewritten.onnx
      vitdeploy rewrite swin.onnx -o swin.native.onnx --passes swin --plugins off --json
    """
    from vitdeploy.machine import select_plugin_mode, tensorrt_version
    from vitdeploy.pipeline.rewrite import run_rewrite

    from vitdeploy.weights import banner, beside, is_random

    if is_random(beside(src)):
        banner(src)
    to_stdout = json_to_stdout(json_out)
    mode = select_plugin_mode(plugins, tensorrt_version()).mode
    names = [p.strip() for p in passes.split(",") if p.strip()] if passes else None
    report = run_rewrite(src, dst, passes=names, mode=mode, options={"msda_impl": msda_impl}, as_json=to_stdout)
    emit_json(report, json_out)
