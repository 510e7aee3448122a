"""The `vitdeploy` command line.

Commands live in `vitdeploy/commands/<name>.py` and are imported only when
run, so `vitdeploy --help` answers instantly (no torch import). Every
VitdeployError becomes one line on stderr and its exit code, never a traceback.
"""
from __future__ import annotations

import importlib
import sys

import click

from vitdeploy import __version__

# name -> (module, one-line help). Order is the order `--help` lists them.
COMMANDS: dict[str, tuple[str, str]] = {
    "build": ("vitdeploy.commands.build", "Export, rewrite, set precision and build a TensorRT engine."),
    "models": ("vitdeploy.commands.models", "List the supported model aliases."),
    "export": ("vitdeploy.commands.export", "Export a model to ONNX and verify it against PyTorch."),
    "rewrite": ("vitdeploy.commands.rewrite", "Replace attention subgraphs with plugin nodes, verified."),
    "verify": ("vitdeploy.commands.verify", "Check that two ONNX graphs compute the same outputs."),
    "convert": ("vitdeploy.commands.convert", "Convert an ONNX graph to FP16 (explicit casts)."),
    "lint": ("vitdeploy.commands.lint", "Check an ONNX graph against a TensorRT version's parser and fusions."),
    "calibrate": ("vitdeploy.commands.calibrate", "INT8 calibration: write a Q/DQ ONNX and a calibration cache."),
    "accuracy": ("vitdeploy.commands.accuracy", "Compare a candidate graph's predictions with a reference."),
    "package": ("vitdeploy.commands.package", "Write a Triton model repository entry or a DeepStream config for a build."),
    "infer": ("vitdeploy.commands.infer", "Classify (or detect on) an image with an engine or ONNX artifact."),
    "bench": ("vitdeploy.commands.bench", "Measure latency and throughput."),
    "compare": ("vitdeploy.commands.compare", "Gate latency/accuracy regressions between two bench results."),
    "report": ("vitdeploy.commands.report", "Plot bench results to PNG and Markdown."),
    "matrix": ("vitdeploy.commands.matrix", "Benchmark models x precisions x device types, here or on a Ray cluster."),
    "doctor": ("vitdeploy.commands.doctor", "Show what this machine has and what build will do here."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        return getattr(importlib.import_module(COMMANDS[name][0]), "command")

    def resolve_command(self, ctx, args):
        name = args[0] if args else None
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            import difflib

            close = difflib.get_close_matches(name, self.list_commands(ctx), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            ctx.fail(f"No such command '{name}'.{hint}")
        return super().resolve_command(ctx, args)

    def format_commands(self, ctx, formatter):
        rows = [(n, COMMANDS[n][1]) for n in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="vitdeploy")
def cli():
    """Compile vision transformers to verified ONNX and TensorRT engines.

    \b
    Example:
      vitdeploy build --model swin_t --fp16 -o build/swin_t
    """


def join_img_size(argv: list[str]) -> list[str]:
    """`--img-size H W` -> `--img-size HxW`: Click options take a fixed number of values, and a
    non-square size should read as naturally as a square one (`--img-size 224`)."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a == "--img-size" and i + 2 < len(argv) and argv[i + 1].isdigit() and argv[i + 2].isdigit():
            out += [a, f"{argv[i + 1]}x{argv[i + 2]}"]
            i += 3
            continue
        out.append(a)
        i += 1
    return out


def main(argv=None):
    """Entry point: run the CLI, turning VitdeployError into one line and its exit code."""
    from vitdeploy.errors import VitdeployError

    argv = join_img_size(list(sys.argv[1:] if argv is None else argv))
    try:
        return cli.main(args=argv, prog_name="vitdeploy", standalone_mode=False)
    except VitdeployError as e:
        click.echo(f"error: {e.one_line()}", err=True)
        sys.exit(e.exit_code)
    except OSError as e:  # an unwritable output, a full disk: one line and exit 2, never 1 (`compare`'s regression code)
        where = f": {e.filename}" if e.filename else ""
        click.echo(f"error: {e.strerror or e}{where} (check the path, its permissions and free space)", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
