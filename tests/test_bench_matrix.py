"""benchmarks/matrix.toml is valid, names real models, and expands into the commands a user would type."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import run_matrix  # noqa: E402


def test_shipped_matrix_is_consistent():
    from vitdeploy.models import REGISTRY

    defaults, suites = run_matrix.load_matrix(ROOT / "benchmarks" / "matrix.toml")
    for s in suites:
        cfg = {**defaults, **s}
        assert set(s["models"]) <= set(REGISTRY), s["name"]
        if cfg.get("prepare", "none") != "none":
            lo, _, hi = (int(v) for v in cfg["dynamic_batch"].split(":"))
            assert all(lo <= b <= hi for b in cfg["batches"]), f"{s['name']}: batches outside {cfg['dynamic_batch']}"


def test_plan_builds_exact_commands(tmp_path):
    defaults, suites = run_matrix.load_matrix(ROOT / "benchmarks" / "matrix.toml")
    cells = run_matrix.plan(defaults, suites, tmp_path / "w", tmp_path / "r", only=["trt", "torch-gpu"],
                            models=["swin_t"], calib_data="calib.npz")
    names = [c.name for c in cells]
    assert names == ["trt/swin_t/fp32", "trt/swin_t/fp16", "trt/swin_t/int8", "torch-gpu/swin_t/fp32", "torch-gpu/swin_t/fp16"]
    int8 = cells[2]
    assert int8.prepare[1:] == ["build", "--model", "swin_t", "-o", str(tmp_path / "w" / "trt" / "swin_t_int8"),
                                "--dynamic-batch", "1:8:64", "--int8", "--calib-data", "calib.npz"]
    assert int8.bench[1:4] == ["bench", str(int8.artifact), "--backend"] and not int8.notes
    torch_fp16 = cells[4]
    assert torch_fp16.prepare is None
    b = torch_fp16.bench
    assert b[b.index("--model") + 1] == "swin_t" and b[b.index("--precision") + 1] == "fp16"
    assert b[b.index("--device") + 1] == "cuda" and b[b.index("--batch-sizes") + 1] == "1,8,32,64"
    assert b[b.index("--json") + 1] == str(tmp_path / "r" / "torch-gpu_swin_t_fp16.json")


def test_int8_without_calibration_data_is_flagged_not_run(tmp_path):
    defaults, suites = run_matrix.load_matrix(ROOT / "benchmarks" / "matrix.toml")
    cell = run_matrix.plan(defaults, suites, tmp_path, tmp_path, only=["trt"], models=["vit_s"])[2]
    assert cell.precision == "int8" and "calibration data" in cell.notes[0]
    assert run_matrix.run_cell(cell, rebuild=False) == cell.notes[0]


def test_bad_matrix_is_rejected(tmp_path):
    bad = tmp_path / "m.toml"
    bad.write_text('[[suite]]\nname = "x"\nbackend = "ort"\nmodels = ["vit_t"]\nprecisions = ["fp32"]\nbatchez = [1]\n')
    with pytest.raises(SystemExit, match="unknown keys"):
        run_matrix.load_matrix(bad)


def test_dry_run_prints_commands(capsys):
    assert run_matrix.main(["--dry-run", "--suite", "ort-cpu"]) == 0
    out = capsys.readouterr().out
    assert "# ort-cpu/vit_t/fp32" in out and " export --model deit_t " in out and " bench " in out
