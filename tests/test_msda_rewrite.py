"""Pass `msda`: Deformable DETR's deformable attention cores -> the stock plugin (or vitdeploy's), verified on the CPU."""
import warnings

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
import torch

from vitdeploy.deploy.export import BatchSpec, export_onnx
from vitdeploy.deploy.rewrite.driver import run_passes
from vitdeploy.deploy.rewrite.msda import MsdaPass
from vitdeploy.models import build_model, detr_config, get_info
from vitdeploy.onnxrt import session
from vitdeploy.plugins.msda.spec import STOCK_SPEC, STOCK_V1_SPEC, VITDEPLOY_SPEC

INFO = get_info("deformable_detr")
SIZE = 128


def spread_sampling(model, seed=0):
    """Fresh Deformable DETR init zeroes the offset/weight projections (every query samples its reference
    point with uniform weights); give them random weights so locations spread, some past the map edges."""
    from transformers.models.deformable_detr.modeling_deformable_detr import DeformableDetrMultiscaleDeformableAttention

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, DeformableDetrMultiscaleDeformableAttention):
                for lin, std in ((mod.sampling_offsets, 0.5), (mod.attention_weights, 0.3)):
                    lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * std)
                    lin.bias.copy_(torch.randn(lin.bias.shape, generator=g) * 2 * std)
    return model


def images(batch, seed):
    return torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def detr():
    torch.manual_seed(0)
    return spread_sampling(build_model(INFO, img_size=(SIZE, SIZE), small=True))


def export(model, path, exporter, batch, example_batch):
    res = export_onnx(model, images(example_batch, 0), path, batch=batch, output_names=INFO.outputs, exporter=exporter)
    assert res.exporter == exporter and res.fallback_reason is None  # this exporter really ran
    return onnx.load(str(path))


@pytest.fixture(scope="module")
def dynamo_dynamic(detr, tmp_path_factory):
    """What `vitdeploy export --dynamic-batch` produces for Deformable DETR (dynamo, symbolic batch)."""
    model = export(detr, tmp_path_factory.mktemp("msda") / "dynamo.onnx", "dynamo", BatchSpec(1, 2, 4), 2)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # batch really is symbolic
    return model


@pytest.fixture(scope="module")
def torchscript_dynamic(detr, tmp_path_factory):
    return export(detr, tmp_path_factory.mktemp("msda_ts") / "dyn.onnx", "torchscript", BatchSpec(1, 2, 4), 2)


def rewrite(model, impl="stock", feeds=None, mode="plugin"):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a refused candidate warns: fail loudly here
        return run_passes(model, ["msda"], mode, feeds=feeds, options={"msda_impl": impl})


def assert_matches_pytorch(detr, rewritten, batch, seed=1):
    x = images(batch, seed)
    with torch.no_grad():
        out = detr(x)
    got = session(rewritten).run(None, {"input": x.numpy()})
    for name, want, g in zip(INFO.outputs, (out.logits, out.pred_boxes), got):
        err = np.abs(g - want.numpy()).max()
        assert err <= 1e-4, f"{name}: max-abs {err:.3g} vs PyTorch"
    return got


def ops(model):
    return [n.op_type for n in model.graph.node]


# ----------------------------------------------------------------------------- the reduced model, dynamo, dynamic batch

@pytest.fixture(scope="module")
def rewritten_stock(dynamo_dynamic):
    return rewrite(dynamo_dynamic, "stock")


def test_all_cores_replaced_by_the_stock_plugin(dynamo_dynamic, rewritten_stock):
    out, report = rewritten_stock
    rep = report["passes"][0]
    # reduced config: 2 encoder + 2 decoder layers, 4 levels each
    assert ops(dynamo_dynamic).count("GridSample") == 16
    assert rep["found"] == rep["replaced"] == 4, rep
    assert "GridSample" not in ops(out)
    nodes = [n for n in out.graph.node if n.op_type == STOCK_SPEC.name]
    assert len(nodes) == 4
    for n in nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        assert attrs == {"plugin_namespace": b"", "plugin_version": b"1"}  # no TensorRT here: v1 (finding 3)
        assert n.domain == STOCK_SPEC.domain
    assert any(o.domain == STOCK_SPEC.domain for o in out.opset_import)
    assert report["nodes_after"] < report["nodes_before"]
    assert report["whole_graph"]["passed"]
    onnx.checker.check_model(out)


def test_plugin_inputs_follow_the_contract(rewritten_stock):
    out, _ = rewritten_stock
    g = gs.import_onnx(onnx.shape_inference.infer_shapes(out))
    node = next(n for n in g.nodes if n.op == STOCK_SPEC.name)
    value, shapes, starts, loc, weights = node.inputs
    # 128x128 input -> levels at strides 8/16/32/64
    assert shapes.values.tolist() == [[16, 16], [8, 8], [4, 4], [2, 2]]
    assert shapes.values.dtype == np.int32 and starts.values.dtype == np.int32
    assert starts.values.tolist() == [0, 256, 320, 336]
    assert list(value.shape)[1:] == [340, 4, 16]  # [N, S, M, D]: d_model 64, 4 heads
    assert loc.shape[-3:] == [4, 4, 2] and weights.shape[-2:] == [4, 4]
    # the core output is reshaped back to [N, Lq, M*D] for output_proj
    consumer = node.outputs[0].outputs[0]
    assert consumer.op == "Reshape" and consumer.inputs[1].values.tolist() == [0, 0, -1]


@pytest.mark.parametrize("batch", [1, 3])
def test_rewritten_graph_matches_pytorch_at_any_batch(detr, rewritten_stock, batch):
    out, _ = rewritten_stock
    assert_matches_pytorch(detr, out, batch=batch, seed=batch)


@pytest.mark.parametrize("attr,value,why", [("padding_mode", b"border", "padding_mode=border"),
                                            ("align_corners", 1, "align_corners=1")])
def test_other_sampling_semantics_are_not_rewritten(dynamo_dynamic, attr, value, why):
    edited = onnx.ModelProto.FromString(dynamo_dynamic.SerializeToString())
    target = next(n for n in edited.graph.node if n.op_type == "GridSample")  # level 0 of the first core
    for a in target.attribute:
        if a.name == attr:
            if isinstance(value, bytes):
                a.s = value
            else:
                a.i = value
    g = gs.import_onnx(edited)
    cands, notes = MsdaPass().find(g)
    assert len(cands) == 3  # the edited core is left alone, the other three are still found
    assert any(why in n and "semantics differ" in n for n in notes), notes


# ----------------------------------------------------------------------------- TorchScript exports

def test_torchscript_export_is_matched_by_structure(torchscript_dynamic):
    """TorchScript exports differ (Slice instead of Split, shape arithmetic; with dynamic batch the
    spatial shapes and level starts are computed from tensor shapes). Their sampling grids are FP64
    (TorchScript traces the reference points in double), which ONNX Runtime's GridSample cannot run,
    so these graphs cannot be verified on the CPU; the pass must still find every core exactly.
    (The static TorchScript case is the real-config test below.)"""
    g = gs.import_onnx(onnx.shape_inference.infer_shapes(torchscript_dynamic))
    cands, notes = MsdaPass().find(g)
    assert len(cands) == 4 and not notes
    for c in cands:
        levels = c.params["levels"]
        assert len(levels) == 4
        assert any(isinstance(x, gs.Tensor) for lv in levels for x in lv)  # data, not constants
        assert not c.params["from_grid"]  # the 2 * loc - 1 grid was traced back to the locations


class SyntheticCore:
    """transformers' MultiScaleDeformableAttention fed from two feature maps of any size, exported with
    TorchScript and dynamic H/W: the spatial shapes and level starts in the graph are computed from
    Shape ops, so one rewritten graph must serve every resolution."""

    M, D, L, P, LQ = 2, 8, 2, 3, 5
    NAMES = ["f0", "f1", "loc", "w"]

    def __init__(self, path):
        from transformers.models.deformable_detr.modeling_deformable_detr import MultiScaleDeformableAttention

        m_, d_ = self.M, self.D

        class Core(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.attn = MultiScaleDeformableAttention()

            def forward(self, f0, f1, loc, w):
                maps = [f0, f1]
                shapes_list = [(f.shape[2], f.shape[3]) for f in maps]
                value = torch.cat([f.flatten(2).transpose(1, 2) for f in maps], 1)
                value = value.view(f0.shape[0], value.shape[1], m_, d_)
                spatial = torch.tensor(shapes_list)
                start = torch.cat([spatial.new_zeros(1), (spatial[:, 0] * spatial[:, 1]).cumsum(0)[:-1]])
                return self.attn(value, spatial, shapes_list, start, loc, w, 64)

        self.module = Core().eval()
        axes = {"f0": {0: "n", 2: "h0", 3: "w0"}, "f1": {0: "n", 2: "h1", 3: "w1"}, "loc": {0: "n"}, "w": {0: "n"}, "out": {0: "n"}}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(self.module, self.inputs(6, 8, 3, 4, 1), str(path), dynamo=False, opset_version=18,
                              input_names=self.NAMES, output_names=["out"], dynamic_axes=axes)
        self.model = onnx.load(str(path))

    def inputs(self, h0, w0, h1, w1, n):
        g = torch.Generator().manual_seed(h0 * 100 + w0)
        return (torch.randn(n, self.M * self.D, h0, w0, generator=g), torch.randn(n, self.M * self.D, h1, w1, generator=g),
                torch.rand(n, self.LQ, self.M, self.L, self.P, 2, generator=g) * 1.4 - 0.2,
                torch.rand(n, self.LQ, self.M, self.L, self.P, generator=g))

    def feeds(self, *shape):
        return {k: v.numpy() for k, v in zip(self.NAMES, self.inputs(*shape))}

    def assert_rewrite_holds(self, rewritten, grid_shift=1.0):
        """The rewritten graph equals PyTorch at the export resolution and at another one, batch 1 and 2."""
        sess = session(rewritten)
        for shape in [(6, 8, 3, 4, 1), (10, 7, 5, 4, 2)]:
            x = self.inputs(*shape)
            got = sess.run(None, {k: v.numpy() for k, v in zip(self.NAMES, x)})[0]
            with torch.no_grad():
                want = self.module(x[0], x[1], x[2] + (1.0 - grid_shift) / 2, x[3]).numpy()
            assert np.abs(got - want).max() < 1e-5, shape


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return SyntheticCore(tmp_path_factory.mktemp("msda_core") / "core.onnx")


@pytest.mark.parametrize("impl,mode,spec", [("stock", "plugin", STOCK_V1_SPEC), ("vitdeploy", "plugin", VITDEPLOY_SPEC),
                                            ("vitdeploy", "native", STOCK_V1_SPEC)], ids=["stock", "vitdeploy", "native"])
def test_data_dependent_spatial_shapes_are_rewritten_and_hold_at_other_resolutions(synthetic, impl, mode, spec):
    out, report = rewrite(synthetic.model, impl, feeds=synthetic.feeds(6, 8, 3, 4, 1), mode=mode)
    assert report["passes"][0]["replaced"] == 1 and "GridSample" not in ops(out)
    plugin = next(n for n in gs.import_onnx(out).nodes if n.op == spec.name)
    assert plugin.domain == spec.domain and plugin.attrs["plugin_version"] == spec.version
    assert not isinstance(plugin.inputs[1], gs.Constant) and not isinstance(plugin.inputs[2], gs.Constant)
    synthetic.assert_rewrite_holds(out)


def test_a_grid_not_built_as_2_loc_minus_1_is_mapped_back_to_locations(synthetic):
    """If the grid's producer is not exactly `2 * loc - 1`, the pass feeds the plugin (grid + 1) / 2."""
    edited = onnx.ModelProto.FromString(synthetic.model.SerializeToString())
    g = gs.import_onnx(edited)
    sub = next(n for n in g.nodes if n.op == "Sub" and any(o.op == "Gather" for o in n.outputs[0].outputs))
    sub.inputs[1] = gs.Constant("grid_shift", np.array(0.75, np.float32))  # grid = 2 * loc - 0.75
    edited = gs.export_onnx(g)
    cands, _ = MsdaPass().find(gs.import_onnx(edited))
    assert len(cands) == 1 and cands[0].params["from_grid"]
    out, report = rewrite(edited, feeds=synthetic.feeds(6, 8, 3, 4, 1))
    assert report["passes"][0]["replaced"] == 1
    synthetic.assert_rewrite_holds(out, grid_shift=0.75)


# ----------------------------------------------------------------------------- real config

@pytest.mark.slow
def test_real_config_has_twelve_cores_with_48_grid_samples(tmp_path):
    """DeformableDetrConfig defaults (6 encoder + 6 decoder layers, d_model 256, 8 heads, 4 levels,
    4 points); a ResNet-18 backbone and a 64x64 input keep the export quick without changing the
    transformer's structure."""
    torch.manual_seed(0)
    from transformers import DeformableDetrForObjectDetection

    model = DeformableDetrForObjectDetection(detr_config(small=False, backbone="resnet18")).eval()
    path = tmp_path / "full.onnx"
    with torch.no_grad():
        export_onnx(model, torch.randn(1, 3, 64, 64), path, output_names=INFO.outputs, exporter="torchscript")
    graph = onnx.load(str(path))
    assert ops(graph).count("GridSample") == 48
    cands, notes = MsdaPass().find(gs.import_onnx(onnx.shape_inference.infer_shapes(graph)))
    assert len(cands) == 12 and not notes
    assert all(c.params["levels"] == [(8, 8, 0), (4, 4, 64), (2, 2, 80), (1, 1, 84)] for c in cands)


@pytest.mark.slow
def test_real_config_all_twelve_cores_replaced_and_match_pytorch(tmp_path):
    """Issue 8's bar on the default transformer (6 + 6 layers, d_model 256): every core replaced and
    logits/boxes within 1e-4 of PyTorch. Dynamo export (its grids are FP32, so ORT can run them)."""
    from transformers import DeformableDetrForObjectDetection

    torch.manual_seed(0)
    model = spread_sampling(DeformableDetrForObjectDetection(detr_config(small=False, backbone="resnet18")).eval())
    path = tmp_path / "full_dynamo.onnx"
    with torch.no_grad():
        export_onnx(model, torch.randn(1, 3, 64, 64), path, output_names=INFO.outputs, exporter="dynamo")
    graph = onnx.load(str(path))
    assert ops(graph).count("GridSample") == 48
    out, report = rewrite(graph)
    rep = report["passes"][0]
    assert rep["found"] == rep["replaced"] == 12 and report["whole_graph"]["passed"]
    assert "GridSample" not in ops(out) and ops(out).count(STOCK_SPEC.name) == 12
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = model(x)
    got = session(out).run(None, {"input": x.numpy()})
    for name, w, g in zip(INFO.outputs, (want.logits, want.pred_boxes), got):
        assert float(w.abs().max()) > 1e-2, name  # informative outputs
        assert np.abs(g - w.numpy()).max() <= 1e-4, name


def test_cli_msda_impl_selects_the_plugin(dynamo_dynamic, tmp_path, cli_run):
    """`vitdeploy rewrite --msda-impl vitdeploy` emits vitdeploy's Triton plugin instead of the stock one."""
    path = tmp_path / "detr.onnx"
    onnx.save(dynamo_dynamic, str(path))
    for impl, op, domain in (("stock", "MultiscaleDeformableAttnPlugin_TRT", None), ("vitdeploy", "MultiscaleDeformableAttention", "vitdeploy")):
        out = tmp_path / f"detr.{impl}.onnx"
        r = cli_run("rewrite", str(path), "-o", str(out), "--passes", "msda", "--msda-impl", impl, "--json")
        assert r.exit_code == 0, r.output
        nodes = [n for n in onnx.load(str(out)).graph.node if n.op_type == op]
        assert len(nodes) == 4
        if domain:
            assert {n.domain for n in nodes} == {domain}
