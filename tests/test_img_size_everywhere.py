"""Issue 26 item 8: one --img-size parser everywhere: `H W`, `HxW` or one number, in build, export, bench,
calibrate and the matrix TOML (bench took only a square integer)."""
from __future__ import annotations

import click
import pytest

from vitdeploy.bench import schema


@pytest.mark.parametrize("command", ["build", "export", "bench", "calibrate"])
def test_every_command_takes_the_same_img_size(command):
    from vitdeploy.cli import cli
    from vitdeploy.commands.options import IMG_SIZE

    cmd = cli.get_command(click.Context(cli), command)
    opt = next(p for p in cmd.params if p.name == "img_size")
    assert opt.type is IMG_SIZE and opt.metavar == "H [W]"


def test_bench_model_takes_a_non_square_size(cli_run, tmp_path):
    out = tmp_path / "b.json"
    res = cli_run("bench", "--model", "vit_t", "--img-size", "32", "48", "--duration-s", "0", "--min-iters", "2",
                  "--warmup-ms", "0", "--quiet", "--json", out)
    assert res.exit_code == 0, res.output
    assert schema.read(out)["runs"][0]["identity"]["input"]["shape"] == [3, 32, 48]
    res = cli_run("bench", "--model", "vit_t", "--img-size", "32x", "--duration-s", "0")
    assert res.exit_code == 2 and "--img-size '32x' is not a size" in res.output


def test_matrix_img_size_is_one_number_or_height_width(tmp_path):
    from vitdeploy.errors import VitdeployError
    from vitdeploy.matrix import plan

    base = """
[defaults]
batches = [1]
dynamic_batch = "1:1:1"
{size}

[devices.cpu]
resources = {{}}

[[suite]]
name = "ort-cpu"
backend = "ort"
prepare = "build"
models = ["vit_t"]
precisions = ["fp32"]
devices = ["cpu"]
"""
    p = tmp_path / "m.toml"
    p.write_text(base.format(size="img_size = [32, 48]"))
    prepares = plan.expand(p).prepares.values()
    assert [pr.args[pr.args.index("--img-size") + 1] for pr in prepares] == ["32x48"]
    p.write_text(base.format(size="img_size = [32, 48, 3]"))
    with pytest.raises(VitdeployError, match=r"img_size.*one number or \[height, width\]"):
        plan.expand(p)
