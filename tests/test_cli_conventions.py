"""Issue 18: what a new user hits first -- progress in CI logs, one vocabulary, JSON output, Python API errors,
DeepStream's single scale, and `bench --model X --backend ort` building what it needs."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from vitdeploy.errors import EXIT_USAGE, VitdeployError


# ----------------------------------------------------------------------------- progress without a terminal

def test_stage_prints_a_start_line_sub_phases_and_counts_in_a_log(capsys, monkeypatch):
    from vitdeploy import console as c

    monkeypatch.setattr(c, "COUNT_EVERY_S", 0.0)
    with c.stage("calibrate") as st:
        c.phase("collecting ranges")
        with c.progress(3, "calibrating (entropy)") as advance:
            for _ in range(3):
                advance(1)
        st.detail = "done"
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert lines[0] == "… calibrate  started" and lines[1] == "  calibrate: collecting ranges"
    assert lines[-1].startswith("✔ calibrate  done")
    counts = out.err.splitlines()
    assert counts[:2] == ["  calibrating (entropy): 1/3 images (" + counts[0].split("(")[-1],
                          "  calibrating (entropy): 2/3 images (" + counts[1].split("(")[-1]]
    assert counts[-1].startswith("  calibrating (entropy): 3/3 images in ")
    assert "" not in lines and "" not in counts  # no stray blank lines


def test_quiet_swallows_nested_stages(capsys):
    from vitdeploy import console as c

    with c.quiet():
        with c.stage("export") as st:
            c.phase("exporting")
            st.detail = "x"
    assert capsys.readouterr().out == ""


def test_entropy_calibration_reports_its_threshold_search(capsys, monkeypatch):
    """ORT's entropy threshold search is the long silent part of INT8 calibration: it is counted per tensor."""
    from onnx import TensorProto, helper

    from vitdeploy import console as c
    from vitdeploy.calibration.data import CalibrationData
    from vitdeploy.calibration.quantization import calibrate

    monkeypatch.setattr(c, "COUNT_EVERY_S", 0.0)
    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 4], np.random.default_rng(0).standard_normal(32).astype(np.float32))
    g = helper.make_graph([helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 2, 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    data = CalibrationData(np.random.default_rng(1).standard_normal((4, 2, 2, 2)).astype(np.float32), source="test")
    with c.stage("calibrate"):
        calibrate(model, data, "entropy", batch=1)
    err = capsys.readouterr().err
    assert "calibrating (entropy): 4/4 images" in err
    searched = [line for line in err.splitlines() if line.startswith("  entropy threshold search: ")]
    done, total = searched[-1].split(": ")[1].split(" ")[0].split("/")
    assert done == total and int(total) >= 2  # every histogram ORT searched (the MatMul's tensors), counted


# ----------------------------------------------------------------------------- one vocabulary

def test_old_flag_spellings_still_work_and_name_the_new_one(cli_run, tmp_path):
    res = cli_run("calibrate", "--onnx", str(tmp_path / "none.onnx"), "--data", str(tmp_path), "-o", str(tmp_path / "o"))
    assert res.exit_code == EXIT_USAGE
    assert "--data is now --calib-data" in res.output
    assert "ONNX file" in res.output and "does not exist" in res.output  # the alias reached the new parameter


def test_passing_both_spellings_is_refused(cli_run, tmp_path):
    res = cli_run("calibrate", "--onnx", "x.onnx", "--data", str(tmp_path), "--calib-data", str(tmp_path), "-o", "o")
    assert res.exit_code == EXIT_USAGE and "--data is the old name of --calib-data" in res.output


def test_rewrite_mode_alias_maps_to_plugins(cli_run, tmp_path):
    res = cli_run("rewrite", str(tmp_path / "in.onnx"), "-o", str(tmp_path / "out.onnx"), "--swin-mode", "native")
    assert "--swin-mode is now --plugins" in res.output and res.exit_code == EXIT_USAGE  # then: the missing input


@pytest.mark.parametrize("command,flags", [
    ("build", ["--calib-data", "--calib-method", "--calib-images", "--batch", "--dynamic-batch", "--plugins", "--reduced"]),
    ("calibrate", ["--calib-data", "--calib-method", "--calib-images", "--calib-cache", "--run-batch", "--dynamic-batch"]),
    ("accuracy", ["--accuracy-data", "--accuracy-images", "--run-batch", "--json"]),
    ("bench", ["--accuracy-data", "--batch-sizes", "--json"]),
    ("rewrite", ["--plugins", "--json"]),
    ("export", ["--batch", "--dynamic-batch", "--reduced"]),
])
def test_help_shows_the_one_name_per_concept(cli_run, command, flags):
    text = cli_run(command, "--help").output
    for f in flags:
        assert f in text, (command, f)
    for old in ("--num-images", "--swin-mode", "--method ", "--cache "):
        assert old not in text, (command, old)


def test_json_flag_alone_prints_json_on_stdout_and_with_a_file_writes_it(cli_run, tmp_path):
    res = cli_run("doctor", "--json")
    assert res.exit_code == 0 and "vitdeploy" in json.loads(res.stdout)
    path = tmp_path / "d" / "doctor.json"
    res = cli_run("doctor", "--json", str(path))
    assert res.exit_code == 0 and json.loads(path.read_text())["vitdeploy"]
    assert f"wrote {path}" in res.output and "doctor" in res.output  # the table as well


# ----------------------------------------------------------------------------- Python API

def _manifest(tmp_path, **engine):
    from vitdeploy.artifact import atomic_write_json, new_manifest

    m = new_manifest()
    m.update(files={"onnx": {"path": "model.fp16.onnx"}}, engine=engine)
    atomic_write_json(tmp_path / "manifest.json", m)


def test_engine_on_a_skipped_engine_says_it_does_not_exist_and_why(tmp_path):
    from vitdeploy import Engine

    _manifest(tmp_path, built=False, skipped="TensorRT is not installed here (ModuleNotFoundError)")
    with pytest.raises(VitdeployError) as e:
        Engine(tmp_path / "model.plan")
    msg = e.value.one_line()
    assert "model.plan does not exist: the build skipped the engine step (TensorRT is not installed here" in msg
    assert f"vitdeploy build --onnx {tmp_path / 'model.fp16.onnx'} -o {tmp_path}" in msg
    assert "vitdeploy.onnxrt.session" in msg


def test_engine_on_an_onnx_file_points_at_onnxrt(tmp_path):
    from vitdeploy import Engine

    with pytest.raises(VitdeployError) as e:
        Engine(tmp_path / "model.onnx")
    assert "model.onnx is an ONNX graph, not a TensorRT engine" in e.value.message
    assert "vitdeploy.onnxrt.session(path)" in e.value.hint


# ----------------------------------------------------------------------------- DeepStream's one scale

def test_single_scale_is_exact_for_equal_std_and_minimax_otherwise():
    from vitdeploy.deploy.serving.deepstream import fit_scale

    s = fit_scale([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
    assert s.exact and s.worst_error == pytest.approx(0.0, abs=1e-12) and s.factor == pytest.approx(1 / 127.5)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    s = fit_scale(mean, std)
    x = np.arange(256.0)[:, None]
    model = (x / 255 - np.asarray(mean)) / np.asarray(std)

    def worst(k):
        return np.abs(k * (x - 255 * np.asarray(mean)) - model).max()

    assert worst(s.factor) == pytest.approx(s.worst_error, rel=1e-9)
    grid = np.linspace(1 / (255 * 0.229), 1 / (255 * 0.224), 2001)
    assert min(worst(k) for k in grid) >= s.worst_error * (1 - 1e-6)  # no single scale does better


# ----------------------------------------------------------------------------- bench builds what it runs

@pytest.mark.slow
def test_bench_model_with_the_ort_backend_builds_on_the_fly_once(cli_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ("bench", "--model", "vit_t", "--backend", "ort", "--img-size", "64", "--batch-sizes", "1",
            "--duration-s", "0", "--warmup-ms", "0", "--min-iters", "2", "--json", "r.json")
    res = cli_run(*args)
    assert res.exit_code == 0, res.output
    line = next(x for x in res.output.splitlines() if x.startswith("✔ build"))
    assert "vit_t (fp32) for --backend ort: build/vit_t_fp32_64/model.onnx built" in line
    assert "'vitdeploy build --model vit_t --img-size 64 -o build/vit_t_fp32_64'" in line
    run = json.loads((tmp_path / "r.json").read_text())["runs"][0]
    assert run["results"][0]["batch"] == 1
    res = cli_run(*args)
    assert res.exit_code == 0, res.output
    assert "build/vit_t_fp32_64/model.onnx reused (cached)" in res.output
    assert not any(x.startswith("✔ export") for x in res.output.splitlines())  # the build's own lines stay quiet
    onnx.checker.check_model(str(tmp_path / "build" / "vit_t_fp32_64" / "model.onnx"))
