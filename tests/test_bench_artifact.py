"""Which file `vitdeploy bench DIR` times: the engine for trt, the final ONNX for ort."""
from __future__ import annotations

import json

import pytest

from vitdeploy.bench.identity import resolve
from vitdeploy.errors import VitdeployError


def tiny_graph(path, kind="fp32"):
    """A one-MatMul graph: fp32, fp16 (FP16 weights behind casts) or int8 (Q/DQ on the input, FP16 elsewhere)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes, inits = [], []
    if kind == "fp32":
        inits.append(numpy_helper.from_array(np.ones((4, 4), np.float32), "w"))
        nodes.append(helper.make_node("MatMul", ["input", "w"], ["y"]))
    else:
        inits.append(numpy_helper.from_array(np.ones((4, 4), np.float16), "w"))
        src = "input"
        if kind == "int8":
            inits += [numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(np.array(0, np.int8), "z")]
            nodes += [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["q"]),
                      helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"])]
            src = "dq"
        nodes += [helper.make_node("Cast", [src], ["h"], to=TensorProto.FLOAT16), helper.make_node("MatMul", ["h", "w"], ["m"]),
                  helper.make_node("Cast", ["m"], ["y"], to=TensorProto.FLOAT)]
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", 19)]),
              str(path))


def _dir(tmp_path, files, precision=None, kinds=None):
    for key, entry in files.items():
        if entry["path"].endswith(".onnx"):
            tiny_graph(tmp_path / entry["path"], (kinds or {}).get(key, "fp32"))
        else:
            (tmp_path / entry["path"]).write_bytes(b"x")
    manifest = {"schema": 1, "model": {"alias": "swin_t"}, "files": files}
    if precision:
        manifest["precision"] = precision
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    return tmp_path


def test_build_directory(tmp_path):
    d = _dir(tmp_path, {"onnx": {"path": "model.fp16.onnx"}, "onnx_exported": {"path": "model.onnx"},
                        "engine": {"path": "model.plan"}}, precision={"applied": "fp16"}, kinds={"onnx": "fp16"})
    art = resolve(str(d))
    assert art.model == "swin_t" and art.precision == "fp16"
    assert art.path_for("trt").name == "model.plan" and art.path_for("ort").name == "model.fp16.onnx"
    assert art.reference.name == "model.onnx"
    assert resolve(str(d / "model.plan")).precision == "fp16"  # an engine: the graph it was built from


def test_precision_label_comes_from_the_graph_not_the_name(tmp_path):
    """Issue 15 item 8: the INT8 file read "int8", its directory "int8+fp16", so compare refused identical settings."""
    d = _dir(tmp_path, {"onnx": {"path": "model.int8.onnx"}, "onnx_exported": {"path": "model.onnx"}},
             precision={"applied": "int8+fp16"}, kinds={"onnx": "int8"})
    assert resolve(str(d)).precision == resolve(str(d / "model.int8.onnx")).precision == "int8+fp16"
    tiny_graph(tmp_path / "renamed.fp16.onnx", "fp32")  # the name lies, the graph does not
    assert resolve(str(tmp_path / "renamed.fp16.onnx")).precision == "fp32"
    from vitdeploy.bench.identity import canonical_precision

    assert canonical_precision("FP16+INT8") == "int8+fp16" and canonical_precision("fp32") == "fp32"


def test_a_file_benched_alone_finds_its_plain_export(tmp_path):
    """Issue 15 item 1: `bench DIR/model.int8.onnx --accuracy-data` compared the file with itself (100%)."""
    d = _dir(tmp_path, {"onnx": {"path": "model.int8.onnx"}, "onnx_exported": {"path": "model.onnx"}},
             kinds={"onnx": "int8"})
    art = resolve(str(d / "model.int8.onnx"))
    assert art.reference == d / "model.onnx" and art.onnx != art.reference
    assert resolve(str(d / "model.onnx")).reference is None  # the export itself has nothing to compare with
    # calibrate's layout: the export's manifest lists the INT8 graph beside the plain "onnx"
    e = tmp_path / "calib"
    e.mkdir()
    _dir(e, {"onnx": {"path": "model.onnx"}, "onnx_int8": {"path": "model.int8.onnx"}}, kinds={"onnx_int8": "int8"})
    assert resolve(str(e / "model.int8.onnx")).reference == e / "model.onnx"


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
    from vitdeploy.bench.identity import onnx_precision

    bad = tmp_path / "m.onnx"
    bad.write_bytes(content)
    with pytest.raises(VitdeployError, match="m.onnx is not a readable ONNX model"):
        onnx_precision(bad)


def test_binary_manifest_is_bad_input(tmp_path):
    (tmp_path / "manifest.json").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(VitdeployError, match="is not a JSON text file"):
        resolve(str(tmp_path))


@pytest.mark.parametrize("sidecar", [b'{"model": "vit_t"}', b"[1, 2]", b"{not json", b"\xff\xfebinary"],
                         ids=["model-not-an-object", "not-an-object", "broken-json", "binary"])
def test_a_loose_file_with_an_unusable_manifest_beside_it_is_still_benchable(tmp_path, sidecar):
    """A manifest.json beside a loose .onnx/.engine only adds provenance; a bad one is ignored, not a crash."""
    onnx_path = tmp_path / "m.onnx"
    tiny_graph(onnx_path)
    plan = tmp_path / "m.engine"
    plan.write_bytes(b"x")
    (tmp_path / "manifest.json").write_bytes(sidecar)
    for path, field in ((onnx_path, "onnx"), (plan, "engine")):
        art = resolve(str(path))
        assert getattr(art, field) == path and art.model == "m" and art.manifest in ({}, {"model": "vit_t"})
