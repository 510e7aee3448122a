"""Which file `vitdeploy bench DIR` times: the engine for trt, the final ONNX for ort."""
from __future__ import annotations

import json

import pytest

from vitdeploy.bench.artifact import resolve
from vitdeploy.errors import VitdeployError


def _dir(tmp_path, files, precision=None):
    for entry in files.values():
        (tmp_path / entry["path"]).write_bytes(b"x")
    manifest = {"schema": 1, "model": {"alias": "swin_t"}, "files": files}
    if precision:
        manifest["precision"] = precision
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    return tmp_path


def test_build_directory(tmp_path):
    d = _dir(tmp_path, {"onnx": {"path": "model.fp16.onnx"}, "onnx_exported": {"path": "model.onnx"},
                        "engine": {"path": "model.plan"}}, precision={"applied": "fp16"})
    art = resolve(str(d))
    assert art.model == "swin_t" and art.precision == "fp16"
    assert art.path_for("trt").name == "model.plan" and art.path_for("ort").name == "model.fp16.onnx"
    assert art.reference.name == "model.onnx"


def test_export_then_rewrite_directory(tmp_path):
    d = _dir(tmp_path, {"onnx": {"path": "model.onnx"}, "rewritten": {"path": "model.rewritten.onnx"}})
    art = resolve(str(d))
    assert art.onnx.name == "model.rewritten.onnx" and art.reference.name == "model.onnx" and art.engine is None
    with pytest.raises(VitdeployError, match="needs a TensorRT engine"):
        art.path_for("trt")


def test_files_and_errors(tmp_path):
    plan = tmp_path / "x.engine"
    plan.write_bytes(b"x")
    assert resolve(str(plan)).engine == plan
    with pytest.raises(VitdeployError, match="has no manifest.json"):
        resolve(str(tmp_path))
    (tmp_path / "w.bin").write_bytes(b"x")
    with pytest.raises(VitdeployError, match="cannot tell what w.bin is"):
        resolve(str(tmp_path / "w.bin"))


@pytest.mark.parametrize("content", [b"", b"\x08\x07garbage\xff\xfe" * 50], ids=["empty", "corrupt"])
def test_unreadable_onnx_is_bad_input(tmp_path, content):
    from vitdeploy.bench.artifact import onnx_precision

    bad = tmp_path / "m.onnx"
    bad.write_bytes(content)
    with pytest.raises(VitdeployError, match="m.onnx is not a readable ONNX model"):
        onnx_precision(bad)


def test_binary_manifest_is_bad_input(tmp_path):
    (tmp_path / "manifest.json").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(VitdeployError, match="is not a JSON text file"):
        resolve(str(tmp_path))
