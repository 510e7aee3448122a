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


# ----------------------------------------------------------------------------- one vocabulary
# One flag per concept across commands (README, "Commands"). Old spellings stay as hidden
# aliases for one release: they still work and print one line naming the new flag.

def renamed(old_flag: str, dest: str, new_flag: str, convert=None, **option_kw):
    """Decorator: a hidden `old_flag` feeding the parameter `dest` (the option `new_flag`).

    Put it below @click.command with the other options. Passing both spellings is an error.
    `convert` maps an old value to the new option's value (e.g. --mode native -> --plugins off).
    """
    import functools

    param = f"{dest}__old_{old_flag.lstrip('-').replace('-', '_')}"

    def deco(f):
        @functools.wraps(f)
        def wrapper(*args, **kwargs):
            old = kwargs.pop(param, None)
            if old is not None and old != ():
                ctx = click.get_current_context()
                if ctx.get_parameter_source(dest) == click.core.ParameterSource.COMMANDLINE:
                    raise VitdeployError(f"{old_flag} is the old name of {new_flag}: pass one of them", f"use {new_flag}")
                kwargs[dest] = convert(old) if convert else old
                from vitdeploy.console import err_console

                err_console.print(f"[yellow]{old_flag} is now {new_flag}[/] (the old name goes in the next release)")
            return f(*args, **kwargs)

        return click.option(old_flag, param, hidden=True, default=None, **option_kw)(wrapper)

    return deco


def json_option(what: str = "the result"):
    """`--json [FILE]`: JSON on stdout (flag alone, or FILE '-'), or written to FILE."""
    return click.option("--json", "json_out", is_flag=False, flag_value="-", default=None, metavar="[FILE]",
                        help=f"Write {what} as JSON to FILE, or to stdout (everything else goes to stderr) "
                             "when FILE is omitted or '-'.")


def json_to_stdout(target: str | None) -> bool:
    """With `--json` alone (or '-'), route the console to stderr for the rest of the command; True if so."""
    if target != "-":
        return False
    from vitdeploy.console import to_stderr

    click.get_current_context().with_resource(to_stderr())
    return True


def emit_json(doc, target: str | None) -> None:
    """Print `doc` on stdout ('-') or write it atomically to FILE (its folder is created)."""
    import json
    import sys
    from pathlib import Path

    if target is None:
        return
    if target == "-":
        sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
        sys.stdout.flush()
        return
    from vitdeploy.artifact import atomic_write_json
    from vitdeploy.console import console

    Path(target).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(target, doc)
    console.print(f"[green]✔[/] wrote {target}")
