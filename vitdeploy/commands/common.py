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


class ImgSize(click.ParamType):
    """`--img-size`: 224 (square), 240x320 or 240,320 (height x width); `--img-size 240 320` is
    joined into 240x320 by `vitdeploy.cli.join_img_size` before Click parses the line."""

    name = "H[xW]"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        text = str(value).strip().lower().replace(",", "x")
        parts = text.split("x")
        try:
            h, w = (int(parts[0]), int(parts[0])) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
            if len(parts) > 2:
                raise ValueError
        except ValueError:
            raise VitdeployError(f"--img-size '{value}' is not a size",
                                 "give HEIGHT WIDTH, HEIGHTxWIDTH or one number for a square, e.g. --img-size 240 320") from None
        if h <= 0 or w <= 0:
            raise VitdeployError(f"--img-size {h}x{w} must be positive", "e.g. --img-size 224 or --img-size 240 320")
        return h, w


IMG_SIZE = ImgSize()


def parse_img_size(img_size) -> tuple[int, int] | None:
    """None, an int (square) or an (H, W) pair -> (H, W) or None."""
    if img_size is None:
        return None
    return (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)


def model_source_options(f):
    """--model/--checkpoint/--pretrained/--img-size/--batch/--dynamic-batch/--opset/--exporter."""
    opts = [
        click.option("--checkpoint", type=click.Path(dir_okay=False), help="Weights: .safetensors or .pth (loaded with weights_only=True)."),
        click.option("--pretrained", is_flag=True, help="Download pretrained weights from the hub (needs network)."),
        click.option("--img-size", type=IMG_SIZE, metavar="H [W]",
                     help="Input size: H W, HxW, or one number for a square (default: the model's)."),
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
