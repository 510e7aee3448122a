"""The `swin` rewrite pass on real exports: every block found and replaced, numbers unchanged.

Reduced timm Swins (same code paths as swin_t: shifted and unshifted blocks, padding, window 12)
keep exports cheap; one full swin_t check at the end. Both exporters, static and dynamic batch.
Non-square inputs (per-dimension windows and shifts) and Swin V2 (timm and Hugging Face) below;
benchmarks/rewrite/swin_configs.py sweeps many more random configurations.
"""
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
import torch
from onnx import numpy_helper

from vitdeploy.deploy.export import BatchSpec, export_onnx
from vitdeploy.deploy.rewrite.driver import run_pass, run_passes
from vitdeploy.deploy.rewrite.swin import SwinWindowAttentionPass, shift_mask, window_order
from vitdeploy.onnxrt import session

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "rewrite"))
from swin_configs import random_swin  # noqa: E402  (the sweep's generator: one definition of "random Swin")

DEPTHS = (1, 1, 2, 1)  # stage 3 has the shifted block; stage 4 (7x7, window 7) is clamped to no shift


def reduced_swin(window=7, img=224, depths=DEPTHS, heads=(1, 2, 4, 8), seed=0):
    import timm

    torch.manual_seed(seed)
    return timm.create_model("swin_tiny_patch4_window7_224", depths=depths, embed_dim=32, num_heads=heads,
                             window_size=window, img_size=img, num_classes=10).eval()


def export(model, img, path, exporter, batch=None):
    export_onnx(model, torch.randn(1, 3, img, img), path, exporter=exporter, batch=batch or BatchSpec())
    return onnx.load(str(path))


def torch_out(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def ort_out(m, x):
    sess = session(m)
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def window_movement(m):
    """(roll pairs, partition/reverse transposes) left in a graph: what the rewrite must remove."""
    g = gs.import_onnx(m)
    rolls = []
    for n in g.nodes:
        if n.op == "Concat" and len(n.inputs) == 2 and all(i.inputs and i.inputs[0].op == "Slice" for i in n.inputs):
            if n.inputs[0].inputs[0].inputs[0] is n.inputs[1].inputs[0].inputs[0]:
                rolls.append(n)
    parts = [n for n in g.nodes if n.op == "Transpose" and list(n.attrs.get("perm", [])) == [0, 1, 3, 2, 4, 5]]
    return rolls, parts


def ops(m):
    return [n.op_type for n in m.graph.node]


def rewrite(m, mode):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no candidate may be refused here
        out, rep = run_passes(m, ["swin"], mode)
    return out, rep["passes"][0], rep


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def dynamo_static(tmp_path_factory):
    model = reduced_swin()
    return model, export(model, 224, tmp_path_factory.mktemp("sw") / "d.onnx", "dynamo")


@pytest.fixture(scope="module")
def ts_dynamic_padded(tmp_path_factory):
    """256x256 input: every stage pads (64->70, 32->35, 16->21, 8->14); dynamic batch."""
    model = reduced_swin(img=256)
    return model, export(model, 256, tmp_path_factory.mktemp("sw") / "t.onnx", "torchscript", BatchSpec(1, 2, 4))


# ----------------------------------------------------------------------------- the layout maths

def test_window_order_and_mask_agree_with_timm_and_the_plugin_reference():
    from timm.models.swin_transformer import window_partition

    from vitdeploy.plugins.window_attention.reference import shift_mask as ref_mask

    for h, w, ws, s in [(14, 14, 7, 3), (8, 8, 4, 2), (24, 24, 12, 6)]:
        ids = torch.arange(h * w).view(1, h, w, 1)
        rolled = torch.roll(ids, (-s, -s), dims=(1, 2))
        want = window_partition(rolled, (ws, ws)).reshape(-1).numpy()
        assert np.array_equal(window_order(h, w, ws, s), want)
        assert np.array_equal(shift_mask(h, w, ws, s), ref_mask(h, w, ws, s).numpy())
    order = window_order(10, 10, 7, 3)  # padded: 14x14 slots, 4 windows, zero tokens marked -1
    assert order.size == 4 * 49 and (order == -1).sum() == 196 - 100
    assert sorted(order[order >= 0].tolist()) == list(range(100))


# ----------------------------------------------------------------------------- reduced models

@pytest.mark.parametrize("mode", ["plugin", "native"])
def test_dynamo_static_every_block_replaced_and_matches_pytorch(dynamo_static, mode):
    model, m = dynamo_static
    rolls, parts = window_movement(m)
    assert len(rolls) == 4 and len(parts) == 2 * sum(DEPTHS)  # (roll + roll back) x 2 axes; partition + reverse
    out, rep, whole = rewrite(m, mode)
    assert (rep["found"], rep["replaced"]) == (sum(DEPTHS), sum(DEPTHS))
    assert [c["name"] for c in rep["candidates"]] == ["stage 1 block 1", "stage 2 block 1", "stage 3 block 1",
                                                      "stage 3 block 2", "stage 4 block 1"]
    assert whole["whole_graph"]["passed"] and rep["nodes_after"] < rep["nodes_before"]
    assert window_movement(out) == ([], [])
    x = np.random.default_rng(3).standard_normal((1, 3, 224, 224)).astype(np.float32)
    assert np.abs(ort_out(out, x) - torch_out(model, x)).max() < 1e-4
    if mode == "plugin":
        nodes = [n for n in out.graph.node if n.op_type == "WindowAttention"]
        assert len(nodes) == sum(DEPTHS) and "Softmax" not in ops(out)
        attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in nodes]
        assert [(a["height"], a["window_size"], a["shift_size"], a["num_heads"]) for a in attrs] == [
            (56, [7, 7], [0, 0], 1), (28, [7, 7], [0, 0], 2), (14, [7, 7], [0, 0], 4), (14, [7, 7], [3, 3], 4),
            (7, [7, 7], [0, 0], 8)]
        assert attrs[0]["plugin_namespace"] == b"vitdeploy" and abs(attrs[0]["scale"][0] - 32 ** -0.5) < 1e-7
        assert [(a["cosine"], a["mask_value"], len(a["scale"])) for a in attrs][3] == (0, -100.0, 4)
        assert any(o.domain == "vitdeploy" for o in out.opset_import)
    else:
        assert "WindowAttention" not in ops(out) and ops(out).count("Softmax") == sum(DEPTHS)
        assert ops(out).count("Gather") == 2 * sum(DEPTHS) and "Shape" not in ops(out)
        # the shifted block's mask and relative-position bias are ONE 4-D constant [1, nW*heads, N, N]
        # (windows folded into the head axis), the others' bias [1, heads, N, N]: TensorRT's fused form
        g = gs.import_onnx(out)
        biases = [t.values.shape for n in g.nodes if n.op == "Add" for t in n.inputs
                  if isinstance(t, gs.Constant) and t.values.ndim >= 3]
        assert sorted(biases) == [(1, 1, 49, 49), (1, 2, 49, 49), (1, 4, 49, 49), (1, 8, 49, 49), (1, 16, 49, 49)]
        # plain attention over constant gathers is still Swin: a native graph converts to plugin nodes --
        # except the shifted block, whose windows now sit in the head axis [B, nW*heads, N, N], a layout
        # the matcher does not measure (it refuses it, and the graph stays correct)
        again, rep2, _ = rewrite(out, "plugin")
        assert rep2["replaced"] == sum(DEPTHS) - 1 and ops(again).count("WindowAttention") == sum(DEPTHS) - 1
        assert [c["name"] for c in rep2["candidates"] if c["replaced"]] == [
            "stage 1 block 1", "stage 2 block 1", "stage 3 block 1", "stage 4 block 1"]
        onnx.checker.check_model(again)
        assert np.abs(ort_out(again, x) - torch_out(model, x)).max() < 1e-4


@pytest.mark.parametrize("mode", ["plugin", "native"])
def test_torchscript_dynamic_batch_with_padding(ts_dynamic_padded, mode):
    model, m = ts_dynamic_padded
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # really dynamic
    out, rep, whole = rewrite(m, mode)
    assert rep["replaced"] == rep["found"] == sum(DEPTHS) and whole["whole_graph"]["passed"]
    assert window_movement(out) == ([], [])
    x = np.random.default_rng(4).standard_normal((3, 3, 256, 256)).astype(np.float32)  # batch 3, not the traced 1
    assert np.abs(ort_out(out, x) - torch_out(model, x)).max() < 1e-4


def test_dynamo_dynamic_batch(tmp_path):
    """The fourth exporter x batch combination (dynamo's symbolic batch is a torch.export Dim)."""
    model = reduced_swin()
    m = export(model, 224, tmp_path / "dd.onnx", "dynamo", BatchSpec(1, 2, 4))
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    x = np.random.default_rng(11).standard_normal((3, 3, 224, 224)).astype(np.float32)
    for mode in ("plugin", "native"):
        out, rep, whole = rewrite(m, mode)
        assert rep["replaced"] == rep["found"] == sum(DEPTHS) and whole["whole_graph"]["passed"]
        assert window_movement(out) == ([], [])
        assert np.abs(ort_out(out, x) - torch_out(model, x)).max() < 1e-4


def test_window_12_at_384(tmp_path):
    """swin_b_384's structure (window 12, shift 6) on a reduced-width model."""
    model = reduced_swin(window=12, img=384)
    m = export(model, 384, tmp_path / "w12.onnx", "torchscript")
    out, rep, _ = rewrite(m, "native")  # plugin mode on padded/unpadded maps: the tests above
    assert rep["replaced"] == sum(DEPTHS)
    g = gs.import_onnx(out)
    consts = [t.values.shape for n in g.nodes if n.op in ("Add", "Gather") for t in n.inputs if isinstance(t, gs.Constant)]
    assert (1, 16, 144, 144) in consts  # the shifted 24x24 block: 2x2 windows of 12x12 x 4 heads, one folded bias
    assert (96 * 96,) in consts and (12 * 12,) in consts  # token gathers of stage 1 and stage 4
    x = np.random.default_rng(5).standard_normal((1, 3, 384, 384)).astype(np.float32)
    assert np.abs(ort_out(out, x) - torch_out(model, x)).max() < 1e-4


# ----------------------------------------------------------------------------- refusals

def test_corrupted_shift_mask_is_refused_by_name_and_left_untouched(dynamo_static):
    model, m = dynamo_static
    bad = onnx.ModelProto.FromString(m.SerializeToString())
    edited = 0
    for init in bad.graph.initializer:
        a = numpy_helper.to_array(init)
        if a.shape == (4, 49, 49) and (a == -100).any():  # the shifted block's region-id mask
            a = a.copy()
            a[1, 0, :] = 0.0  # window 1, query 0 now sees across regions
            init.CopyFrom(numpy_helper.from_array(a, init.name))
            edited += 1
    assert edited == 1
    with pytest.warns(UserWarning, match="swin: left stage 3 block 2 untouched"):
        out, rep = run_pass(bad, SwinWindowAttentionPass(), "plugin")  # the mask check is mode-independent
    assert (rep.found, rep.replaced) == (5, 4)
    assert any("stage 3 block 2" in n and "mask differs" in n for n in rep.notes)
    assert [c.name for c in rep.candidates if not c.replaced] == ["stage 3 block 2"]
    rolls, parts = window_movement(out)
    assert len(rolls) == 4 and len(parts) == 2  # the refused block keeps its roll/partition chain
    x = np.random.default_rng(6).standard_normal((1, 3, 224, 224)).astype(np.float32)
    np.testing.assert_allclose(ort_out(out, x), ort_out(bad, x), atol=1e-5)


def test_graph_without_swin_attention_passes_through_unchanged(tmp_path):
    import timm

    vit = timm.create_model("vit_tiny_patch16_224", depth=2, num_classes=10).eval()
    m = export(vit, 224, tmp_path / "vit.onnx", "torchscript")
    out, rep = run_pass(m, SwinWindowAttentionPass(), "plugin")
    assert out is m and rep.found == 0 and rep.notes == []


# ----------------------------------------------------------------------------- other implementations

class OfficialStyleBlock(torch.nn.Module):
    """A Swin v1 block written like Microsoft's reference code ([B, L, C] tokens, qkv[0]/[1]/[2]
    indexing, mask added through a 5-D view): different modules and ONNX, same computation."""

    def __init__(self, dim=32, res=14, window=7, shift=3, heads=2):
        super().__init__()
        self.res, self.ws, self.shift, self.heads = res, window, shift, heads
        self.norm1 = torch.nn.LayerNorm(dim)
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.proj = torch.nn.Linear(dim, dim)
        self.table = torch.nn.Parameter(torch.randn((2 * window - 1) ** 2, heads) * 0.5)
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
        self.register_buffer("index", rel[..., 0] * (2 * window - 1) + rel[..., 1])
        self.register_buffer("mask", torch.from_numpy(shift_mask(res, res, window, shift)) if shift else None)

    def forward(self, x):  # x: [B, L, C]
        b, l, c = x.shape
        h = w = self.res
        ws, nh = self.ws, self.heads
        shortcut = x
        x = self.norm1(x).view(b, h, w, c)
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)
        bw, n, _ = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, nh, c // nh).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * (c // nh) ** -0.5) @ k.transpose(-2, -1)
        attn = attn + self.table[self.index.view(-1)].view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        if self.mask is not None:
            nw = self.mask.shape[0]
            attn = attn.view(bw // nw, nw, nh, n, n) + self.mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, nh, n, n)
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(bw, n, c)
        x = self.proj(x)
        x = x.view(-1, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)
        if self.shift:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        return shortcut + x.reshape(b, h * w, c)


def test_hand_written_official_style_block_is_matched(tmp_path):
    torch.manual_seed(1)
    block = torch.nn.Sequential(OfficialStyleBlock(shift=0), OfficialStyleBlock(shift=3)).eval()
    x = torch.randn(2, 196, 32)
    path = tmp_path / "block.onnx"
    export_onnx(block, x, path, exporter="torchscript", batch=BatchSpec(2, 2, 2))
    m = onnx.load(str(path))
    for mode in ("plugin", "native"):
        out, rep, _ = rewrite(m, mode)
        assert rep["replaced"] == 2, rep
        got = ort_out(out, x.numpy())
        assert np.abs(got - block(x).detach().numpy()).max() < 1e-4


def test_torchvision_swin_is_matched_with_its_pad_then_roll_order(tmp_path):
    """torchvision pads *before* rolling: identical to timm without padding, a different token order
    with padding in shifted blocks (`pad_first`), matched too."""
    from torchvision.models.swin_transformer import SwinTransformer

    torch.manual_seed(2)
    tv = SwinTransformer(patch_size=[4, 4], embed_dim=32, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8],
                         window_size=[7, 7], stochastic_depth_prob=0.0, num_classes=10).eval()
    m = export(tv, 224, tmp_path / "tv.onnx", "torchscript")
    out, rep, _ = rewrite(m, "native")
    assert rep["replaced"] == 5
    x = np.random.default_rng(7).standard_normal((1, 3, 224, 224)).astype(np.float32)
    assert np.abs(ort_out(out, x) - torch_out(tv, x)).max() < 1e-4

    m = export(tv, 256, tmp_path / "tv256.onnx", "torchscript")  # 16x16 map padded to 21 in the shifted block
    out, rep, _ = rewrite(m, "plugin")
    assert rep["found"] == rep["replaced"] == 5 and rep["notes"] == []
    pads = [onnx.helper.get_attribute_value(a) for n in out.graph.node if n.op_type == "WindowAttention"
            for a in n.attribute if a.name == "pad_first"]
    assert pads == [0, 0, 0, 1, 0]  # only the padded, shifted block differs from timm's order
    x = np.random.default_rng(7).standard_normal((1, 3, 256, 256)).astype(np.float32)
    assert np.abs(ort_out(out, x) - torch_out(tv, x)).max() < 1e-4


# ----------------------------------------------------------------------------- full-size structure

@pytest.mark.slow
def test_swin_t_all_12_blocks_replaced_and_matches_pytorch(tmp_path):
    import timm

    torch.manual_seed(0)
    model = timm.create_model("swin_tiny_patch4_window7_224").eval()
    m = export(model, 224, tmp_path / "swin_t.onnx", "torchscript")
    x = np.random.default_rng(8).standard_normal((1, 3, 224, 224)).astype(np.float32)
    ref = torch_out(model, x)
    out, rep, whole = rewrite(m, "plugin")  # native mode: the reduced-model tests above
    assert rep["found"] == rep["replaced"] == 12 and whole["whole_graph"]["passed"]
    assert window_movement(out) == ([], [])
    assert np.abs(ort_out(out, x) - ref).max() < 1e-4


@pytest.mark.slow
def test_swin_s_and_swin_b_block_structure(tmp_path):
    """swin_s / swin_b depths (2, 2, 18, 2) and swin_b's heads (4, 8, 16, 32), at reduced width."""
    model = reduced_swin(depths=(2, 2, 18, 2), heads=(4, 8, 16, 32))
    m = export(model, 224, tmp_path / "deep.onnx", "torchscript")
    graph = gs.import_onnx(onnx.shape_inference.infer_shapes(m))
    cands, notes = SwinWindowAttentionPass().find(graph)  # structure and measured parameters only
    assert notes == [] and len(cands) == 24
    assert [c.name for c in cands][-3:] == ["stage 3 block 18", "stage 4 block 1", "stage 4 block 2"]
    lay = [c.params["layout"] for c in cands]
    assert [(l.height, l.heads, l.shift) for l in lay[4:6]] == [(14, 16, (0, 0)), (14, 16, (3, 3))]
    assert sum(l.shifted for l in lay) == 1 + 1 + 9  # every second block, except stage 4 (7x7 map)


def test_hugging_face_swin_with_separate_q_k_v_linears_is_matched(tmp_path):
    """transformers' Swin: query/key/value Linears (concatenated into one qkv weight), the scale as a
    Div after q·kᵀ, the mask built at run time."""
    from transformers import SwinConfig, SwinForImageClassification

    torch.manual_seed(3)
    cfg = SwinConfig(image_size=224, embed_dim=32, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8], window_size=7, num_labels=10)
    hf = SwinForImageClassification(cfg).eval()
    path = tmp_path / "hf.onnx"
    export_onnx(hf, torch.randn(1, 3, 224, 224), path, exporter="torchscript")
    out, rep, _ = rewrite(onnx.load(str(path)), "plugin")
    assert rep["replaced"] == 5
    assert window_movement(out) == ([], [])
    x = np.random.default_rng(9).standard_normal((1, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        ref = hf(torch.from_numpy(x)).logits.numpy()
    assert np.abs(ort_out(out, x) - ref).max() < 1e-4


def test_opset_23_attention_op_from_hugging_face_sdpa_is_matched(tmp_path):
    """transformers' Swin runs SDPA; dynamo at opset 23 writes one ONNX `Attention` node per block
    (q·kᵀ, scale, the bias+mask input, Softmax and ·v inside)."""
    from transformers import SwinConfig, SwinForImageClassification

    torch.manual_seed(4)
    cfg = SwinConfig(image_size=224, embed_dim=32, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8], window_size=7, num_labels=10)
    hf = SwinForImageClassification(cfg).eval()
    path = tmp_path / "hf23.onnx"
    export_onnx(hf, torch.randn(1, 3, 224, 224), path, exporter="dynamo", opset=23)
    m = onnx.load(str(path))
    assert ops(m).count("Attention") == 5 and "Softmax" not in ops(m)
    out, rep, _ = rewrite(m, "plugin")
    assert rep["replaced"] == 5 and ops(out).count("WindowAttention") == 5 and "Attention" not in ops(out)
    x = np.random.default_rng(10).standard_normal((1, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        ref = hf(torch.from_numpy(x)).logits.numpy()
    assert np.abs(ort_out(out, x) - ref).max() < 1e-4


# ----------------------------------------------------------------------------- non-square inputs, Swin V2

def relative_error(got, ref) -> float:
    return float(np.abs(got - ref).max() / np.abs(ref).max())


def blocks(model):
    return [b for layer in model.layers for b in layer.blocks]


# (seed, exporter): V1 and V2, each with both exporters
RANDOM = [(0, "dynamo"), (2, "torchscript"), (1, "torchscript"), (3, "dynamo")]


@pytest.mark.parametrize("seed,exporter", RANDOM, ids=[f"{'v2' if s % 2 else 'v1'}-seed{s}-{e}" for s, e in RANDOM])
def test_random_non_square_swin_every_block_replaced(tmp_path, seed, exporter):
    model, (h, w) = random_swin(seed)
    effective = [(tuple(b.window_size), tuple(b.shift_size)) for b in blocks(model)]
    assert any(wh != ww or sh != sw for (wh, ww), (sh, sw) in effective), effective  # really non-square somewhere
    path = tmp_path / "m.onnx"
    export_onnx(model, torch.randn(1, 3, h, w), path, exporter=exporter)
    out, rep, whole = rewrite(onnx.load(str(path)), "plugin")
    assert rep["found"] == rep["replaced"] == len(effective) and whole["whole_graph"]["passed"]
    nodes = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
             for n in out.graph.node if n.op_type == "WindowAttention"]
    # window and shift were measured from the data movement and agree with timm's per-block values
    assert [(tuple(a["window_size"]), tuple(a["shift_size"])) for a in nodes] == effective
    assert {a["cosine"] for a in nodes} == {seed % 2}
    x = np.random.default_rng(seed).standard_normal((2, 3, h, w)).astype(np.float32)
    assert relative_error(ort_out(out, x[:1]), torch_out(model, x[:1])) < 1e-4


def test_v2_native_mode_and_back_to_plugin(tmp_path):
    """Swin V2 without plugins: ReduceL2-free normalisation, per-head scale, folded bias; the native
    graph is still Swin V2 to the matcher."""
    model, (h, w) = random_swin(5)
    path = tmp_path / "v2.onnx"
    export_onnx(model, torch.randn(1, 3, h, w), path, exporter="torchscript")
    m = onnx.load(str(path))
    out, rep, whole = rewrite(m, "native")
    n = len(blocks(model))
    assert rep["replaced"] == n and whole["whole_graph"]["passed"] and "WindowAttention" not in ops(out)
    assert ops(m).count("ReduceL2") == 2 * n and "ReduceL2" not in ops(out)  # F.normalize's q and k ...
    assert ops(out).count("ReduceSum") - ops(m).count("ReduceSum") == 2 * n  # ... now our normalisation
    assert ops(out).count("Shape") < ops(m).count("Shape")  # the blocks' shape arithmetic is gone
    x = np.random.default_rng(12).standard_normal((1, 3, h, w)).astype(np.float32)
    ref = torch_out(model, x)
    assert relative_error(ort_out(out, x), ref) < 1e-4
    # back to plugin nodes -- except shifted blocks, whose windows the native form folds into the head axis
    # ([B, nW*heads, N, N], one 4-D bias), a layout the matcher does not re-measure (issue 12)
    shifted = sum(1 for b in blocks(model) if any(tuple(b.shift_size)))
    again, rep2, _ = rewrite(out, "plugin")
    assert 0 < shifted < n and rep2["replaced"] == n - shifted and ops(again).count("WindowAttention") == n - shifted
    assert relative_error(ort_out(again, x), ref) < 1e-4


def test_hugging_face_swinv2_every_block_replaced(tmp_path):
    """transformers' Swinv2Model: separate q/k/v Linears (k without bias), cosine attention, a mask the
    model adds twice (so -200, measured, not assumed), post-norm."""
    from transformers import Swinv2Config, Swinv2Model

    torch.manual_seed(6)
    # 160 px: 40x40, 20x20, 10x10 and 5x5 maps, window 7: padded shifted blocks, where Hugging Face
    # pads before it rolls (`pad_first`)
    cfg = Swinv2Config(image_size=160, embed_dim=32, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8], window_size=7)
    hf = Swinv2Model(cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith("logit_scale"):
                p.uniform_(0.5, 4.6)
    path = tmp_path / "hf_v2.onnx"
    export_onnx(hf, torch.randn(1, 3, 160, 160), path, exporter="torchscript",
                output_names=("last_hidden_state", "pooler_output"))
    out, rep, whole = rewrite(onnx.load(str(path)), "plugin")
    assert rep["found"] == rep["replaced"] == 5 and whole["whole_graph"]["passed"]
    nodes = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
             for n in out.graph.node if n.op_type == "WindowAttention"]
    assert [(a["cosine"], a["shift_size"], a["mask_value"], a["pad_first"]) for a in nodes][2:4] == [
        (1, [0, 0], -100.0, 0), (1, [3, 3], -200.0, 1)]
    assert nodes[4]["window_size"] == [5, 5]
    assert window_movement(out) == ([], [])
    x = np.random.default_rng(13).standard_normal((1, 3, 160, 160)).astype(np.float32)
    with torch.no_grad():
        ref = hf(torch.from_numpy(x)).last_hidden_state.numpy()
    assert relative_error(ort_out(out, x), ref) < 1e-4


@pytest.mark.slow
def test_swinv2_t_all_12_blocks_replaced_and_matches_pytorch(tmp_path):
    """timm's swinv2_tiny_window8_256 as `vitdeploy` builds it (256x256, window 8), with spread logit
    scales and q/v biases so the V2 paths are exercised, not just initialised."""
    from vitdeploy.models import build_model, get_info

    torch.manual_seed(0)
    model = build_model(get_info("swinv2_t"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("logit_scale"):
                p.uniform_(0.5, 5.0)
            elif name.endswith(("q_bias", "v_bias")):
                p.normal_(0, 0.2)
    m = export(model, 256, tmp_path / "swinv2_t.onnx", "torchscript")
    x = np.random.default_rng(14).standard_normal((1, 3, 256, 256)).astype(np.float32)
    out, rep, whole = rewrite(m, "plugin")
    assert rep["found"] == rep["replaced"] == 12 and whole["whole_graph"]["passed"]
    assert window_movement(out) == ([], [])
    assert relative_error(ort_out(out, x), torch_out(model, x)) < 1e-4
