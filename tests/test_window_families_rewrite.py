"""The `swin` pass on the windowed encoders of issue 24, through their aliases' test-sized models
(`--reduced`): SAM ViT-B (windowed blocks with decomposed relative position + global blocks), MobileSAM's
TinyViT-5M (LayerNorm after the partition, head-first q/k/v, offset biases, padding), Hiera-T (mask units,
query pooling, global stages), MaxViT-T (block and grid attention, head-first) and Twins-SVT-S (5-D
logits, padding, sub-sampled global attention). Every windowed block is replaced in plugin and native
mode with the outputs equal to PyTorch's, non-square inputs, and every Softmax left is named.

One export per family (module scope), shared by every test; the exporters alternate between families
(the fuzz suite draws both for each).
"""
from __future__ import annotations

import collections
import warnings

import numpy as np
import onnx
import pytest
import torch

from vitdeploy.deploy.export import BatchSpec, export_onnx
from vitdeploy.deploy.rewrite.driver import run_passes
from vitdeploy.models import build_model, get_info
from vitdeploy.onnxrt import session

# alias -> (image size, exporter, windowed blocks, global blocks (named, left to TensorRT), plugin op types)
FAMILIES = {
    # 6x10 map, windows 4 (padded to 8x12); blocks 1 and 3 global with the decomposed bias
    "sam_vit_b": ((96, 160), "torchscript", 2, 2, {"WindowAttentionRelPos": 2}),
    # maps 16x20 / 8x10 / 4x5 under windows 7 / 14 / 7: every window padded, LayerNorm inside
    "mobile_sam": ((128, 160), "dynamo", 3, 0, {"WindowAttention": 3}),
    # 16x24 tokens in 2x3 mask units; stages 1-2 (+ the lagging first block of stage 3) mask units, then global
    "hiera_t": ((64, 96), "dynamo", 4, 2, {"WindowAttention": 4}),
    # window 2x3 on 16x24 ... 2x3 maps: block + grid per stage (the last stage's one window keeps its bias)
    "maxvit_t": ((64, 96), "torchscript", 8, 0, {"WindowAttention": 8}),
    # LSA 7x7 windows on 16x24 ... 2x3 maps (padded), GSA sub-sampled global attention in between
    "twins_svt_s": ((64, 96), "dynamo", 4, 4, {"WindowAttention": 4}),
}


def _model(alias: str, size):
    torch.manual_seed(0)
    model = build_model(get_info(alias), img_size=size, small=True)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # position parameters start at zero in timm: make them matter
        for name, p in model.named_parameters():
            if any(k in name for k in ("rel_pos", "attention_biases", "relative_position", "pos_embed")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    for m in model.modules():
        if hasattr(m, "attention_bias_cache"):
            m.attention_bias_cache = {}
    return model.eval()


@pytest.fixture(scope="module")
def family(request, tmp_path_factory):
    alias = request.param
    size, exporter, *_ = FAMILIES[alias]
    model = _model(alias, size)
    if exporter == "dynamo":  # the dynamo exporter cannot translate SDPA on 3-D/5-D q/k/v: timm's math path
        for m in model.modules():
            if hasattr(m, "fused_attn"):
                m.fused_attn = False
    x = torch.randn(1, 3, *size)
    path = tmp_path_factory.mktemp(alias) / f"{alias}.onnx"
    info = get_info(alias)
    export_onnx(model, x, path, exporter=exporter, batch=BatchSpec.static(1), output_names=info.outputs)
    with torch.no_grad():
        ref = model(x).numpy()
    src = onnx.load(str(path))
    out = {}
    for mode in ("plugin", "native"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out[mode] = run_passes(src, ["swin"], mode)
    return alias, src, x.numpy(), ref, out


def _ops(model) -> collections.Counter:
    return collections.Counter(n.op_type for n in model.graph.node)


def _rel(got, ref) -> float:
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-6))


@pytest.mark.parametrize("family", list(FAMILIES), indirect=True)
def test_every_windowed_block_replaced_and_every_softmax_named(family):
    alias, src, x, ref, out = family
    _, _, windowed, glob, plugin_ops = FAMILIES[alias]
    for mode in ("plugin", "native"):
        model, report = out[mode]
        rep = report["passes"][0]
        assert rep["found"] == rep["replaced"] == windowed, (mode, rep)
        assert report["whole_graph"]["passed"]
        got = session(model).run(None, {"input": x})[0]
        assert _rel(got, ref) <= 1e-4, (mode, _rel(got, ref))  # parity with PyTorch, end to end
        census = report["softmax"]  # nothing left unnamed: the global blocks, and (native) the rewritten ones
        kinds = collections.Counter(c["kind"] for c in census)
        assert kinds == collections.Counter({"global": glob, **({"rewritten": windowed} if mode == "native" else {})})
        assert all(c["node"] in {n.name for n in model.graph.node} and "TensorRT" in c["why"] for c in census)
        if mode == "plugin":
            assert {k: v for k, v in _ops(model).items() if k.startswith("WindowAttention")} == plugin_ops
        else:
            assert not any(k.startswith("WindowAttention") for k in _ops(model))
            assert _ops(model)["Softmax"] == windowed + glob


@pytest.mark.parametrize("family", ["sam_vit_b"], indirect=True)
def test_sam_decomposed_relative_position_is_measured_per_head(family):
    """The tables the pass measured (shared by SAM's heads, so equal per head) are the model's own -- up to
    what the logits determine: R_h[Δy] + R_w[Δx] (a constant per channel may move from one table to the
    other) -- and the native form computes the bias from q with two batched MatMuls, nothing [N, N] held as a
    constant."""
    alias, src, x, ref, out = family
    model, _ = out["plugin"]
    nodes = [n for n in model.graph.node if n.op_type == "WindowAttentionRelPos"]
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    attn = _model(alias, FAMILIES[alias][0]).blocks[0].attn
    want = attn.rel_pos_h.detach().numpy()[:, None] + attn.rel_pos_w.detach().numpy()[None]  # [7, 7, head_dim]
    got_h, got_w = inits[nodes[0].input[1]], inits[nodes[0].input[2]]
    assert got_h.shape == got_w.shape == (2, 7, 16)
    assert np.allclose(got_h[:, :, None] + got_w[:, None], want[None], atol=1e-4)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nodes[0].attribute}
    assert list(attrs["window_size"]) == [4, 4] and (attrs["height"], attrs["width"]) == (6, 10)
    native, _ = out["native"]
    consts = {i.name: tuple(i.dims) for i in native.graph.initializer}
    added = [consts[t] for n in native.graph.node if n.op_type == "Add" for t in n.input if t in consts]
    assert not any(len(d) >= 2 and d[-2:] == (16, 16) for d in added)  # no [.., N, N] bias constant: computed


@pytest.mark.parametrize("family", ["maxvit_t", "hiera_t"], indirect=True)
def test_grid_partition_and_query_pooling_are_attributes(family):
    alias, src, x, ref, out = family
    model, _ = out["plugin"]
    attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
             for n in model.graph.node if n.op_type == "WindowAttention"]
    if alias == "maxvit_t":  # block and grid attention alternate; heads split head-first (permuted columns)
        # (the last stage's map is its window: block and grid both hold the whole map, a window partition)
        assert [a["partition"] for a in attrs] == [0, 1] * 3 + [0, 0]
    else:  # the stage-transition blocks pool their queries by 2x2
        assert sorted(a["q_stride"] for a in attrs) == [1, 1, 4, 4]


def test_fuzz_generators_of_these_families_build_what_they_say():
    """benchmarks/fuzz/windowed.py (run by `make fuzz`): each generator's configurations build, and every block
    they list has a kind the expectation table knows (the 200-case run is benchmarks/results/rewrite_fuzz.json)."""
    import sys
    from pathlib import Path

    repo = str(Path(__file__).resolve().parents[1])
    if repo not in sys.path:
        sys.path.insert(0, repo)
    from benchmarks.fuzz import families as F
    from benchmarks.fuzz import windowed as W

    for fam in W.GENERATORS:
        cfg = F.generate(11, 0, [fam])
        assert cfg["family"] == fam and cfg["exporter"] in W.EXPORTERS.get(fam, ("dynamo", "torchscript"))
        built = F.build(cfg)
        assert built.blocks and all(b["kind"] in F.EXPECT for b in built.blocks), (fam, built.blocks)
        assert F.generate(11, 0, [fam]) == cfg  # a case replays from its seed
