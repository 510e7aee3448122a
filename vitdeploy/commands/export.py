"""`vitdeploy export`: PyTorch → ONNX, verified against PyTorch."""
from __future__ import annotations

import click

from vitdeploy.commands.common import check_weights_flags, model_source_options, parse_batch, parse_img_size


@click.command("export")
@click.option("--model", "alias", required=True, help="Model alias (see 'vitdeploy models').")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False), help="Output directory.")
@model_source_options
@click.option("--reduced", is_flag=True,
              help="Test-sized model: Deformable DETR (2+2 layers, d_model 64, ResNet-18) or Swin / Swin V2 "
                   "(depths 1-1-2-1, 32 channels).")
def command(alias, out_dir, checkpoint, pretrained, img_size, batch, dynamic_batch, opset, exporter, reduced):
    """Export a model to DIR/model.onnx and DIR/manifest.json, verified against PyTorch.

    Runs the ONNX with ONNX Runtime and PyTorch on the same inputs and fails
    (exit 3) when max-abs error or cosine similarity exceed tolerance.

    \b
    Examples:
      vitdeploy export --model swin_t -o out/swin_t --dynamic-batch 1:8:32
      vitdeploy export --model swinv2_t --img-size 240 320 -o out/swinv2_t_240x320
    """
    from vitdeploy.pipeline.export import run_export

    check_weights_flags(checkpoint, pretrained)
    if reduced:
        from vitdeploy.models import check_reduced

        check_reduced(alias)
    run_export(
        alias,
        out_dir,
        img_size=parse_img_size(img_size),
        batch=parse_batch(batch, dynamic_batch),
        opset=opset,
        checkpoint=checkpoint,
        pretrained=pretrained,
        exporter=exporter,
        small=reduced,
    )
