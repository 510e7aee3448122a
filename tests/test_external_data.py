"""Issue 23 part 2: graphs with external data (every model over 2 GiB has them), read, written, copied and
hashed together. A small graph is forced into external data with a low threshold
(VITDEPLOY_EXTERNAL_DATA_BYTES); the 2.5 GB ViT-H runs are measured by benchmarks/large_model.py, not here.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from vitdeploy.onnx_files import (
    THRESHOLD_ENV, check_data_files, copy_onnx, data_files, onnx_entry, save_onnx, sha256_onnx,
)
from vitdeploy.errors import VitdeployError
from vitdeploy.onnxrt import session


def _mlp(seed: int = 0, hidden: int = 256):
    """input [N, 64] -> MatMul(64 x hidden) -> Relu -> MatMul(hidden x 10): 68 KB of weights at hidden 256."""
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.standard_normal((64, hidden)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((hidden, 10)).astype(np.float32), "w2")
    nodes = [helper.make_node("MatMul", ["input", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["logits"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 64])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], [w1, w2])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_over_the_threshold_the_weights_go_to_one_data_file(tmp_path, monkeypatch):
    x = np.random.default_rng(1).standard_normal((2, 64)).astype(np.float32)
    small = tmp_path / "inline.onnx"
    save_onnx(_mlp(), small)
    assert data_files(small) == [] and sha256_onnx(small) == onnx_entry(tmp_path, small)["sha256"]
    ref = session(small).run(None, {"input": x})[0]

    monkeypatch.setenv(THRESHOLD_ENV, "10000")
    big = tmp_path / "model.onnx"
    save_onnx(_mlp(), big)
    assert data_files(big) == ["model.onnx.data"]
    assert (tmp_path / "model.onnx.data").stat().st_size == (64 * 256 + 256 * 10) * 4
    assert big.stat().st_size < 1000  # the graph alone
    entry = onnx_entry(tmp_path, big)
    assert entry["data"][0]["path"] == "model.onnx.data" and entry["data"][0]["bytes"] == 75776
    assert sha256_onnx(big) != entry["sha256"]  # the data is part of the hash
    np.testing.assert_array_equal(session(big).run(None, {"input": x})[0], ref)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind

    # copied together, and runnable from the copy
    (tmp_path / "elsewhere").mkdir()
    copied = copy_onnx(big, tmp_path / "elsewhere" / "model.onnx")
    assert (tmp_path / "elsewhere" / "model.onnx.data").is_file()
    assert sha256_onnx(copied) == sha256_onnx(big)
    np.testing.assert_array_equal(session(copied).run(None, {"input": x})[0], ref)


def test_a_missing_data_file_is_one_line_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv(THRESHOLD_ENV, "10000")
    path = tmp_path / "model.onnx"
    save_onnx(_mlp(), path)
    (tmp_path / "model.onnx.data").unlink()
    with pytest.raises(VitdeployError) as e:
        check_data_files(path)
    assert e.value.message == f"model.onnx keeps its weights in model.onnx.data, which is missing from {tmp_path}"
    assert "copy model.onnx.data next to model.onnx" in e.value.hint
    assert onnx.load(str(path), load_external_data=False).graph.node  # the graph itself is intact


def test_fp16_of_an_external_data_graph_streams_to_the_same_graph(tmp_path, monkeypatch):
    """The graph is converted without its weights, each weight streamed FP32 -> FP16 from file to file: the result
    equals the in-memory conversion tensor for tensor."""
    from vitdeploy.artifact import load_onnx
    from vitdeploy.calibration.precision import convert_fp16, convert_fp16_file

    monkeypatch.setenv(THRESHOLD_ENV, "10000")
    src = tmp_path / "model.onnx"
    save_onnx(_mlp(3, hidden=5000), src)  # w1 is 1.3 MB: over the 1 MiB that is read with the graph, so streamed
    summary = convert_fp16_file(src, tmp_path / "model.fp16.onnx")
    monkeypatch.delenv(THRESHOLD_ENV)
    expected, expected_summary = convert_fp16(_mlp(3, hidden=5000))
    assert data_files(tmp_path / "model.fp16.onnx") == ["model.fp16.onnx.data"] and summary == expected_summary
    got = {t.name: numpy_helper.to_array(t) for t in load_onnx(tmp_path / "model.fp16.onnx").graph.initializer}
    want = {t.name: numpy_helper.to_array(t) for t in expected.graph.initializer}
    assert got.keys() == want.keys() and all(got[k].dtype == np.float16 for k in ("w1", "w2"))
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


# ----------------------------------------------------------------------------- through the build

def test_build_keeps_every_graph_with_its_data_and_hashes_both(cli_run, tmp_path, monkeypatch):
    import json
    import shutil

    from vitdeploy.onnx_files import sha256_onnx

    monkeypatch.setenv(THRESHOLD_ENV, "100000")  # test_vit's 1.5 MB of weights count as "over the limit"
    a = tmp_path / "a"
    r = cli_run("build", "--model", "test_vit", "--fp16", "--exporter", "torchscript", "--no-engine", "-o", a)
    assert r.exit_code == 0, r.output
    m = json.loads((a / "manifest.json").read_text())
    for role, name in (("onnx_exported", "model.onnx"), ("onnx", "model.fp16.onnx")):
        entry = m["files"][role]
        assert entry["path"] == name and [d["path"] for d in entry["data"]] == [f"{name}.data"]
        assert (a / f"{name}.data").stat().st_size == entry["data"][0]["bytes"] > 100000 // 2
        assert data_files(a / name) == [f"{name}.data"]
    assert m["export"]["parity"]["passed"] and m["accuracy"]["top1_agreement"] == 100.0

    # the cache checks the data files too: a changed data file redoes the step that wrote it, and only that
    r = cli_run("build", "--model", "test_vit", "--fp16", "--exporter", "torchscript", "--no-engine", "-o", a)
    assert "model.onnx (cached)" in r.output and "fp16 -> model.fp16.onnx (cached)" in r.output
    with open(a / "model.fp16.onnx.data", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02\x03")
    r = cli_run("build", "--model", "test_vit", "--fp16", "--exporter", "torchscript", "--no-engine", "-o", a)
    assert r.exit_code == 0 and "model.onnx (cached)" in r.output and "fp16 -> model.fp16.onnx (cached)" not in r.output

    # a user's external-data ONNX through --onnx: copied with its data, hashed with it
    user = tmp_path / "user"
    user.mkdir()
    shutil.copy(a / "model.onnx", user / "model.onnx")
    shutil.copy(a / "model.onnx.data", user / "model.onnx.data")
    b = tmp_path / "b"
    r = cli_run("build", "--onnx", user / "model.onnx", "--fp16", "--no-engine", "-o", b)
    assert r.exit_code == 0, r.output
    mb = json.loads((b / "manifest.json").read_text())
    assert (b / "model.onnx.data").is_file() and mb["source_onnx"]["sha256"] == sha256_onnx(user / "model.onnx")
    x = np.random.default_rng(0).standard_normal((1, 3, 160, 160)).astype(np.float32)
    ref = session(b / "model.fp16.onnx").run(None, {"input": x})[0]

    # served with its data file under the name the graph gives it
    repo = tmp_path / "repo"
    pp = tmp_path / "pp.json"  # a bare --onnx graph says nothing about its preprocessing: the user states it
    pp.write_text(json.dumps({"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "interpolation": "bicubic",
                              "crop_pct": 0.875, "crop_mode": "center"}))
    r = cli_run("package", b, "--triton-repo", repo, "--preprocess", pp)
    assert r.exit_code == 0, r.output
    version = repo / "b" / "1"  # no manifest came with the graph: the build folder names the entry
    assert (version / "model.onnx").is_file() and (version / "model.fp16.onnx.data").is_file()
    np.testing.assert_array_equal(session(version / "model.onnx").run(None, {"input": x})[0], ref)

    # the graph without its data: one line naming the file, exit 2, nothing written
    (user / "model.onnx.data").unlink()
    c = tmp_path / "c"
    r = cli_run("build", "--onnx", user / "model.onnx", "--fp16", "-o", c)
    assert r.exit_code == 2
    assert r.output.strip().splitlines()[-1] == (
        f"error: model.onnx keeps its weights in model.onnx.data, which is missing from {user} "
        "(copy model.onnx.data next to model.onnx: torch.onnx.export writes them together)")
    assert not c.exists()


def test_a_model_over_the_threshold_exports_in_a_child_process_and_leaves_no_weights_behind(tmp_path, monkeypatch):
    """PyTorch's dynamo exporter keeps about twice the weights alive in the exporting process; over the
    external-data threshold the export runs in a child, so this process holds no tensor of the model after."""
    import gc

    import torch

    from vitdeploy.deploy.export import BatchSpec, ExportOptions, export_verified_isolated
    from vitdeploy.sources import resolve

    def live_bytes():
        gc.collect()
        return sum(t.numel() * t.element_size() for t in gc.get_objects()
                   if isinstance(t, torch.Tensor) and not t.is_meta and type(t).__name__ != "FakeTensor")

    monkeypatch.setenv(THRESHOLD_ENV, "100000")  # test_vit's 1.5 MB of weights count as "over the limit"
    before = live_bytes()
    res, fields, parity = export_verified_isolated(resolve("test_vit"), tmp_path / "model.onnx",
                                                   ExportOptions(batch=BatchSpec.static(1), exporter="dynamo"))
    assert parity["passed"] and res.exporter == "dynamo" and fields["model"]["parameters"] > 300_000
    assert data_files(tmp_path / "model.onnx") == ["model.onnx.data"]
    assert live_bytes() - before < 100_000  # the model's 1.5 MB stayed in the child
