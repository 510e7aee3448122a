"""Issue 2: export of every family, verified against PyTorch; manifest; bad input."""
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from vitdeploy.artifact import sha256_file
from vitdeploy.deploy.export import BatchSpec
from vitdeploy.models import build_model, get_info
from vitdeploy.onnxrt import session
from vitdeploy.pipeline.export import run_export

# (alias, img size, reduced) — the small variant of every family; Deformable DETR reduced but whole.
FAMILIES = [
    ("vit_t", None, False),
    ("deit_t", None, False),
    ("swin_t", None, False),
    ("convit_t", None, False),
    ("mixer_s", None, False),
    ("deformable_detr", (64, 96), True),
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cache = {}

    def get(alias, size, small):
        key = (alias, size, small)
        if key not in cache:
            out = tmp_path_factory.mktemp(alias)
            cache[key] = (out, run_export(alias, str(out), img_size=size, small=small))
        return cache[key]

    return get


@pytest.mark.parametrize("alias,size,small", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_export_matches_pytorch(exported, alias, size, small):
    out, manifest = exported(alias, size, small)
    info = get_info(alias)
    parity = manifest["export"]["parity"]
    assert parity["passed"]
    for name in info.outputs:
        assert parity["worst"][name]["max_abs"] < 1e-4
        assert parity["worst"][name]["cosine"] > 0.9999
    # Independent check: rebuild the same random weights, run ORT on a fresh input.
    torch.manual_seed(0)
    model = build_model(info, img_size=size, small=small)
    h, w = size or info.input_size
    x = np.random.default_rng(42).standard_normal((1, 3, h, w)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x))
    refs = [ref] if isinstance(ref, torch.Tensor) else [getattr(ref, n) for n in info.outputs]
    sess = session(out / "model.onnx")
    got = sess.run(None, {"input": x})
    assert [o.name for o in sess.get_outputs()] == list(info.outputs)
    for r, g in zip(refs, got):
        assert float(r.abs().max()) > 1e-3, "outputs must be informative, not all zeros"
        np.testing.assert_allclose(g, r.numpy(), atol=1e-4, rtol=1e-3)


def test_manifest_records_what_a_user_needs(exported):
    out, _ = exported("swin_t", None, False)
    m = json.loads((out / "manifest.json").read_text())
    assert m["model"]["alias"] == "swin_t" and m["model"]["source"] == "timm"
    assert m["model"]["parameters"] == 28288354
    assert m["export"]["exporter"] in ("dynamo", "torchscript")
    assert m["export"]["opset"] >= 17
    assert m["export"]["inputs"] == [{"name": "input", "shape": [1, 3, 224, 224], "dtype": "float32"}]
    assert m["export"]["outputs"][0]["name"] == "logits" and m["export"]["outputs"][0]["shape"] == [1, 1000]
    pre = m["preprocessing"]
    assert pre["input_size"] == [3, 224, 224] and pre["interpolation"] == "bicubic"
    np.testing.assert_allclose(pre["mean"], [0.485, 0.456, 0.406], atol=1e-6)
    np.testing.assert_allclose(pre["std"], [0.229, 0.224, 0.225], atol=1e-6)
    assert m["files"]["onnx"]["sha256"] == sha256_file(out / "model.onnx")
    for k in ("torch", "onnx", "onnxruntime", "timm"):
        assert m["versions"][k]
    assert m["vitdeploy"] and m["schema"] == 1
    assert not list(out.glob(".vitdeploy-stage-*")), "staging directory left behind"
    assert (out / "manifest.json").stat().st_mode & 0o044 == 0o044, "artifacts must be readable by others (umask), not 0600"


def test_dynamic_batch_runs_at_two_batch_sizes(tmp_path):
    m = run_export("vit_t", str(tmp_path), batch=BatchSpec.parse("1:4:8"))
    assert m["batch"] == {"min": 1, "opt": 4, "max": 8, "dynamic": True}
    assert len(m["export"]["parity"]["batches"]) == 2
    dim0 = m["export"]["inputs"][0]["shape"][0]
    assert isinstance(dim0, str), "batch dimension must be symbolic"
    sess = session(tmp_path / "model.onnx")
    for b in (1, 3):
        y = sess.run(None, {"input": np.zeros((b, 3, 224, 224), np.float32)})[0]
        assert y.shape == (b, 1000)


def test_checkpoint_weights_are_used(tmp_path):
    from safetensors.torch import save_file

    info = get_info("deit_t")
    torch.manual_seed(123)
    model = build_model(info)
    ckpt = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))
    out = tmp_path / "out"
    m = run_export("deit_t", str(out), checkpoint=str(ckpt), exporter="torchscript")
    assert m["model"]["weights"] == "checkpoint" and m["model"]["checkpoint"]["sha256"] == sha256_file(ckpt)
    assert m["export"]["exporter"] == "torchscript"
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(session(out / "model.onnx").run(None, {"input": x})[0], ref, atol=1e-4)


def test_dynamo_failure_falls_back_to_torchscript_and_says_why(tmp_path, monkeypatch):
    import vitdeploy.deploy.export as exp

    def broken(*a, **k):
        raise RuntimeError("cannot trace data-dependent control flow")

    monkeypatch.setattr(exp, "_export_dynamo", broken)
    m = run_export("vit_t", str(tmp_path))
    assert m["export"]["exporter"] == "torchscript"
    assert "data-dependent" in m["export"]["fallback_reason"]
    assert m["export"]["parity"]["passed"]


# ----------------------------------------------------------------------------- CLI and bad input

def _nothing_written(path: Path):
    return not path.exists() or not any(path.iterdir())


def test_cli_export_prints_parity_and_next_steps(cli_run, tmp_path):
    r = cli_run("export", "--model", "vit_t", "-o", str(tmp_path / "o"), "--dynamic-batch", "1:2:4")
    assert r.exit_code == 0, r.output
    assert "parity vs PyTorch" in r.output and "max-abs" in r.output and "cos" in r.output
    # A dynamic-batch graph needs its profile on the trtexec line, or trtexec builds batch 1 only.
    assert "trtexec --onnx=" in r.output
    assert "--minShapes=input:1x3x224x224 --optShapes=input:2x3x224x224 --maxShapes=input:4x3x224x224" in r.output
    assert "vitdeploy rewrite" not in r.output  # ViT has no rewrite pass: nothing to suggest
    onnx.checker.check_model(str(tmp_path / "o" / "model.onnx"))


def test_unknown_alias_suggests_closest(cli_run, tmp_path):
    r = cli_run("export", "--model", "swim_t", "-o", str(tmp_path / "o"))
    assert r.exit_code == 2
    assert r.output.strip() == ("error: unknown model 'swim_t': not an alias, a timm architecture, a Hugging Face "
                                "directory or cached hub id, nor FILE.py:FACTORY (did you mean 'swin_t'?)")
    assert _nothing_written(tmp_path / "o")


@pytest.mark.parametrize("args,problem,fix", [
    (["230"], "230x230 does not fit swin_t", "--img-size 228"),  # 4x4 patches
    (["240", "322"], "240x322 does not fit swin_t", "--img-size 240x320"),
    (["240x322"], "240x322 does not fit swin_t", "--img-size 240x320"),
    (["16x320"], "16x320 is too small for swin_t", "at least 32 pixels"),
    (["240x"], "--img-size '240x' is not a size", "HEIGHT WIDTH"),
    (["0"], "--img-size 0x0 must be positive", "--img-size 240 320"),
])
def test_image_size_swin_cannot_take(cli_run, tmp_path, args, problem, fix):
    r = cli_run("export", "--model", "swin_t", "--img-size", *args, "-o", str(tmp_path / "o"))
    assert r.exit_code == 2, r.output
    assert problem in r.output and fix in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert _nothing_written(tmp_path / "o")


def test_img_size_forms():
    """`--img-size 240 320`, `240x320`, `240,320` and `224` (square) all parse; other options are untouched."""
    from vitdeploy.cli import join_img_size
    from vitdeploy.commands.options import IMG_SIZE

    assert join_img_size(["export", "--img-size", "240", "320", "-o", "d"]) == ["export", "--img-size", "240x320", "-o", "d"]
    assert join_img_size(["export", "--img-size", "224", "-o", "d"]) == ["export", "--img-size", "224", "-o", "d"]
    assert join_img_size(["bench", "a.onnx", "--batch", "1", "8"]) == ["bench", "a.onnx", "--batch", "1", "8"]
    assert [IMG_SIZE.convert(v, None, None) for v in ("240x320", "240X320", "240,320", "224")] == [
        (240, 320), (240, 320), (240, 320), (224, 224)]


def test_non_square_swin_export(exported):
    """A Swin at 240x320 (the issue's example, test-sized): exported, verified, and its size recorded."""
    out, manifest = exported("swin_t", (240, 320), True)
    assert manifest["model"]["reduced"] is True
    assert manifest["export"]["parity"]["passed"]
    assert manifest["export"]["inputs"][0]["shape"] == [1, 3, 240, 320]
    assert manifest["preprocessing"]["input_size"] == [3, 240, 320]


def test_unreadable_checkpoint(cli_run, tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"this is not a checkpoint")
    r = cli_run("export", "--model", "vit_t", "--checkpoint", str(bad), "-o", str(tmp_path / "o"))
    assert r.exit_code == 2 and "cannot read checkpoint bad.pth" in r.output
    assert "Traceback" not in r.output
    assert _nothing_written(tmp_path / "o")
    # a pickle the weights-only unpickler refuses: torch's preamble (suggesting weights_only=False) gives way to the cause
    bad.write_bytes(b"\x80\x02\x83\x01.")
    r = cli_run("export", "--model", "vit_t", "--checkpoint", str(bad), "-o", str(tmp_path / "o"))
    assert r.exit_code == 2 and "not a weights-only PyTorch file (Unsupported operand 131)" in r.output
    assert "weights_only` set to `False`" not in r.output
    assert _nothing_written(tmp_path / "o")


def test_mismatched_checkpoint_names_the_difference(cli_run, tmp_path):
    sd = build_model(get_info("vit_t")).state_dict()
    sd["head.weight"] = torch.zeros(10, 192)
    sd.pop("norm.bias")
    path = tmp_path / "other.pth"
    torch.save(sd, path)
    r = cli_run("export", "--model", "vit_t", "--checkpoint", str(path), "-o", str(tmp_path / "o"))
    assert r.exit_code == 2
    assert "does not match the model" in r.output and "head.weight" in r.output and "norm.bias" in r.output
    assert _nothing_written(tmp_path / "o")


def test_output_directory_not_writable(cli_run, tmp_path):
    f = tmp_path / "a_file"
    f.write_text("x")
    r = cli_run("export", "--model", "vit_t", "-o", str(f / "sub"))
    assert r.exit_code == 2 and "cannot create output directory" in r.output


def test_pretrained_offline_says_use_checkpoint(cli_run, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = cli_run("export", "--model", "vit_t", "--pretrained", "-o", str(tmp_path / "o"))
    assert r.exit_code == 2 and "--checkpoint" in r.output and "pretrained" in r.output
    assert _nothing_written(tmp_path / "o")


def test_conflicting_flags(cli_run, tmp_path):
    r = cli_run("export", "--model", "vit_t", "--batch", "2", "--dynamic-batch", "1:2:4", "-o", str(tmp_path / "o"))
    assert r.exit_code == 2 and "cannot be used together" in r.output
    r = cli_run("export", "--model", "vit_t", "--dynamic-batch", "4:2:1", "-o", str(tmp_path / "o"))
    assert r.exit_code == 2 and "MIN <= OPT <= MAX" in r.output


def test_parity_failure_exits_3_and_leaves_nothing(cli_run, tmp_path, monkeypatch):
    from vitdeploy.deploy import export as export_module
    from vitdeploy.parity import Tolerance

    monkeypatch.setattr(export_module, "Tolerance", lambda: Tolerance(atol=-1.0, rtol=0.0))
    r = cli_run("export", "--model", "vit_t", "-o", str(tmp_path / "o"))
    assert r.exit_code == 3 and "does not match PyTorch" in r.output
    assert not (tmp_path / "o").exists()


def test_models_lists_every_alias(cli_run):
    r = cli_run("models", "--json")
    assert r.exit_code == 0
    rows = {row["alias"]: row for row in json.loads(r.stdout)}  # progress, if any, goes to stderr
    for a in "vit_t vit_s vit_b deit_t deit_s deit_b swin_t swin_s swin_b convit_t convit_s convit_b mixer_s mixer_b deformable_detr".split():
        assert a in rows
    assert rows["swin_t"]["passes"] == ["swin"] and rows["deformable_detr"]["source"] == "transformers"
    assert rows["vit_b"]["parameters"] == 86567656
    # Swin V2 (timm's registry names, each checked to exist there)
    import timm

    for alias, name, size in [("swinv2_t", "swinv2_tiny_window8_256", 256), ("swinv2_s", "swinv2_small_window16_256", 256),
                              ("swinv2_b", "swinv2_base_window12to24_192to384", 384)]:
        assert (rows[alias]["name"], rows[alias]["input_size"], rows[alias]["passes"]) == (name, [size, size], ["swin"])
        assert rows[alias]["family"] == "swinv2" and timm.is_model(name)


def test_every_command_has_help_with_an_example(cli_run):
    from vitdeploy.cli import LazyGroup, cli

    names = LazyGroup.list_commands(cli, None)
    assert {"models", "export"} <= set(names)
    for name in names:
        r = cli_run(name, "--help")
        assert r.exit_code == 0, name
        assert "Example" in r.output, f"{name} --help has no example"
    r = cli_run("--help")
    assert "Example" in r.output


def test_mistyped_command_suggests(cli_run):
    r = cli_run("exprot")
    assert r.exit_code == 2 and "Did you mean 'export'" in r.output


def test_outputs_of_every_container_a_module_returns_are_named_and_exported(tmp_path):
    """A module may return a namedtuple, a dataclass or a SimpleNamespace of tensors (the fuzz's Mask2Former
    pixel decoder does): each output takes its field name, and the export matches PyTorch."""
    import collections
    import dataclasses
    import types

    import torch

    from vitdeploy.deploy.export import BatchSpec, export_onnx, flatten_outputs
    from vitdeploy.onnxrt import session

    Pair = collections.namedtuple("Pair", "feats logits")

    @dataclasses.dataclass
    class Out:
        feats: torch.Tensor
        logits: torch.Tensor

    wrap = {"namedtuple": Pair, "dataclass": Out, "namespace": lambda **kw: types.SimpleNamespace(**kw)}

    class Net(torch.nn.Module):
        def __init__(self, kind):
            super().__init__()
            self.conv, self.kind = torch.nn.Conv2d(3, 4, 3, padding=1), kind

        def forward(self, x):
            f = self.conv(x)
            return wrap[self.kind](feats=f, logits=f.mean((2, 3)))

    x = torch.randn(1, 3, 8, 8)
    for kind in wrap:
        net = Net(kind).eval()
        assert [n for n, _ in flatten_outputs(net(x))] == ["feats", "logits"], kind
        path = tmp_path / f"{kind}.onnx"
        export_onnx(net, x, path, opset=18, batch=BatchSpec.static(1), output_names=("feats", "logits"), exporter="torchscript")
        got = session(path).run(["logits"], {"input": x.numpy()})[0]
        np.testing.assert_allclose(got, net(x).logits.detach().numpy(), atol=1e-5)
    with pytest.raises(TypeError, match="returned a str, not tensors"):
        flatten_outputs("no tensors")
