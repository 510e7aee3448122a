"""The `gpsa` rewrite pass on ConViT exported by both exporters, static/dynamic batch, N=196 and N=100."""
from __future__ import annotations

import collections
import warnings

import numpy as np
import onnx
import pytest
import torch

from vitdeploy.deploy.export import BatchSpec, export_onnx
from vitdeploy.deploy.rewrite.driver import run_pass, run_passes
from vitdeploy.deploy.rewrite.gpsa import GpsaPass
from vitdeploy.errors import VitdeployError
from vitdeploy.models import build_model, get_info
from vitdeploy.onnxrt import session

POSITIONAL_OPS = {"ScatterElements", "ScatterND", "Pow"}


def _convit(alias: str, img: int):
    """Random-weight ConViT with a distinct gate per head and a non-trivial pos_proj bias."""
    torch.manual_seed(0)
    model = build_model(get_info(alias), img_size=(img, img))
    with torch.no_grad():
        for blk in model.blocks:
            if blk.use_gpsa:
                blk.attn.gating_param.copy_(2 * torch.randn_like(blk.attn.gating_param))
                blk.attn.pos_proj.bias.normal_(0, 0.5)
    return model.eval()


def _export(model, tmp_path, img, exporter, batch):
    path = tmp_path / f"convit_{exporter}_{img}_{batch.dynamic}.onnx"
    export_onnx(model, torch.randn(batch.opt, 3, img, img), path, batch=batch, exporter=exporter)
    return onnx.load(str(path))


def _ops(model: onnx.ModelProto) -> collections.Counter:
    return collections.Counter(n.op_type for n in model.graph.node)


def _torch_parity(model, rewritten, batch: int, img: int) -> float:
    x = torch.randn(batch, 3, img, img, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        ref = model(x).numpy()
    (got,) = session(rewritten).run(None, {"input": x.numpy()})
    return float(np.abs(got - ref).max())


@pytest.fixture(scope="module")
def convit_t():
    return _convit("convit_t", 224)


@pytest.fixture(scope="module")
def ts_static(convit_t, tmp_path_factory):
    return _export(convit_t, tmp_path_factory.mktemp("gpsa"), 224, "torchscript", BatchSpec.static(1))


@pytest.mark.parametrize("mode", ["plugin", "native"])
def test_convit_t_torchscript_static(convit_t, ts_static, mode):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out, report = run_passes(ts_static, ["gpsa"], mode=mode, check_whole=mode == "plugin")
    assert not [w for w in caught if str(w.message).startswith("gpsa:")]  # a refused candidate warns
    rep = report["passes"][0]
    assert (rep["found"], rep["replaced"]) == (10, 10)
    assert rep["nodes_before"] == len(ts_static.graph.node) and rep["nodes_after"] == len(out.graph.node)
    assert rep["nodes_after"] < rep["nodes_before"] / 3
    ops = _ops(out)
    assert not POSITIONAL_OPS & set(ops), ops
    assert ops["ReduceSum"] == 0  # the no-op renormalisation is gone
    if mode == "plugin":
        assert ops["GatedPositionalAttention"] == 10
        assert ops["Softmax"] == 2  # the two MHSA blocks, left for TensorRT's attention fusion
        assert any(o.domain == "vitdeploy" for o in out.opset_import)
    else:
        assert ops["GatedPositionalAttention"] == 0 and ops["Softmax"] == 12
        assert all(n.domain in ("", "ai.onnx") for n in out.graph.node)
        # every attention is the plain Softmax -> MatMul chain TensorRT fuses (no blend in between)
        users = collections.defaultdict(list)
        for n in out.graph.node:
            for i in n.input:
                users[i].append(n.op_type)
        assert all(users[n.output[0]] == ["MatMul"] for n in out.graph.node if n.op_type == "Softmax")
    if mode == "plugin":
        assert report["whole_graph"]["passed"]
    assert _torch_parity(convit_t, out, 1, 224) < 1e-4


def _reduced_convit(img: int, depth: int, gpsa_layers: int):
    """timm ConViT-Ti widths (4 heads x 48) with fewer blocks: the same GPSA/MHSA code paths, faster to export."""
    from timm.models.convit import ConVit

    torch.manual_seed(0)
    model = ConVit(img_size=img, embed_dim=48, num_heads=4, depth=depth, local_up_to_layer=gpsa_layers, num_classes=10)
    with torch.no_grad():
        for blk in model.blocks:
            if blk.use_gpsa:
                blk.attn.gating_param.copy_(2 * torch.randn_like(blk.attn.gating_param))
                blk.attn.pos_proj.bias.normal_(0, 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def dynamo_dynamic_n100(tmp_path_factory):
    """Dynamo exporter, dynamic batch, 160x160 input (N = 100 tokens), 3 GPSA + 1 MHSA blocks."""
    model = _reduced_convit(160, depth=4, gpsa_layers=3)
    return model, _export(model, tmp_path_factory.mktemp("gpsa"), 160, "dynamo", BatchSpec(1, 2, 4))


@pytest.mark.parametrize("mode", ["plugin", "native"])
def test_dynamo_dynamic_batch_n100(dynamo_dynamic_n100, mode):
    model, src = dynamo_dynamic_n100
    assert POSITIONAL_OPS & set(_ops(src))
    out, report = run_passes(src, ["gpsa"], mode=mode, check_whole=False)
    rep = report["passes"][0]
    assert (rep["found"], rep["replaced"]) == (3, 3)
    assert not POSITIONAL_OPS & set(_ops(out))
    assert _ops(out)["Softmax"] == (1 if mode == "plugin" else 4)
    if mode == "plugin":
        pos_shapes = {tuple(i.dims) for i in out.graph.initializer if i.name.endswith("/pos")}
        assert pos_shapes == {(4, 100, 100)}
    for b in (1, 3):
        assert _torch_parity(model, out, b, 160) < 1e-4


@pytest.mark.parametrize("alias,heads", [("convit_s", 9), pytest.param("convit_b", 16, marks=pytest.mark.slow)])
def test_convit_s_b_structure(alias, heads, tmp_path):
    """convit_s / convit_b widths at 64x64 (N=16): every GPSA layer replaced, the two MHSA layers untouched."""
    model = _convit(alias, 64)
    src = _export(model, tmp_path, 64, "torchscript", BatchSpec.static(1))
    out, report = run_passes(src, ["gpsa"], mode="plugin", check_whole=False)
    rep = report["passes"][0]
    assert (rep["found"], rep["replaced"]) == (10, 10)
    found = {a.i for n in out.graph.node if n.op_type == "GatedPositionalAttention" for a in n.attribute if a.name == "num_heads"}
    assert found == {heads}
    assert _ops(out)["Softmax"] == 2
    assert not POSITIONAL_OPS & set(_ops(out))
    assert _torch_parity(model, out, 1, 64) < 1e-4


def test_graph_without_gpsa_is_unchanged(tmp_path):
    from timm.models.convit import ConVit

    torch.manual_seed(0)
    mhsa_only = ConVit(img_size=32, patch_size=16, embed_dim=48, depth=2, num_heads=4, local_up_to_layer=0, num_classes=5).eval()
    src = _export(mhsa_only, tmp_path, 32, "torchscript", BatchSpec.static(1))
    out, report = run_passes(src, ["gpsa"], mode="plugin")
    assert report["passes"][0]["found"] == 0
    assert out.SerializeToString() == src.SerializeToString()


def test_wrong_gate_is_refused_not_miscompiled(tmp_path):
    """Blend weights that are not (1-g, g) are reported as a near-miss and left in place."""
    m = _export(_reduced_convit(64, depth=3, gpsa_layers=2), tmp_path, 64, "torchscript", BatchSpec.static(1))
    sub = next(n for n in m.graph.node if n.op_type == "Sub")  # 1 - sigmoid(gating) of the first GPSA layer
    sub.op_type = "Add"  # 1 + sigmoid(gating): rows no longer sum to one
    out, report = run_passes(m, ["gpsa"], mode="plugin", check_whole=False)
    rep = report["passes"][0]
    assert (rep["found"], rep["replaced"]) == (1, 1)
    assert any("blend weights are not (1 - g, g)" in n for n in rep["notes"])
    # left in place: the rewritten graph still computes the (corrupted) original, numbers included
    assert any(n.op_type == "Add" and list(n.output) == list(sub.output) for n in out.graph.node)
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    np.testing.assert_allclose(session(out).run(None, {"input": x})[0], session(m).run(None, {"input": x})[0], atol=1e-4)


@pytest.mark.parametrize("mode,exporter", [("plugin", "dynamo"), ("native", "torchscript")])
def test_cli_rewrite_gpsa(cli_run, tmp_path, mode, exporter):
    """`vitdeploy rewrite --passes gpsa` end to end on a small ConViT (static batch); the written file runs on ORT.

    At N=16 the dynamo exporter folds g·P into one initializer (no positional Softmax left): still matched.
    """
    import json

    model = _reduced_convit(64, depth=3, gpsa_layers=2)
    src = tmp_path / "convit.onnx"
    onnx.save(_export(model, tmp_path, 64, exporter, BatchSpec.static(1)), str(src))
    dst = tmp_path / f"convit.{mode}.onnx"
    res = cli_run("rewrite", str(src), "-o", str(dst), "--passes", "gpsa", "--plugins", {"plugin": "on", "native": "off"}[mode], "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.output[res.output.index("{"):])
    gpsa = next(p for p in report["passes"] if p["pass"] == "gpsa")
    assert (gpsa["found"], gpsa["replaced"], gpsa["mode"]) == (2, 2, mode)
    assert gpsa["nodes_after"] < gpsa["nodes_before"]
    assert _torch_parity(model, onnx.load(str(dst)), 1, 64) < 1e-4


def test_symbolic_image_size_is_reported_not_folded(tmp_path):
    """With a symbolic H/W the token count is unknown, so P cannot be folded: a note, no rewrite, no crash."""
    model = _reduced_convit(64, depth=3, gpsa_layers=2)
    path = tmp_path / "dyn_hw.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, 64, 64),), str(path), dynamo=False, opset_version=18,
                          input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "b", 2: "h", 3: "w"}})
    src = onnx.load(str(path))
    with pytest.raises(VitdeployError, match="symbolic dimension 'h'"):  # no feeds: the driver asks for them
        run_passes(src, ["gpsa"], mode="plugin")
    feeds = {"input": np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)}
    out, rep = run_pass(src, GpsaPass(), "plugin", feeds=feeds)
    assert (rep.found, rep.replaced) == (0, 0)
    assert any("2 GPSA blend(s) found but not folded" in n and "symbolic dimension" in n for n in rep.notes), rep.notes
    assert out.SerializeToString() == src.SerializeToString()
