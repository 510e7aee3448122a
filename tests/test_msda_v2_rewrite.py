"""Pass `msda` on the other deformable-attention forms: RT-DETR v2 / D-FINE's per-level point counts and
discrete sampling, and TorchScript exports whose grids are FP64 (Deformable DETR, Mask2Former).

Models are the registry's reduced variants (vitdeploy.models, `--reduced`), built with random weights
whose convs are re-drawn at fan-in scale with normalisation scales at 1 (`hf_detectors.informative_init`):
with transformers' own random init every activation vanishes and RT-DETR's top-k query selection picks
among exactly tied scores, an order no two runtimes share. The deformable-attention projections are
re-drawn too (transformers zeroes them), so locations spread, some past the map edges.
Each export is made once per module and shared by the tests.
"""
import warnings

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
import torch

from vitdeploy.deploy.export import BatchSpec, export_onnx
from vitdeploy.deploy.rewrite.driver import run_passes
from vitdeploy.models import build_model, get_info
from vitdeploy.onnxrt import session
from vitdeploy.plugins.msda.spec import STOCK_SPEC, VITDEPLOY_SPEC

SIZE = 64  # Deformable DETR: 96 (at 64 its fourth level is 1x1, whose grid TorchScript exports as 0/0 = NaN)
TOL = 1e-4  # per block (the pass's verifier) and on the whole graph against PyTorch


def spread_sampling(model, seed=0):
    from vitdeploy.hf_detectors import spread_sampling as spread

    assert spread(model, torch.Generator().manual_seed(seed)) > 0
    return model


def images(batch, seed, size=SIZE):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def exported(alias, path, batch=BatchSpec(1, 2, 4), size=SIZE):
    info = get_info(alias)
    torch.manual_seed(0)
    model = spread_sampling(build_model(info, img_size=(size, size), small=True))
    res = export_onnx(model, images(batch.opt, 0, size), path, batch=batch, output_names=info.outputs, exporter="torchscript")
    assert res.exporter == "torchscript"
    return model, info, onnx.load(str(path))


def rewrite(model, mode="plugin", impl="stock", passes=("msda",)):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a refused candidate warns: fail loudly here
        return run_passes(model, list(passes), mode, options={"msda_impl": impl, "msda_stock_version": "1"})


def nodes(model, op):
    return [n for n in model.graph.node if n.op_type == op]


def attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def assert_matches_pytorch(torch_model, info, rewritten, batch=2, seed=3, size=SIZE):
    x = images(batch, seed, size)
    with torch.no_grad():
        out = torch_model(x)
    got = session(rewritten).run(None, {"input": x.numpy()})
    for name, g in zip(info.outputs, got):
        want = getattr(out, name).numpy()
        assert float(np.abs(want).max()) > 1e-2, name  # informative outputs
        err = float(np.abs(g - want).max())
        assert err <= TOL, f"{name}: max-abs {err:.3g} vs PyTorch"


def assert_every_core_replaced(report, n):
    rep = next(p for p in report["passes"] if p["pass"] == "msda")
    assert rep["found"] == rep["replaced"] == n, rep
    assert all(c["max_abs"] <= TOL for c in rep["candidates"])
    assert report["whole_graph"]["passed"]
    return rep


# ----------------------------------------------------------------------------- RT-DETR v2 (uniform points)

@pytest.fixture(scope="module")
def v2(tmp_path_factory):
    return exported("rtdetr_v2_r18", tmp_path_factory.mktemp("v2") / "v2.onnx")


@pytest.mark.parametrize("mode,impl,op", [("plugin", "stock", STOCK_SPEC.name), ("native", "vitdeploy", STOCK_SPEC.name)],
                         ids=["stock", "native"])
def test_rtdetr_v2_cores_are_replaced_in_every_mode(v2, mode, impl, op):
    """RT-DETR v2's core (split per level, concatenated points, weights [N, Lq, M, sum(P)]): with one P for every
    level TensorRT's stock plugin computes it exactly (its 5-D locations reshaped to 6-D, a view)."""
    torch_model, info, model = v2
    out, report = rewrite(model, mode, impl)
    rep = assert_every_core_replaced(report, 2)  # reduced: 2 decoder layers
    assert "GridSample" not in [n.op_type for n in out.graph.node]
    plugin = nodes(out, op)
    assert len(plugin) == 2
    if op == STOCK_SPEC.name:
        assert all("stock plugin" in c["emitted"] for c in rep["candidates"])
        g = gs.import_onnx(onnx.shape_inference.infer_shapes(out))
        loc = next(n for n in g.nodes if n.op == op).inputs[3]
        assert loc.shape[-3:] == [3, 4, 2]  # [N, Lq, M, L, P, 2]
    else:
        assert attrs(plugin[0])["num_points"] == [4, 4, 4] and attrs(plugin[0])["method"] == b"default"
    assert_matches_pytorch(torch_model, info, out)
    onnx.checker.check_model(out)


# ----------------------------------------------------------------------------- D-FINE (per-level points)

@pytest.fixture(scope="module")
def dfine(tmp_path_factory):
    """dfine_s reduced: 3 levels x [3, 6, 3] points, as D-FINE-S/M/L/X sample."""
    return exported("dfine_s", tmp_path_factory.mktemp("dfine") / "dfine.onnx")


def test_dfine_per_level_points_go_to_vitdeploys_plugin_in_plugin_mode(dfine):
    torch_model, info, model = dfine
    out, report = rewrite(model, "plugin", "stock")
    rep = assert_every_core_replaced(report, 2)
    # the stock plugin takes one P for every level: these cores become vitdeploy's plugin, and the report says why
    assert all("per-level point counts [3, 6, 3]" in c["emitted"] for c in rep["candidates"])
    (a, b) = nodes(out, VITDEPLOY_SPEC.name)
    assert attrs(a)["num_points"] == [3, 6, 3] and not nodes(out, STOCK_SPEC.name)
    assert_matches_pytorch(torch_model, info, out)


def test_dfine_native_mode_pads_points_for_the_stock_plugin_exactly(dfine):
    """Without Python plugins (JetPack 6) the stock plugin's v1 it is: each level padded to 6 points with
    zero attention weight, which adds exactly zero."""
    torch_model, info, model = dfine
    out, report = rewrite(model, "native")
    rep = assert_every_core_replaced(report, 2)
    assert all("padded to 6 per level at zero weight" in c["emitted"] for c in rep["candidates"])
    g = gs.import_onnx(onnx.shape_inference.infer_shapes(out))
    node = next(n for n in g.nodes if n.op == STOCK_SPEC.name)
    assert node.attrs["plugin_version"] == "1" and node.inputs[4].shape[-2:] == [3, 6]
    assert_matches_pytorch(torch_model, info, out)


# ----------------------------------------------------------------------------- discrete sampling

class DiscreteCore(torch.nn.Module):
    """transformers' `multi_scale_deformable_attention_v2` with decoder_method="discrete" on maps given as inputs."""

    SHAPES = [(6, 5), (3, 3)]
    POINTS = [2, 3]

    def __init__(self):
        super().__init__()
        # imported here, not in forward: importing transformers' vision modules while TorchScript traces fails
        from transformers.models.rt_detr_v2.modeling_rt_detr_v2 import multi_scale_deformable_attention_v2

        self.core = multi_scale_deformable_attention_v2

    def forward(self, value, loc, w):
        return self.core(value, self.SHAPES, loc, w, self.POINTS, "discrete")

    def inputs(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        s = sum(h * w for h, w in self.SHAPES)
        return (torch.randn(n, s, 2, 8, generator=g), torch.rand(n, 7, 2, 5, 2, generator=g) * 1.6 - 0.3,
                torch.rand(n, 7, 2, 5, generator=g))


@pytest.fixture(scope="module")
def discrete(tmp_path_factory):
    core = DiscreteCore()
    path = tmp_path_factory.mktemp("discrete") / "core.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(core, core.inputs(1, 0), str(path), dynamo=False, opset_version=18,
                          input_names=["value", "loc", "w"], output_names=["out"])
    return core, onnx.load(str(path))


@pytest.mark.parametrize("mode", ["plugin", "native"])
def test_discrete_sampling_is_replaced(discrete, mode):
    """plugin mode: vitdeploy's plugin (method "discrete"; the stock plugin only samples bilinearly);
    native mode: plain ONNX, the clamped pixels gathered with GatherElements. Both equal transformers."""
    core, model = discrete
    feeds = {k: v.numpy() for k, v in zip(["value", "loc", "w"], core.inputs(1, 1))}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, report = run_passes(model, ["msda"], mode, feeds=feeds, options={"msda_impl": "stock"})
    rep = assert_every_core_replaced(report, 1)
    assert "Gather" not in [n.op_type for n in out.graph.node if n.op_type == "Gather" and n.domain == ""][:0]
    if mode == "plugin":
        (node,) = nodes(out, VITDEPLOY_SPEC.name)
        assert attrs(node)["method"] == b"discrete" and attrs(node)["num_points"] == [2, 3]
        assert "discrete sampling" in rep["candidates"][0]["emitted"]
    else:
        assert not nodes(out, VITDEPLOY_SPEC.name) and not nodes(out, STOCK_SPEC.name)
        assert len(nodes(out, "GatherElements")) == 1
    x = core.inputs(1, 5)
    got = session(out).run(None, {k: v.numpy() for k, v in zip(["value", "loc", "w"], x)})[0]
    with torch.no_grad():
        want = core(*x).numpy()
    assert np.abs(got - want).max() <= 1e-5


# ----------------------------------------------------------------------------- FP64 grids (TorchScript, static shape)

class CastGridCore(torch.nn.Module):
    """Deformable DETR's core with its grid computed in FP64 and cast to FP32 before each GridSample: the issue's
    hand-edited graph (a Cast inserted on each FP64 grid). ONNX Runtime loads it; the FP64 arithmetic before
    the Casts flows back as values, so normalisation keeps it, and the matcher must step through the Casts."""

    SHAPES = [(5, 6), (3, 3)]

    def forward(self, value, loc, w):
        n, s, m, d = value.shape
        _, lq, _, nl, p, _ = loc.shape
        grids = 2 * loc.double() - 1
        samples = []
        for lvl, (h, wd) in enumerate(self.SHAPES):
            start = sum(hh * ww for hh, ww in self.SHAPES[:lvl])
            v = value[:, start:start + h * wd].flatten(2).transpose(1, 2).reshape(n * m, d, h, wd)
            g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1).float()
            samples.append(torch.nn.functional.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
        w = w.transpose(1, 2).reshape(n * m, 1, lq, nl * p)
        return (torch.stack(samples, dim=-2).flatten(-2) * w).sum(-1).view(n, m * d, lq).transpose(1, 2)

    def inputs(self, seed):
        g = torch.Generator().manual_seed(seed)
        return (torch.randn(1, 39, 2, 4, generator=g), torch.rand(1, 5, 2, 2, 3, 2, generator=g) * 1.6 - 0.3,
                torch.rand(1, 5, 2, 2, 3, generator=g))


def test_hand_cast_grids_are_stepped_through(tmp_path):
    core = CastGridCore()
    path = tmp_path / "cast.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(core, core.inputs(0), str(path), dynamo=False, opset_version=18,
                          input_names=["value", "loc", "w"], output_names=["out"])
    model = onnx.load(str(path))
    casts = [n for n in model.graph.node if n.op_type == "Cast"]
    assert {attrs(n)["to"] for n in casts} >= {onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT}
    feeds = {k: v.numpy() for k, v in zip(["value", "loc", "w"], core.inputs(1))}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, report = run_passes(model, ["msda"], "plugin", feeds=feeds, options={"msda_impl": "stock"})
    assert_every_core_replaced(report, 1)
    assert report.get("normalized", {}).get("normalized", 0) == 0  # values, not index/grid islands: kept FP64
    (node,) = nodes(out, STOCK_SPEC.name)
    x = core.inputs(2)
    got = session(out).run(None, {k: v.numpy() for k, v in zip(["value", "loc", "w"], x)})[0]
    with torch.no_grad():
        assert np.abs(got - core(*x).numpy()).max() <= 1e-5


@pytest.fixture(scope="module")
def detr_ts(tmp_path_factory):
    """Deformable DETR exported as optimum and most tutorials export it: TorchScript, static shape. Its encoder's
    reference points and grids come out FP64, which ONNX Runtime cannot run (no FP64 GridSample)."""
    path = tmp_path_factory.mktemp("detr_ts") / "detr.onnx"
    torch_model, info, model = exported("deformable_detr", path, BatchSpec(1, 1, 1), size=96)
    assert any(n.op_type == "Cast" and attrs(n)["to"] == onnx.TensorProto.DOUBLE for n in model.graph.node)
    return torch_model, info, model, path


def test_rewrite_normalises_fp64_grids_and_replaces_every_core(detr_ts, tmp_path, cli_run):
    """`vitdeploy rewrite` on it: the FP64 index/grid island computed in FP32 (measured against its FP64 self and
    said in the report), every core replaced, and the result equal to PyTorch."""
    import json

    from vitdeploy.errors import VitdeployError

    torch_model, info, model, path = detr_ts
    with pytest.raises(VitdeployError, match="GridSample"):
        session(model)  # as exported
    r = cli_run("rewrite", path, "-o", tmp_path / "rw.onnx", "--passes", "msda", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.output[r.output.index("{"):])
    assert_every_core_replaced(report, 4)  # reduced: 2 encoder + 2 decoder layers
    norm = report["normalized"]
    assert norm["normalized"] == norm["fp64_islands"] >= 1 and 0 < norm["grid_max_abs_deviation"] <= norm["grid_bound"]
    assert "normalised original" in norm["verified_against"]
    out = onnx.load(str(tmp_path / "rw.onnx"))
    assert not any(vi.type.tensor_type.elem_type == onnx.TensorProto.DOUBLE for vi in out.graph.value_info)
    assert_matches_pytorch(torch_model, info, out, batch=1, size=96)


def test_build_onnx_of_a_torchscript_mask2former(tmp_path_factory, cli_run):
    """`build --onnx` on Mask2Former exported with TorchScript (FP64 grids in its pixel decoder): the Swin blocks and
    the deformable attention replaced, normalisation recorded, accuracy measured against the normalised export."""
    import json

    path = tmp_path_factory.mktemp("m2f_ts") / "m2f.onnx"
    torch_model, info, model = exported("mask2former_swin_t", path, BatchSpec(1, 1, 1))
    out_dir = path.parent / "build"
    r = cli_run("build", "--onnx", path, "-o", out_dir, "--no-engine")  # no manifest beside it: every pass looks
    assert r.exit_code == 0, r.output
    manifest = json.loads((out_dir / "manifest.json").read_text())
    rw = manifest["rewrite"]
    assert {p["pass"]: p["replaced"] for p in rw["passes"] if p["replaced"]} == {"swin": 5, "msda": 1}  # Swin [1, 1, 2, 1]
    assert rw["normalized"]["normalized"] >= 1 and rw["whole_graph"]["passed"]
    acc = manifest["accuracy"]
    assert acc["task"] == "segmentation" and acc["reference_normalized"]["normalized"] >= 1
    assert acc["segmentation_agreement"] == 100.0  # FP32 rewrite: the semantic maps are the same
    assert_matches_pytorch(torch_model, info, onnx.load(str(out_dir / manifest["files"]["onnx"]["path"])), batch=1)
