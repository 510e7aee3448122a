"""Options and parsing shared by several commands."""
from __future__ import annotations

import click

from vitdeploy.deploy.export import DEFAULT_OPSET, BatchSpec
from vitdeploy.errors import VitdeployError


def parse_batch(batch: int | None, dynamic_batch: str | None) -> BatchSpec:
    if batch is not None and dynamic_batch is not None:
        raise VitdeployError("--batch and --dynamic-batch cannot be used together", "pick one")
    if dynamic_batch is not None:
        return BatchSpec.parse(dynamic_batch)
    return BatchSpec.static(batch if batch is not None else 1)


def parse_img_size(img_size: int | None) -> tuple[int, int] | None:
    return None if img_size is None else (img_size, img_size)


def model_source_options(f):
    """--model/--checkpoint/--pretrained/--img-size/--batch/--dynamic-batch/--opset/--exporter."""
    opts = [
        click.option("--checkpoint", type=click.Path(dir_okay=False), help="Weights: .safetensors or .pth (loaded with weights_only=True)."),
        click.option("--pretrained", is_flag=True, help="Download pretrained weights from the hub (needs network)."),
        click.option("--img-size", type=int, help="Square input size (default: the model's)."),
        click.option("--batch", type=int, help="Static batch size (default 1)."),
        click.option("--dynamic-batch", metavar="MIN:OPT:MAX", help="Dynamic batch range, e.g. 1:8:32."),
        click.option("--opset", type=int, default=DEFAULT_OPSET, show_default=True, help="ONNX opset (17-23)."),
        click.option(
            "--exporter",
            type=click.Choice(["auto", "dynamo", "torchscript"]),
            default="auto",
            show_default=True,
            help="auto tries dynamo, then falls back to TorchScript.",
        ),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def check_weights_flags(checkpoint, pretrained) -> None:
    if checkpoint and pretrained:
        raise VitdeployError("--checkpoint and --pretrained cannot be used together", "pick one source of weights")
