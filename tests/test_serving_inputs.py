"""Issue 26 items 2-5: serving that says what it serves.

One preprocessing implementation (= timm's eval transform, every crop mode) shared by infer, the
accuracy step, the generated client.py (standalone) and the ensemble's Python model; preprocessing
and labels from where the model came from or from --preprocess/--labels, and a refusal instead of a
guess; an INT8 build served as INT8 (calibration carried to the plugin-free graph, DeepStream
network-mode=1); the static-batch hint; the ensemble, parsed with Triton's ModelConfig protobuf and
its Python model run on the CPU through a stand-in for `triton_python_backend_utils` (Triton's module,
which only exists inside the server: the stand-in only carries tensors, it decides nothing).

Builds here are tiny convolution graphs given with --onnx (seconds), not models.
"""
from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from vitdeploy.errors import EXIT_USAGE

SIZE = 32


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    from PIL import Image
    from skimage import data

    p = tmp_path_factory.mktemp("img") / "chelsea.jpg"
    Image.fromarray(data.chelsea()).save(p, quality=95)  # 451x300
    return p


def tiny_classifier(path: Path, classes: int = 4, batch="N", seed: int = 0) -> Path:
    """Conv -> ReLU -> GlobalAveragePool -> Flatten -> MatMul: a classifier INT8 can quantize."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "conv_w"),
             numpy_helper.from_array((rng.standard_normal((8, classes)) * 0.5).astype(np.float32), "fc_w"),
             numpy_helper.from_array((rng.standard_normal((8, 8)) * 0.5).astype(np.float32), "mid_w")]
    nodes = [helper.make_node("Conv", ["input", "conv_w"], ["c"], name="stem", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"], name="pool"),
             helper.make_node("Flatten", ["g"], ["f"], name="flat"),
             helper.make_node("MatMul", ["f", "mid_w"], ["m"], name="mid"),
             helper.make_node("Relu", ["m"], ["m2"], name="relu2"),
             helper.make_node("MatMul", ["m2", "fc_w"], ["logits"], name="head")]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, SIZE, SIZE])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    onnx.save(m, str(path))
    return path


@pytest.fixture(scope="module")
def user_build(tmp_path_factory, photo):
    """`vitdeploy build --onnx` of a user's graph without a manifest, dynamic batch 1:2:4."""
    from cli_runner import invoke

    root = tmp_path_factory.mktemp("userbuild")
    src = tiny_classifier(root / "mine.onnx")
    out = root / "build"
    r = invoke(["build", "--onnx", src, "--dynamic-batch", "1:2:4", "--no-engine", "-o", out])
    assert r.exit_code == 0, r.output
    return out, r.output


HF_PROCESSOR = {"image_processor_type": "ViTImageProcessor", "do_resize": True, "size": {"height": SIZE, "width": SIZE},
                "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}


# ----------------------------------------------------------------------------- one implementation


@pytest.mark.parametrize("size,pct,mode,interp", [
    ((224, 224), 0.875, "center", "bicubic"), ((192, 320), 1.0, "center", "bicubic"),
    ((192, 320), 0.9, "center", "bilinear"), ((200, 240), 0.95, "squash", "lanczos"),
    ((160, 256), 0.9, "border", "nearest")])
def test_the_one_preprocessing_equals_timms_eval_transform(photo, size, pct, mode, interp):
    """Bit for bit, on the photo and on a tall crop of it, for every crop mode (non-square included)."""
    from PIL import Image
    from timm.data import create_transform

    from vitdeploy.image_transform import transform_image

    pp = {"input_size": [3, *size], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
          "interpolation": interp, "crop_pct": pct, "crop_mode": mode}
    tf = create_transform(input_size=(3, *size), is_training=False, interpolation=interp, mean=tuple(pp["mean"]),
                          std=tuple(pp["std"]), crop_pct=pct, crop_mode=mode)
    img = Image.open(photo).convert("RGB")
    for im in (img, img.crop((0, 0, 120, 300))):
        np.testing.assert_array_equal(transform_image(im, pp), tf(im).numpy())


def test_generated_client_is_standalone_and_does_keep_ratio(photo, tmp_path):
    """The review's swinv2 at 192x320: client.py raised for "center (keep ratio)"; now it runs the inlined code,
    without vitdeploy importable, and returns what infer's preprocessing returns."""
    from vitdeploy.deploy.preprocess import load_image
    from vitdeploy.deploy.serving.standalone import render

    import vitdeploy.deploy.serving.triton_client as template

    (tmp_path / "client.py").write_text(render(Path(template.__file__)))
    spec = {"input_size": [3, 192, 320], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
            "interpolation": "bicubic", "crop_pct": 1.0, "crop_mode": "center"}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    code = ("import sys, json, numpy as np; sys.modules['vitdeploy'] = None; sys.path.insert(0, sys.argv[1]); "
            "import client; x, size = client.preprocess(sys.argv[2], json.load(open(sys.argv[3]))); "
            "np.save(sys.argv[4], x); print(size)")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path), str(photo), str(tmp_path / "spec.json"),
                        str(tmp_path / "x.npy")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    want, size = load_image(photo, spec)
    assert r.stdout.strip() == str(size) and np.array_equal(np.load(tmp_path / "x.npy"), want)
    text = (tmp_path / "client.py").read_text()
    import re

    assert not re.search(r"^\s*(from|import) vitdeploy", text, re.M)
    assert "def transform_image" in text and "not implemented" not in text


# ----------------------------------------------------------------------------- where preprocessing comes from


def test_registry_models_record_where_their_preprocessing_came_from():
    from vitdeploy.models import get_info, preprocessing

    vit = preprocessing(get_info("vit_t"))
    assert vit["source"] == "timm pretrained_cfg" and vit["source_detail"].startswith("vit_tiny_patch16_224")
    assert vit["mean"] == [0.5, 0.5, 0.5] and vit["crop_pct"] == 0.9  # timm's augreg config, not ImageNet's
    detr = preprocessing(get_info("deformable_detr"), img_size=(64, 64))
    assert detr["source"] == "hf image processor" and "DeformableDetrImageProcessor" in detr["source_detail"]


def test_a_users_onnx_records_no_preprocessing_and_package_refuses_to_guess(user_build, tmp_path, cli_run, photo):
    out, output = user_build
    m = json.loads((out / "manifest.json").read_text())
    assert m["preprocessing"] == {"input_size": [3, SIZE, SIZE], "source": "none",
                                  "source_detail": "not recorded: pass --preprocess FILE.json (docs/serving.md)"}
    assert "package refuses until it is stated" in output
    repo, ds = tmp_path / "models", tmp_path / "ds"
    res = cli_run("package", out, "--triton-repo", repo, "--deepstream", ds)
    assert res.exit_code == EXIT_USAGE
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "does not state the model's preprocessing" in lines[0] and "--preprocess FILE.json" in lines[0]
    assert not repo.exists() and not ds.exists()  # nothing half-written
    res = cli_run("infer", out, "--image", photo)  # a quick look still works, and says what it assumed
    assert res.exit_code == 0 and "the build does not state its preprocessing" in res.output
    assert "ImageNet preprocessing assumed" in res.output


def test_package_with_preprocess_and_labels_serves_what_they_say(user_build, tmp_path, cli_run, photo):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    from vitdeploy.deploy.serving.deepstream import read_config

    out, _ = user_build
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(HF_PROCESSOR))
    (tmp_path / "labels.txt").write_text("cat\ndog\nbird\nfish\n")
    repo, ds = tmp_path / "models", tmp_path / "ds"
    res = cli_run("package", out, "--triton-repo", repo, "--deepstream", ds, "--name", "mine",
                  "--preprocess", tmp_path / "preprocessor_config.json", "--labels", tmp_path / "labels.txt")
    assert res.exit_code == 0, res.output
    assert "None" not in res.output and "preprocessing from user file" in res.output
    spec = json.loads((repo / "mine" / "preprocess.json").read_text())
    assert (spec["mean"], spec["std"], spec["interpolation"], spec["crop_mode"], spec["crop_pct"]) == \
        ([0.5] * 3, [0.5] * 3, "bilinear", "squash", 1.0)
    assert (repo / "mine" / "labels.txt").read_text().splitlines() == ["cat", "dog", "bird", "fish"]
    cfg = text_format.Parse((repo / "mine" / "config.pbtxt").read_text(), mc.ModelConfig())
    assert cfg.output[0].label_filename == "labels.txt"
    prop = read_config(ds / "config_infer_primary.txt")
    assert float(prop["net-scale-factor"]) == pytest.approx(1 / 127.5) and prop["offsets"] == "127.5;127.5;127.5"
    assert (ds / "labels.txt").read_text().strip() == "cat;dog;bird;fish"
    served = json.loads((repo / "mine" / "1" / "manifest.json").read_text())
    assert served["preprocessing"]["source"] == "user file" and served["labels"]["source"] == "user file"
    # wrong label count: one line, before anything is written
    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    res = cli_run("package", out, "--triton-repo", tmp_path / "r2", "--labels", tmp_path / "three.txt",
                  "--preprocess", tmp_path / "preprocessor_config.json")
    assert res.exit_code == EXIT_USAGE and "has 3 names and the model 4 classes" in res.output
    assert not (tmp_path / "r2").exists()


@pytest.mark.parametrize("bad,message", [
    ({"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "crop_mode": "center"}, "lacks interpolation (nothing is assumed)"),
    ({"mean": [0.5, 0.5], "std": [0.5, 0.5], "interpolation": "bilinear", "crop_mode": "center"}, "2 mean/std values for 3 input channels"),
    ({"mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic", "crop_mode": "center", "input_size": [3, 64, 64]},
     "input_size [3, 64, 64] differs from the model's input [3, 32, 32]"),
    ({"mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "cubic", "crop_mode": "center"}, "interpolation 'cubic' is not one of"),
])
def test_bad_preprocess_files_are_one_line(tmp_path, bad, message):
    from vitdeploy.deploy.preprocess import load_preprocess_file
    from vitdeploy.errors import VitdeployError

    (tmp_path / "pp.json").write_text(json.dumps(bad))
    with pytest.raises(VitdeployError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(").replace(")", r"\)")):
        load_preprocess_file(tmp_path / "pp.json", [3, SIZE, SIZE])


# ----------------------------------------------------------------------------- ensemble, static batch


class StandIn(types.ModuleType):
    """The parts of `triton_python_backend_utils` a Python model calls (carriers only, no decisions)."""

    class Tensor:
        def __init__(self, name, array):
            self._name, self._array = name, array

        def name(self):
            return self._name

        def as_numpy(self):
            return self._array

    class TritonError:
        def __init__(self, message):
            self.message = message

    class InferenceResponse:
        def __init__(self, output_tensors, error=None):
            self.output_tensors, self.error = output_tensors, error

    class Request:
        def __init__(self, tensors):
            self.tensors = tensors

    @staticmethod
    def get_input_tensor_by_name(request, name):
        return next((t for t in request.tensors if t.name() == name), None)


def test_ensemble_configs_parse_and_its_python_model_preprocesses_like_infer(user_build, tmp_path, cli_run, photo,
                                                                             monkeypatch):
    import importlib.util

    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    from vitdeploy.deploy.preprocess import load_image, load_preprocess_file
    from vitdeploy.onnxrt import session

    out, _ = user_build
    (tmp_path / "pp.json").write_text(json.dumps({"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                                                  "interpolation": "bicubic", "crop_pct": 0.875, "crop_mode": "center"}))
    repo = tmp_path / "models"
    res = cli_run("package", out, "--triton-repo", repo, "--name", "mine", "--ensemble", "--preprocess", tmp_path / "pp.json")
    assert res.exit_code == 0, res.output
    parse = lambda p: text_format.Parse(p.read_text(), mc.ModelConfig())  # noqa: E731
    ens, pre, main = parse(repo / "mine_ensemble" / "config.pbtxt"), parse(repo / "mine_preprocess" / "config.pbtxt"), \
        parse(repo / "mine" / "config.pbtxt")
    assert ens.platform == "ensemble" and pre.backend == "python" and ens.max_batch_size == pre.max_batch_size == main.max_batch_size == 4
    assert [(t.name, mc.DataType.Name(t.data_type), list(t.dims)) for t in ens.input] == [("IMAGE", "TYPE_STRING", [1])]
    assert [s.model_name for s in ens.ensemble_scheduling.step] == ["mine_preprocess", "mine"]
    assert dict(ens.ensemble_scheduling.step[1].input_map) == {"input": "preprocessed"}
    assert [o.name for o in ens.output] == ["logits"] and (repo / "mine_ensemble" / "1").is_dir()
    # the Python model, run as Triton's stub would, on JPEG bytes (a corrupt one fails only its own request)
    model_py = repo / "mine_preprocess" / "1" / "model.py"
    import re

    assert not re.search(r"^\s*(from|import) vitdeploy", model_py.read_text(), re.M)
    pb = StandIn("triton_python_backend_utils")
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb)
    spec_ = importlib.util.spec_from_file_location("triton_model_under_test", model_py)
    mod = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(mod)
    model = mod.TritonPythonModel()
    model.initialize({"model_repository": str(repo / "mine_preprocess"), "model_version": "1"})
    data = photo.read_bytes()
    good = pb.Request([pb.Tensor("IMAGE", np.array([[data], [data]], dtype=object))])
    bad = pb.Request([pb.Tensor("IMAGE", np.array([[b"not an image"]], dtype=object))])
    r_good, r_bad = model.execute([good, bad])
    x = r_good.output_tensors[0].as_numpy()
    want, _ = load_image(photo, load_preprocess_file(tmp_path / "pp.json", [3, SIZE, SIZE]))
    assert r_good.error is None and r_good.output_tensors[0].name() == "input" and x.shape == (2, 3, SIZE, SIZE)
    assert np.array_equal(x[0], want[0]) and np.array_equal(x[1], want[0])
    assert r_bad.output_tensors == [] and "cannot preprocess the image" in r_bad.error.message
    logits = session(repo / "mine" / "1" / "model.onnx").run(None, {"input": x})[0]
    ref = session(out / json.loads((out / "manifest.json").read_text())["files"]["onnx"]["path"]).run(None, {"input": want})[0]
    np.testing.assert_allclose(logits[:1], ref, rtol=1e-5, atol=1e-6)
    client_spec = json.loads((repo / "mine" / "preprocess.json").read_text())
    assert client_spec["ensemble"] == {"model": "mine_ensemble", "input": "IMAGE", "datatype": "BYTES", "dims": [1],
                                       "max_batch_size": 4}


def test_static_batch_says_how_to_get_dynamic_batching():
    from vitdeploy.deploy.serving.served import rebuild_command

    m = {"model": {"alias": "swin_t", "source": "timm"}, "precision": {"applied": "fp16"},
         "preprocessing": {"input_size": [3, 224, 224]}}
    assert rebuild_command(m, Path("build/swin_t")) == \
        "vitdeploy build --model swin_t --fp16 --dynamic-batch 1:8:32 -o build/swin_t"
    m8 = {"model": {"alias": "convit_t"}, "precision": {"applied": "int8+fp16"}}
    assert rebuild_command(m8, Path("b")) == "vitdeploy build --model convit_t --int8 --calib-data CALIB_IMAGES/ " \
                                            "--dynamic-batch 1:8:32 -o b"


# ----------------------------------------------------------------------------- INT8


def _renamed(src: Path, dst: Path) -> Path:
    """The same classifier with other tensor and node names and an Identity in front of each MatMul, as a
    rewrite in another mode leaves it: what the build calibrated vs what the server gets."""
    m = onnx.load(str(src))
    rename = {"f": "flat_out", "m2": "act_2", "c": "conv_out"}
    for n in m.graph.node:
        n.name = "rw_" + n.name
        n.input[:] = [rename.get(x, x) for x in n.input]
        n.output[:] = [rename.get(x, x) for x in n.output]
    nodes = list(m.graph.node)
    extra = []
    for n in nodes:
        if n.op_type == "MatMul":
            extra.append((n, helper.make_node("Identity", [n.input[0]], [n.input[0] + "_moved"], name="move_" + n.name)))
            n.input[0] = n.input[0] + "_moved"
    for n, ident in extra:
        m.graph.node.insert(list(m.graph.node).index(n), ident)
    onnx.save(m, str(dst))
    return dst


def test_calibration_carries_to_a_graph_with_other_tensor_names(tmp_path):
    """Ranges measured on the build's graph apply to the served graph's layers, found by their weights."""
    from vitdeploy.calibration.cache import save_cache
    from vitdeploy.calibration.carry import quantize_like_build
    from vitdeploy.calibration.data import CalibrationData
    from vitdeploy.calibration.quantization import quantize_int8
    from vitdeploy.onnxrt import session

    served = tiny_classifier(tmp_path / "served.onnx")
    calibrated = _renamed(served, tmp_path / "model.rewritten.onnx")
    images = np.random.default_rng(0).standard_normal((8, 3, SIZE, SIZE)).astype(np.float32)
    build_q, cache, summary = quantize_int8(calibrated, CalibrationData(images, source="test"), "minmax",
                                            quantize_first_last=True, show_progress=False)
    save_cache(tmp_path / "calibration_cache.json", cache)
    manifest = {"precision": {"applied": "int8+fp16", "int8": {"excluded": summary["excluded"]}}}
    carried, record = quantize_like_build(served, tmp_path, manifest, tmp_path / "calibration_cache.json")
    assert record["calibration"]["measured_on"] == "model.rewritten.onnx" and record["no_range"] == []
    assert record["layers_int8"] == len(summary["int8_nodes"]) == 3  # stem, mid, head

    def scales(m):
        init = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
        return sorted(float(init[n.input[1]].reshape(-1)[0]) for n in m.graph.node if n.op_type == "QuantizeLinear")

    assert scales(carried) == pytest.approx(scales(build_q), rel=1e-6)
    x = images[:2]
    a = session(carried).run(None, {"input": x})[0]
    b = session(build_q).run(None, {"input": x})[0]
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)


@pytest.fixture(scope="module")
def int8_build(tmp_path_factory):
    from cli_runner import invoke

    root = tmp_path_factory.mktemp("int8")
    src = tiny_classifier(root / "mine.onnx", batch=1)
    np.savez(root / "calib.npz", images=np.random.default_rng(1).standard_normal((8, 3, SIZE, SIZE)).astype(np.float32))
    (root / "pp.json").write_text(json.dumps(HF_PROCESSOR))
    out = root / "build"
    r = invoke(["build", "--onnx", src, "--int8", "--calib-data", root / "calib.npz", "--calib-method", "minmax",
                "--preprocess", root / "pp.json", "--no-engine", "-o", out])
    assert r.exit_code == 0, r.output
    return out


def test_int8_build_is_served_int8_and_says_so(int8_build, tmp_path, cli_run):
    from vitdeploy.deploy.serving.deepstream import read_config

    repo, ds = tmp_path / "models", tmp_path / "ds"
    res = cli_run("package", int8_build, "--triton-repo", repo, "--deepstream", ds, "--name", "mine",
                  "--labels", _labels(tmp_path))
    assert res.exit_code == 0, res.output
    assert "serves INT8: mine.int8.onnx (int8+fp16, explicit Q/DQ)" in res.output
    assert "(?, int8+fp16)" in (repo / "mine" / "config.pbtxt").read_text()  # no model alias: a user graph
    served = onnx.load(str(repo / "mine" / "1" / "model.onnx"))
    assert sum(n.op_type == "QuantizeLinear" for n in served.graph.node) >= 1  # first/last layers stay FP16
    prop = read_config(ds / "config_infer_primary.txt")
    assert prop["network-mode"] == "1" and (ds / "calibration_cache.json").is_file()
    assert "needs no int8-calib-file" in (ds / "config_infer_primary.txt").read_text()
    # static batch: the hint names the rebuild
    assert "static batch 1: Triton cannot batch requests (max_batch_size 0); for dynamic batching: re-export mine.onnx " \
           "with a dynamic batch axis, then vitdeploy build --onnx mine.onnx --int8" in res.output


def _labels(tmp_path):
    p = tmp_path / "labels.txt"
    p.write_text("a\nb\nc\nd\n")
    return p


def test_plugin_free_graph_of_an_int8_build_is_int8_with_the_builds_calibration(int8_build, tmp_path):
    """Where the final graph has plugin nodes, the server gets the plugin-free graph: INT8 with the carried
    calibration, verified against the FP32 export; without the cache it is FP16, and the terminal says so."""
    import shutil

    from vitdeploy.commands.package import _what_is_served
    from vitdeploy.artifact import load_manifest
    from vitdeploy.pipeline.plugin_free import step_plugin_free as plugin_free

    build = tmp_path / "b"
    shutil.copytree(int8_build, build)
    manifest = load_manifest(build)
    served = plugin_free(build, manifest, reason="test")
    assert served.precision == "int8+fp16" and served.file.name == "model.plugin-free.int8.onnx"
    assert served.record["verified"]["cosine_min"] >= 0.99 and "INT8 with the build's calibration" in served.form
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(served.file)).graph.node)
    (build / "calibration_cache.json").unlink()
    served = plugin_free(build, manifest, reason="test")
    assert served.precision == "fp16"
    lines = [line for _, line in _what_is_served(served, manifest)]
    assert lines[0].startswith("⚠ the build is int8+fp16 but this serves FP16: the build is INT8 but its calibration "
                               "cache is missing")
