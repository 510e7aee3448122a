"""The `halo` rewrite pass on timm's dynamo exports: every HaloAttn found, measured and replaced, numbers unchanged.

Single HaloAttn modules (stride 1 and 2, avg-down, scale_pos_embed, dim_head, 1 to 6 blocks,
non-square, static and dynamic batch) keep most exports to seconds; halonet26t runs through
`build` once; halonet50ts is the `slow` case. Every alias at static and dynamic batch, both
modes: benchmarks/halo_rewrite.py.
"""
from __future__ import annotations

import collections
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
import torch
from timm.layers.halo_attn import HaloAttn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.halo_rewrite import bytes_written  # noqa: E402  (the figure the benchmark records)
from vitdeploy.deploy.export import BatchSpec, export_onnx  # noqa: E402
from vitdeploy.deploy.rewrite.driver import run_passes  # noqa: E402
from vitdeploy.deploy.rewrite.halo import Geometry, neighbourhood_index  # noqa: E402
from vitdeploy.models import build_model, get_info  # noqa: E402
from vitdeploy.onnxrt import session  # noqa: E402
from vitdeploy.plugins.halo_attention.reference import relative_index  # noqa: E402
from vitdeploy.plugins.halo_attention.spec import SPEC  # noqa: E402

# id: (HaloAttn kwargs, H, W)
MODULES = {
    "stride1-4blocks": (dict(dim=32, dim_out=32, num_heads=2, block_size=4, halo_size=1), 8, 8),
    "stride2-halo3": (dict(dim=32, dim_out=64, num_heads=2, block_size=8, halo_size=3, stride=2), 16, 16),
    "avgdown-scalepos": (dict(dim=32, dim_out=32, num_heads=2, block_size=4, halo_size=2, stride=2, avg_down=True,
                              scale_pos_embed=True), 8, 8),
    "dimhead-1block": (dict(dim=32, dim_out=64, num_heads=4, dim_head=8, block_size=8, halo_size=2), 8, 8),
    "nonsquare-6blocks": (dict(dim=16, dim_out=32, num_heads=2, block_size=4, halo_size=2, scale_pos_embed=True), 8, 12),
}


class _Wrap(torch.nn.Module):
    def __init__(self, attn):
        super().__init__()
        self.attn = attn

    def forward(self, x):
        return self.attn(x)


def _module(case: str):
    kw, h, w = MODULES[case]
    torch.manual_seed(len(case))
    m = HaloAttn(**kw).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.5)
    return _Wrap(m).eval(), kw["dim"], h, w


def _export(model, shape, path, batch: BatchSpec):
    export_onnx(model, torch.randn(batch.opt, *shape), path, batch=batch, exporter="dynamo", output_names=("out",))
    return onnx.load(str(path))


def _rewrite(m, mode):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no candidate may be refused
        out, rep = run_passes(m, ["halo"], mode)
    return out, rep["passes"][0], rep


def _ops(m) -> collections.Counter:
    return collections.Counter(n.op_type for n in m.graph.node)


def _torch_vs_onnx(model, m, x: np.ndarray) -> tuple[float, float]:
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    sess = session(m)
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    return float(np.abs(got - ref).max()), float(np.abs(ref).max())


@pytest.fixture(scope="module")
def module_exports(tmp_path_factory):
    d = tmp_path_factory.mktemp("halo")
    out = {}
    for case in MODULES:
        model, c, h, w = _module(case)
        out[case] = (model, (c, h, w), _export(model, (c, h, w), d / f"{case}.onnx", BatchSpec.static(2)))
    return out


@pytest.mark.parametrize("mode", ["plugin", "native"])
@pytest.mark.parametrize("case", list(MODULES))
def test_every_variant_is_measured_and_replaced(module_exports, case, mode):
    model, shape, src = module_exports[case]
    attn = model.attn
    assert {"Pad", "Gather", "Expand", "Softmax"} <= set(_ops(src))  # the exporter's unfold and rel-logit shuffles
    out, rep, full = _rewrite(src, mode)
    assert (rep["found"], rep["replaced"]) == (1, 1)
    assert full["whole_graph"]["passed"]
    ops = _ops(out)
    assert ops["Conv"] == 2 and ops["AveragePool"] == int(type(attn.pool).__name__ == "AvgPool2d")
    if mode == "plugin":
        assert ops["HaloAttention"] == 1 and sum(ops.values()) == 3 + ops["AveragePool"]
        node = next(n for n in out.graph.node if n.op_type == SPEC.name)
        got = SPEC.read_attrs({a.name: onnx.helper.get_attribute_value(a) for a in node.attribute})
        # measured from data movement and numbers, equal to what timm's module holds
        want = dict(block_size=attn.block_size, halo_size=attn.halo_size, num_heads=attn.num_heads,
                    dim_head_qk=attn.dim_head_qk, dim_head_v=attn.dim_head_v, scale_pos_embed=int(attn.scale_pos_embed),
                    block_stride=attn.block_stride)
        assert {k: got[k] for k in want} == want
        assert got["scale"] == pytest.approx(attn.scale, rel=1e-6)
        tables = {i.name: onnx.numpy_helper.to_array(i) for i in out.graph.initializer}
        assert np.array_equal(tables[node.input[2]], attn.pos_embed.height_rel.detach().numpy())
        assert np.array_equal(tables[node.input[3]], attn.pos_embed.width_rel.detach().numpy())
    else:
        assert ops["HaloAttention"] == 0 and ops["Softmax"] == 1
        assert all(n.domain in ("", "ai.onnx") for n in out.graph.node)
        assert not {"Expand", "Slice", "Split", "Shape"} & set(ops), ops  # neither the unfold nor the rel shuffles
        assert ops["Pad"] == 1 and ops["Gather"] == 4  # one zero, k and v gathered once, two rel-row gathers
    x = np.random.default_rng(1).standard_normal((2, *shape)).astype(np.float32)
    err, ref = _torch_vs_onnx(model, out, x)
    assert err <= 1e-4, (err, ref)


def test_native_mode_moves_fewer_bytes_than_the_exporter(module_exports):
    """halo 3 on 8x8 blocks: the exporter's pad/unfold/transpose/split chain and the expanded rel logits
    write several copies of the 3x larger neighbourhoods; native writes each neighbourhood once."""
    _, _, src = module_exports["stride2-halo3"]
    out, _, _ = _rewrite(src, "native")
    before, after = bytes_written(src), bytes_written(out)
    assert after < 0.6 * before, (before, after)


@pytest.mark.parametrize("mode", ["plugin", "native"])
def test_dynamic_batch(tmp_path, mode):
    model, c, h, w = _module("stride2-halo3")
    src = _export(model, (c, h, w), tmp_path / "dyn.onnx", BatchSpec(1, 2, 4))
    assert src.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    out, rep, _ = _rewrite(src, mode)
    assert (rep["found"], rep["replaced"]) == (1, 1)
    for b in (1, 3):
        x = np.random.default_rng(b).standard_normal((b, c, h, w)).astype(np.float32)
        assert _torch_vs_onnx(model, out, x)[0] <= 1e-4


def test_geometry_codes_are_timms_unfold():
    """The expected data movement the pass compares against is timm's pad + unfold, checked on torch."""
    geo = Geometry(batch=2, height=8, width=12, block=4, halo=2, stride=1, heads=2, dqk=3, dv=5)
    kv = torch.arange(1, 2 * 16 * 96 + 1, dtype=torch.float64).reshape(2, 16, 8, 12)
    win = geo.win
    unf = torch.nn.functional.pad(kv, [2, 2, 2, 2]).unfold(2, win, 4).unfold(3, win, 4)
    unf = unf.reshape(4, 8, 6, win * win).permute(0, 2, 3, 1)  # [B*heads, blocks, K, dqk+dv]
    codes = geo.codes()
    assert np.array_equal(codes["k_t"], unf[..., :3].transpose(-1, -2).numpy().astype(np.int64))
    assert np.array_equal(codes["v"], unf[..., 3:].numpy().astype(np.int64))
    pix = neighbourhood_index(8, 12, 4, 2)
    assert pix.shape == (6, 64) and (pix < 0).sum() > 0 and pix.max() == 95
    assert relative_index(2, 8).tolist() == [[7, 8, 9, 10, 11, 12, 13, 14], [6, 7, 8, 9, 10, 11, 12, 13]]


def test_tampered_neighbourhood_is_not_rewritten(module_exports):
    """Shift the exporter's unfold gather by one pixel: not timm's neighbourhood, so the pass says so and keeps it."""
    _, _, src = module_exports["stride1-4blocks"]
    g = gs.import_onnx(onnx.ModelProto.FromString(src.SerializeToString()))
    gathers = [n for n in g.nodes if n.op == "Gather" and isinstance(n.inputs[1], gs.Constant)]
    assert gathers
    idx = gathers[0].inputs[1]
    idx.values = np.maximum(idx.values - 1, 0).astype(idx.values.dtype)
    tampered = gs.export_onnx(g)
    out, rep = run_passes(tampered, ["halo"], "plugin")
    p = rep["passes"][0]
    assert (p["found"], p["replaced"]) == (0, 0)
    assert any("neighbourhoods are not timm's" in n for n in p["notes"]), p["notes"]
    assert _ops(out) == _ops(tampered)


def test_global_attention_is_not_halo(tmp_path):
    class Mhsa(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = torch.nn.Linear(32, 96)

        def forward(self, x):
            q, k, v = self.qkv(x).reshape(x.shape[0], -1, 3, 2, 16).permute(2, 0, 3, 1, 4)
            a = (q @ k.transpose(-1, -2) * 0.25).softmax(-1)
            return (a @ v).transpose(1, 2).reshape(x.shape[0], -1, 32)

    src = _export(Mhsa().eval(), (49, 32), tmp_path / "mhsa.onnx", BatchSpec.static(1))
    out, rep = run_passes(src, ["halo"], "plugin")
    assert rep["passes"][0]["found"] == 0 and len(out.graph.node) == len(src.graph.node)


# ----------------------------------------------------------------------------- real HaloNets


def _halonet(alias: str):
    """The random-weight model `vitdeploy export/build` exports (same seed, same weights)."""
    torch.manual_seed(0)
    return build_model(get_info(alias))


def _images(batch: int, seed: int = 0) -> np.ndarray:
    from vitdeploy.parity import random_images

    return random_images(batch, (256, 256), seed=seed)


@pytest.fixture(scope="module")
def halonet26t_build(tmp_path_factory):
    """`vitdeploy build --model halonet26t --fp16` as the CLI runs it (the engine step is skipped without TensorRT)."""
    from vitdeploy.pipeline import BuildOptions, run_build

    return run_build(BuildOptions(out_dir=tmp_path_factory.mktemp("halonet26t") / "build", alias="halonet26t", fp16=True))


def test_halonet26t_build_runs_to_the_engine_step(halonet26t_build):
    res = halonet26t_build
    m = res.manifest
    (rep,) = m["rewrite"]["passes"]
    assert rep["pass"] == "halo" and (rep["found"], rep["replaced"]) == (3, 3)
    assert m["rewrite"]["whole_graph"]["passed"]
    assert [(p["op"], p["count"], p["namespace"], p["version"]) for p in m["plugins"]] == [("HaloAttention", 3, "vitdeploy", "1")]
    assert m["precision"]["applied"] == "fp16" and m["export"]["exporter"] == "dynamo"
    assert m["precision"]["fp16"]["plugins_fp16"] == 3 and m["precision"]["fp16"]["fp16_ops"]["HaloAttention"] == 3
    assert m["preprocessing"]["input_size"] == [3, 256, 256] and m["preprocessing"]["crop_pct"] == 0.95  # timm data config
    assert res.engine is None and "TensorRT" in res.skipped_reason
    final = onnx.load(str(res.final_onnx))
    halo = [n for n in final.graph.node if n.op_type == "HaloAttention"]
    assert len(halo) == 3 and not any(n.op_type == "Softmax" for n in final.graph.node)
    declared = {vi.name: vi.type.tensor_type.elem_type for vi in final.graph.value_info}
    assert [declared.get(n.output[0]) for n in halo] == [onnx.TensorProto.FLOAT16] * 3  # typed FP16, not left untyped
    assert m["accuracy"]["finite"] and m["accuracy"]["cosine_min"] > 0.999  # FP16 graph vs FP32 export (random weights)
    # an --onnx build of an unknown graph runs every pass: the others must not claim HaloNet's attention
    _, others = run_passes(onnx.load(str(res.out_dir / "model.onnx")), ["swin", "gpsa", "msda"], "plugin")
    assert [(p["pass"], p["found"]) for p in others["passes"]] == [("swin", 0), ("gpsa", 0), ("msda", 0)]


@pytest.mark.parametrize("mode", ["plugin", "native"])
def test_halonet26t_rewritten_graph_matches_pytorch(halonet26t_build, mode):
    """plugin: the FP32 graph the build rewrote; native: the exported graph rewritten plugin-free here."""
    if mode == "plugin":
        out = onnx.load(str(halonet26t_build.out_dir / "model.rewritten.onnx"))
        names = [c["name"] for c in halonet26t_build.manifest["rewrite"]["passes"][0]["candidates"]]
    else:
        out, rep, _ = _rewrite(onnx.load(str(halonet26t_build.out_dir / "model.onnx")), mode)
        assert (rep["found"], rep["replaced"]) == (3, 3)
        names = [c["name"] for c in rep["candidates"]]
    assert names == ["HaloAttn 1 (16x16, block 8, halo 2, stride 1, 8x32/32)",
                     "HaloAttn 2 (16x16, block 8, halo 2, stride 2, 8x64/64)",
                     "HaloAttn 3 (8x8, block 8, halo 2, stride 1, 8x64/64)"]
    err, ref = _torch_vs_onnx(_halonet("halonet26t"), out, _images(1, seed=5))  # the build exports batch 1
    assert err <= 1e-4 and err <= 1e-4 * ref, (err, ref)


@pytest.mark.slow
@pytest.mark.parametrize("alias,blocks,dynamic", [("halonet50ts", 5, False)])
def test_halonets_every_halo_attn_replaced(tmp_path, alias, blocks, dynamic):
    """halonet50ts: five HaloAttn, a 4-head 32x32 stage. sehalonet33ts, eca_halonext26ts and the dynamic-batch
    exports of all four aliases are recorded by benchmarks/halo_rewrite.py (benchmarks/results/halo_rewrite.json)."""
    model = _halonet(alias)
    batch = BatchSpec(1, 2, 4) if dynamic else BatchSpec.static(1)
    path = tmp_path / f"{alias}.onnx"
    export_onnx(model, torch.from_numpy(_images(batch.opt)), path, batch=batch, exporter="dynamo")
    src = onnx.load(str(path))
    out, rep, full = _rewrite(src, "plugin")
    assert (rep["found"], rep["replaced"]) == (blocks, blocks)
    assert full["whole_graph"]["passed"] and _ops(out)["HaloAttention"] == blocks and _ops(out)["Softmax"] == 0
    for b in ((1, 3) if dynamic else (1,)):
        err, ref = _torch_vs_onnx(model, out, _images(b, seed=b))
        assert err <= 1e-4 and err <= 1e-4 * ref, (err, ref)  # random-weight logits can be small: relative too


def test_family_refuses_torchscript_and_sizes_that_do_not_tile(cli_run, tmp_path):
    res = cli_run("export", "--model", "halonet26t", "--exporter", "torchscript", "-o", str(tmp_path / "a"))
    assert res.exit_code == 2 and "exports with the dynamo exporter only" in res.output and "unfold" in res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "a").exists()
    res = cli_run("build", "--model", "sehalonet33ts", "--exporter", "torchscript", "-o", str(tmp_path / "b"))
    assert res.exit_code == 2 and "--exporter dynamo" in res.output and not (tmp_path / "b").exists()
    res = cli_run("export", "--model", "halonet50ts", "--img-size", "320", "-o", str(tmp_path / "c"))
    assert res.exit_code == 2 and "multiple of 256" in res.output and "try --img-size 256" in res.output
    info = get_info("eca_halonext26ts")
    assert info.passes == ("halo",) and info.input_size == (256, 256) and info.family == "halonet"
