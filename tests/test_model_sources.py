"""Issue 23: bring your own model -- a timm name, a checkpoint with its own head, a Hugging Face directory,
a Python factory -- through `vitdeploy build` to the engine step, with parity; bad input as one line.

Every model is tiny (timm's `test_vit`, a 2-layer 32-wide HF ViT / YOLOS, a 2-layer CNN), each route is
built once per module, and most exports use the TorchScript exporter (seconds, not tens of seconds); the
timm route keeps the default exporter so `auto` (dynamo first) is covered.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vitdeploy.onnxrt import session


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _nothing_written(path: Path) -> bool:
    return not path.exists() or not any(path.iterdir())


def _ort(out: Path, x: np.ndarray, name: str = "input") -> list[np.ndarray]:
    m = _manifest(out)
    return session(out / m["files"]["onnx"]["path"]).run(None, {name: x})


def _assert_built_to_engine_step(m: dict) -> None:
    assert m["export"]["parity"]["passed"]
    for worst in m["export"]["parity"]["worst"].values():
        assert worst["max_abs"] < 1e-4 and worst["cosine"] > 0.9999
    assert m["lint"]["errors"] == 0
    assert m["engine"]["built"] is False and "TensorRT" in m["engine"]["skipped"]  # no TensorRT here: skipped, said why
    assert "recognised" in m["model"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("sources")


# ----------------------------------------------------------------------------- timm name and checkpoint

@pytest.fixture(scope="module")
def timm_build(work):
    from cli_runner import invoke

    out = work / "timm"
    r = invoke(["build", "--model", "timm/test_vit", "-o", out])
    assert r.exit_code == 0, r.output
    return out, r.output


def test_timm_name_builds_to_the_engine_step_with_its_pretrained_cfg(timm_build):
    import timm

    from vitdeploy.models import redraw_zero_weights

    out, text = timm_build
    m = _manifest(out)
    _assert_built_to_engine_step(m)
    assert m["model"]["route"] == "timm" and m["model"]["name"] == "test_vit" and m["model"]["family"] == "vision_transformer"
    assert m["model"]["weights"] == "random" and "random weights: test_vit" in text
    pp = m["preprocessing"]  # timm's pretrained_cfg for test_vit: 160 px, mean = std = 0.5, crop 0.95, bicubic
    assert pp["source"] == "timm pretrained_cfg" and pp["input_size"] == [3, 160, 160]
    assert pp["mean"] == [0.5] * 3 and pp["std"] == [0.5] * 3 and pp["crop_pct"] == 0.95 and pp["interpolation"] == "bicubic"
    assert m["labels"]["num_classes"] == 1000 and m["labels"]["names"][0].startswith("tench")
    # every pass looked (structure decides); none recognises plain ViT attention
    assert {p["pass"] for p in m["rewrite"]["passes"]} == {"swin", "gpsa", "msda", "halo", "attention_scale"}
    assert m["model"]["recognised"] == {}
    # independent check: the same seeded random model in PyTorch vs the ONNX on a fresh input
    torch.manual_seed(0)
    ref_model = timm.create_model("test_vit").eval()
    redraw_zero_weights(ref_model)
    x = np.random.default_rng(7).standard_normal((1, 3, 160, 160)).astype(np.float32)
    with torch.no_grad():
        ref = ref_model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_ort(out, x)[0], ref, atol=1e-4, rtol=1e-3)


def test_bare_timm_name_of_an_alias_is_the_alias():
    from vitdeploy.models import REGISTRY
    from vitdeploy.sources import resolve

    assert resolve("vit_tiny_patch16_224") is REGISTRY["vit_t"]  # the name `vitdeploy models` prints for vit_t
    assert resolve("maxvit_tiny_tf_224") is REGISTRY["maxvit_t"]
    info = resolve("maxvit_nano_rw_256")  # not an alias: timm's own architecture and pretrained_cfg
    assert (info.route, info.family, info.input_size) == ("timm", "maxxvit", (256, 256))
    assert resolve("timm/vit_tiny_patch16_224.augreg_in21k").name == "vit_tiny_patch16_224.augreg_in21k"


@pytest.fixture(scope="module")
def finetuned(work):
    """A 10-class test_vit training checkpoint as timm's train.py writes it: EMA weights beside the raw ones."""
    import timm

    torch.manual_seed(1)
    raw = timm.create_model("test_vit", num_classes=10)
    torch.manual_seed(2)
    ema = timm.create_model("test_vit", num_classes=10).eval()
    path = work / "ft10.pth.tar"
    torch.save({"epoch": 3, "state_dict": raw.state_dict(),
                "state_dict_ema": {f"module.{k}": v for k, v in ema.state_dict().items()}}, path)
    return path, ema


def test_checkpoint_with_a_fine_tuned_head_builds_with_num_classes(cli_run, work, finetuned):
    path, ema = finetuned
    out = work / "ft"
    r = cli_run("build", "--model", "test_vit", "--checkpoint", path, "--num-classes", "10", "--exporter", "torchscript",
                "-o", out)
    assert r.exit_code == 0, r.output
    assert "random weights" not in r.output
    m = _manifest(out)
    _assert_built_to_engine_step(m)
    assert m["model"]["num_classes"] == 10 and m["model"]["weights"] == "checkpoint"
    assert m["labels"] == {"num_classes": 10, "names": None, "source": None}  # no invented ImageNet names
    assert m["export"]["outputs"][0]["shape"] == [1, 10]
    x = np.random.default_rng(3).standard_normal((1, 3, 160, 160)).astype(np.float32)
    with torch.no_grad():
        ref = ema(torch.from_numpy(x)).numpy()  # timm's checkpoint_path: the EMA weights, DDP prefix dropped
    np.testing.assert_allclose(_ort(out, x)[0], ref, atol=1e-4, rtol=1e-3)


def test_checkpoint_head_that_does_not_fit_suggests_num_classes(cli_run, work, finetuned):
    path, _ = finetuned
    out = work / "ft_wrong"
    r = cli_run("build", "--model", "test_vit", "--checkpoint", path, "-o", out)
    assert r.exit_code == 2
    assert r.output.strip().splitlines()[-1] == (
        "error: checkpoint ft10.pth.tar does not match the model: 2 shape mismatches (first: head.weight (10, 64) vs "
        "(1000, 64)) (the checkpoint's classifier has 10 classes: add --num-classes 10)")
    assert _nothing_written(out)
    r = cli_run("export", "--model", "vit_t", "--checkpoint", path, "--num-classes", "10", "-o", out)
    assert r.exit_code == 2 and "does not match the model" in r.output and "check --model" in r.output
    assert _nothing_written(out)


# ----------------------------------------------------------------------------- Hugging Face directory

@pytest.fixture(scope="module")
def hf_vit_dir(work):
    import transformers as T

    torch.manual_seed(0)
    cfg = T.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, id2label={0: "cat", 1: "dog", 2: "bird"},
                      label2id={"cat": 0, "dog": 1, "bird": 2})
    model = T.ViTForImageClassification(cfg).eval()
    path = work / "hf_vit"
    model.save_pretrained(path)
    # ImageNet statistics and bicubic, unlike ViT's defaults, so the test sees them read from this file
    T.ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.485, 0.456, 0.406],
                        image_std=[0.229, 0.224, 0.225], resample=3).save_pretrained(path)
    return path, model


def test_hf_directory_builds_with_its_image_processor_and_labels(cli_run, work, hf_vit_dir):
    path, model = hf_vit_dir
    out = work / "hf_out"
    r = cli_run("build", "--model", path, "--exporter", "torchscript", "-o", out)
    assert r.exit_code == 0, r.output
    assert "random weights" not in r.output  # the directory carries its weights
    m = _manifest(out)
    _assert_built_to_engine_step(m)
    assert m["model"]["route"] == "huggingface" and m["model"]["name"] == "ViTForImageClassification"
    assert m["model"]["weights"] == "checkpoint" and len(m["model"]["checkpoint"]["sha256"]) == 64
    assert m["labels"] == {"num_classes": 3, "names": ["cat", "dog", "bird"], "source": "config.id2label"}
    pp = m["preprocessing"]
    assert pp["source"] == "hf image processor" and pp["input_size"] == [3, 32, 32]
    np.testing.assert_allclose(pp["mean"], [0.485, 0.456, 0.406]) and np.testing.assert_allclose(pp["std"], [0.229, 0.224, 0.225])
    assert pp["interpolation"] == "bicubic" and pp["crop_mode"] == "squash"
    assert m["postprocessing"]["task"] == "classification"
    x = np.random.default_rng(5).standard_normal((1, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).logits.numpy()
    np.testing.assert_allclose(_ort(out, x)[0], ref, atol=1e-4, rtol=1e-3)


def test_hf_detection_directory_exports_boxes_with_its_postprocessing(cli_run, work):
    import transformers as T

    torch.manual_seed(0)
    cfg = T.YolosConfig(image_size=[32, 48], patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, num_detection_tokens=5, num_labels=4)
    model = T.YolosForObjectDetection(cfg).eval()
    path = work / "hf_yolos"
    model.save_pretrained(path)  # no image processor saved: said so in the manifest
    out = work / "yolos_out"
    r = cli_run("export", "--model", path, "--exporter", "torchscript", "-o", out)
    assert r.exit_code == 0, r.output
    m = _manifest(out)
    assert [o["name"] for o in m["export"]["outputs"]] == ["logits", "pred_boxes"]
    assert m["export"]["outputs"][0]["shape"] == [1, 5, 5]  # 4 classes + "no object"
    post = m["postprocessing"]
    assert post["task"] == "detection" and post["scores"]["activation"] == "softmax" and post["boxes"]["format"] == "cxcywh"
    assert m["preprocessing"]["source"] == "none" and m["preprocessing"]["input_size"] == [3, 32, 48]
    x = np.random.default_rng(2).standard_normal((1, 3, 32, 48)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x))
    got = session(out / "model.onnx").run(None, {"input": x})
    np.testing.assert_allclose(got[0], ref.logits.numpy(), atol=1e-4, rtol=1e-3)
    np.testing.assert_allclose(got[1], ref.pred_boxes.numpy(), atol=1e-4, rtol=1e-3)
    # the recorded softmax head, decoded as transformers' own post-processing decodes it
    from vitdeploy.calibration.detection import postprocess_detr

    dets = postprocess_detr(got[0], got[1], (32, 48), threshold=0.2, topk=5, activation="softmax")[0]
    hf = T.YolosImageProcessor().post_process_object_detection(ref, threshold=0.2, target_sizes=[(32, 48)])[0]
    order = np.argsort(-hf["scores"].numpy(), kind="stable")
    assert [d.label for d in dets] == hf["labels"].numpy()[order].tolist() and dets
    np.testing.assert_allclose([d.score for d in dets], hf["scores"].numpy()[order], atol=1e-5)
    np.testing.assert_allclose([d.box for d in dets], hf["boxes"].numpy()[order], atol=1e-3)


def test_hub_id_resolves_from_the_local_cache_only(work, hf_vit_dir, monkeypatch):
    import shutil

    from vitdeploy.errors import VitdeployError
    from vitdeploy.sources import _identify, resolve
    from vitdeploy.sources.hf import hub_id_of

    # the hub cache's layout: models--ORG--NAME/{refs/main, snapshots/COMMIT/...}
    cache = work / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = cache / "models--acme--tiny-vit" / "snapshots" / commit
    shutil.copytree(hf_vit_dir[0], snap)
    (cache / "models--acme--tiny-vit" / "refs").mkdir()
    (cache / "models--acme--tiny-vit" / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    _identify.cache_clear()
    info = resolve("acme/tiny-vit")
    assert info.route == "huggingface" and info.name == "ViTForImageClassification" and info.input_size == (32, 32)
    assert hub_id_of(info.spec) == f"acme/tiny-vit@{commit}"
    with pytest.raises(VitdeployError) as e:
        resolve("acme/other")
    assert e.value.message.startswith("'acme/other' is not in the local Hugging Face cache")
    assert e.value.hint.startswith("add --pretrained to download it")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(VitdeployError, match="HF_HUB_OFFLINE is set"):
        resolve("acme/other", pretrained=True)
    _identify.cache_clear()


# ----------------------------------------------------------------------------- Python entry

NET_PY = '''
import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def build():
    torch.manual_seed(11)
    return Net()


def broken():
    raise ValueError("weights file not found")


def not_a_module():
    return {"weights": 1}
'''


@pytest.fixture(scope="module")
def net_py(work):
    d = work / "userpkg"
    d.mkdir()
    (d / "net.py").write_text(NET_PY)
    return d / "net.py"


def test_python_entry_builds_with_img_size_and_output_names(cli_run, work, net_py):
    out = work / "py_out"
    r = cli_run("build", "--model", f"{net_py}:build", "--img-size", "32", "--output-names", "scores",
                "--input-names", "image", "--exporter", "torchscript", "-o", out)
    assert r.exit_code == 0, r.output
    assert "random weights" not in r.output  # a factory's weights are its own business
    m = _manifest(out)
    _assert_built_to_engine_step(m)
    assert m["model"]["route"] == "python" and m["model"]["alias"] == "net_build" and m["model"]["weights"] == "unknown"
    assert m["export"]["inputs"][0]["name"] == "image" and m["export"]["outputs"][0]["name"] == "scores"
    assert m["preprocessing"]["source"] == "none" and m["preprocessing"]["input_size"] == [3, 32, 32]
    assert m["postprocessing"]["scores"]["output"] == "scores"
    import importlib.util

    spec = importlib.util.spec_from_file_location("net_ref", net_py)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    x = np.random.default_rng(4).standard_normal((1, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ref = mod.build().eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_ort(out, x, "image")[0], ref, atol=1e-5, rtol=1e-4)


def test_module_factory_entry(work, net_py, monkeypatch):
    from vitdeploy.models import build_model
    from vitdeploy.sources import resolve_request

    monkeypatch.syspath_prepend(str(net_py.parent))
    info = resolve_request("net:build", img_size=(32, 32))
    assert info.route == "python" and info.alias == "net_build"
    model = build_model(info, img_size=(32, 32))
    assert type(model).__name__ == "Net" and not model.training


# ----------------------------------------------------------------------------- bad input: one line, exit 2, nothing written

def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def _bad_cases(work: Path, net_py: Path):
    import transformers as T

    empty = work / "empty_dir"
    empty.mkdir(exist_ok=True)
    text = work / "bert_dir"
    if not text.exists():
        T.BertModel(T.BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8,
                                 vocab_size=16)).save_pretrained(text)
    config_only = work / "config_only"
    config_only.mkdir(exist_ok=True)
    (config_only / "config.json").write_text(json.dumps({"model_type": "vit", "architectures": ["ViTForImageClassification"]}))
    return [
        (["--model", "not_a_model_anywhere"], "unknown model 'not_a_model_anywhere': not an alias, a timm architecture",
         "'vitdeploy models --search WORD'"),
        (["--model", "maxvit_tiny_tf_22"], "unknown model 'maxvit_tiny_tf_22'", "did you mean 'maxvit_tiny_tf_224'?"),
        (["--model", "timm/vit_tiny_patch16_224.nonexist"], "has no pretrained config 'nonexist'",
         "vit_tiny_patch16_224.augreg"),
        (["--model", empty], "has no config.json, so it is not a saved Hugging Face model", "save_pretrained"),
        (["--model", config_only], "has a config.json but no weights", "save_pretrained"),
        (["--model", text], "BertModel in", "export other models yourself and pass --onnx"),
        (["--model", f"{net_py}:broken", "--img-size", "32"],
         f"net.py:broken() raised ValueError: weights file not found (net.py:{_line_of(NET_PY, 'raise ValueError')})",
         "calls it with no arguments"),
        (["--model", f"{net_py}:not_a_module", "--img-size", "32"], "returned a dict, not a torch.nn.Module", "nn.Module"),
        (["--model", f"{net_py}:missing", "--img-size", "32"], "net.py has no 'missing'", "it defines Net, broken, build"),
        (["--model", f"{net_py}:build"], "comes from a Python factory, which does not say its input size", "--img-size"),
        (["--model", str(net_py)], "names a Python file but not the function", ":create_model"),
        (["--model", "no_such_pkg_xyz.mod:build"], "no Python module named 'no_such_pkg_xyz.mod'", "file.py:factory"),
        (["--model", work / "hf_vit", "--num-classes", "5"], "--num-classes does not apply", "drop --num-classes"),
        (["--model", "test_vit", "--output-names", "a,a"], "names a tensor twice", "its own name"),
        (["--model", "test_vit", "--output-names", "a,b"], "--output-names gives 2 names, test_vit has 1 outputs",
         "give 1 comma-separated names"),
    ]


def test_bad_model_input_is_one_line_exit_2_and_nothing_written(cli_run, work, net_py, hf_vit_dir):
    for i, (args, problem, fix) in enumerate(_bad_cases(work, net_py)):
        out = work / f"bad_{i}"
        r = cli_run("build", *args, "--exporter", "torchscript", "-o", out)
        lines = r.output.strip().splitlines()
        assert r.exit_code == 2, (args, r.output)
        assert lines[-1].startswith("error: ") and problem in lines[-1] and fix in lines[-1], (args, lines[-1])
        assert "Traceback" not in r.output
        assert _nothing_written(out), args


# ----------------------------------------------------------------------------- models --search

def test_models_search_lists_timm_and_transformers_architectures(cli_run):
    r = cli_run("models", "--search", "maxvit", "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output[r.output.index("["):])
    timm_rows = {x["name"]: x for x in rows if x["source"] == "timm"}
    assert timm_rows["maxvit_tiny_tf_224"]["use"] == "--model timm/maxvit_tiny_tf_224"
    assert timm_rows["maxvit_tiny_tf_224"]["input_size"] == [224, 224]
    assert all("maxvit" in n for n in timm_rows)
    r = cli_run("models", "--search", "detr", "--json")
    rows = json.loads(r.output[r.output.index("["):])
    assert {"alias", "transformers"} <= {x["source"] for x in rows}
    assert any(x["name"] == "RTDetrForObjectDetection" and x["task"] == "detection" for x in rows)


def test_short_names_are_file_names():
    from vitdeploy.sources import short_name

    assert short_name("timm/maxvit_tiny_tf_224") == "maxvit_tiny_tf_224"
    assert short_name("/data/models/hf_vit/") == "hf_vit"
    assert short_name("models/net.py:build_model") == "net_build_model"
    assert short_name("torchvision.models:resnet18") == "models_resnet18"
    assert short_name("facebook/detr-resnet-50") == "detr-resnet-50"
