"""Multi-scale deformable attention plugin: contract, PyTorch reference, ORT face, Triton kernel, TensorRT face."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from vitdeploy.plugins.msda.reference import msda, msda_grid_sample
from vitdeploy.plugins.msda.spec import STOCK_SPEC, STOCK_V1_SPEC, VITDEPLOY_SPEC, spec_for

REPO = Path(__file__).resolve().parents[1]


def make_case(shapes, n=2, lq=7, m=3, d=5, p=4, seed=0, spread=(-0.3, 1.3)):
    """Random inputs; locations drawn from `spread`, so some fall outside [0, 1] (zero padding matters)."""
    g = torch.Generator().manual_seed(seed)
    s = sum(h * w for h, w in shapes)
    starts = np.concatenate([[0], np.cumsum([h * w for h, w in shapes])[:-1]])
    lo, hi = spread
    return (
        torch.randn(n, s, m, d, generator=g),
        torch.tensor(shapes, dtype=torch.int32),
        torch.tensor(starts, dtype=torch.int32),
        torch.rand(n, lq, m, len(shapes), p, 2, generator=g) * (hi - lo) + lo,
        torch.rand(n, lq, m, len(shapes), p, generator=g),
    )


SHAPES = [(8, 10), (4, 5), (2, 3), (1, 1)]


def transformers_msda(value, shapes, starts, loc, weights):
    from transformers.models.deformable_detr.modeling_deformable_detr import MultiScaleDeformableAttention

    shapes_list = [tuple(map(int, hw)) for hw in shapes.tolist()]
    out = MultiScaleDeformableAttention()(value, shapes.long(), shapes_list, starts.long(), loc, weights, 64)
    n, lq, m, d = value.shape[0], loc.shape[1], value.shape[2], value.shape[3]
    return out.reshape(n, lq, m, d)


# ----------------------------------------------------------------------------- contract

def test_stock_node_contract_matches_tensorrt_sources():
    attrs = STOCK_SPEC.node_attrs()
    assert STOCK_SPEC.name == "MultiscaleDeformableAttnPlugin_TRT"
    assert attrs == {"plugin_namespace": "", "plugin_version": "2"}  # parser defaults would be "" and "1"
    assert STOCK_SPEC.domain not in ("", "ai.onnx")  # onnx.checker rejects unknown ops in the default domain
    assert [t.kind for t in STOCK_SPEC.inputs] == ["float", "int32", "int32", "float", "float"]
    assert [t.name for t in STOCK_SPEC.inputs] == [t.name for t in VITDEPLOY_SPEC.inputs]
    assert VITDEPLOY_SPEC.node_attrs() == {"plugin_namespace": "vitdeploy", "plugin_version": "1"}
    # stock: version 1 unless the target TensorRT is known to be >= 10.11 (machine.stock_msda_version)
    assert spec_for("stock") is STOCK_V1_SPEC and spec_for("stock", "plugin", "2") is STOCK_SPEC
    assert spec_for("vitdeploy") is VITDEPLOY_SPEC
    # native mode (TensorRT without Python plugins, e.g. 10.3): the stock plugin's version 1, same IO
    v1 = spec_for("vitdeploy", "native")
    assert (v1.name, v1.node_attrs()["plugin_version"], v1.inputs) == (STOCK_SPEC.name, "1", STOCK_SPEC.inputs)


def test_unknown_impl_is_a_one_line_error():
    from vitdeploy.errors import VitdeployError

    with pytest.raises(VitdeployError, match="--msda-impl"):
        spec_for("cuda")


# ----------------------------------------------------------------------------- reference

@pytest.mark.parametrize("spread", [(0.0, 1.0), (-0.3, 1.3), (-3.0, 4.0)], ids=["inside", "edges", "far-outside"])
@pytest.mark.parametrize("p", [1, 4])
def test_reference_matches_transformers_grid_sample_path(spread, p):
    case = make_case(SHAPES, p=p, spread=spread, seed=p)
    want = transformers_msda(*case)
    got = msda(*case)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() < 1e-5


def test_reference_matches_on_non_square_levels_and_unordered_starts():
    """level_start_index is data: levels need not be stored in order."""
    value, shapes, starts, loc, w = make_case([(3, 7), (5, 2)], lq=4)
    # store level 1 first in memory
    l0 = value[:, :21]
    l1 = value[:, 21:]
    swapped = torch.cat([l1, l0], 1)
    got = msda(swapped, shapes, torch.tensor([10, 0], dtype=torch.int32), loc, w)
    assert torch.allclose(got, msda(value, shapes, starts, loc, w), atol=1e-6)


def test_reference_pixel_convention_hits_pixel_centres():
    """loc = (j + 0.5) / W samples pixel j exactly (align_corners=False); one pixel beyond the edge reads 0."""
    h, w = 3, 4
    value = torch.arange(h * w, dtype=torch.float32).view(1, h * w, 1, 1)
    loc = torch.tensor([[(2 + 0.5) / w, (1 + 0.5) / h], [(w + 0.5) / w, 0.5 / h], [-0.5 / w, 0.5 / h]])
    loc = loc.view(1, 3, 1, 1, 1, 2)
    out = msda(value, torch.tensor([[h, w]], dtype=torch.int32), torch.tensor([0], dtype=torch.int32), loc, torch.ones(1, 3, 1, 1, 1))
    assert out.flatten().tolist() == [1 * w + 2, 0.0, 0.0]


@pytest.mark.parametrize("spread", [(-0.3, 1.3), (-50.0, 50.0)], ids=["edges", "far-outside"])
def test_grid_sample_variant_equals_reference(spread):
    """The ORT face runs this formulation (faster on the CPU); it must agree with the explicit gathers."""
    case = make_case(SHAPES, seed=3, spread=spread)
    assert torch.allclose(msda_grid_sample(*case), msda(*case), atol=1e-5)
    with pytest.raises(ValueError, match="inconsistent"):
        msda_grid_sample(case[0][:, :, :2], *case[1:])


def test_reference_rejects_inconsistent_shapes():
    value, shapes, starts, loc, w = make_case(SHAPES)
    with pytest.raises(ValueError, match="inconsistent"):
        msda(value, shapes, starts, loc, w[:, :3])
    with pytest.raises(ValueError, match="levels"):
        msda(value, shapes[:3], starts[:3], loc, w)
    with pytest.raises(ValueError, match="does not fit"):
        msda(value[:, :50], shapes, starts, loc, w)


# ----------------------------------------------------------------------------- ORT face

def one_node_model(spec, float_type):
    n, s, m, d, lq, nl, p = 2, sum(h * w for h, w in SHAPES), 3, 5, 7, len(SHAPES), 4
    inputs = [
        helper.make_tensor_value_info("value", float_type, [n, s, m, d]),
        helper.make_tensor_value_info("spatial_shapes", TensorProto.INT32, [nl, 2]),
        helper.make_tensor_value_info("level_start_index", TensorProto.INT32, [nl]),
        helper.make_tensor_value_info("sampling_locations", float_type, [n, lq, m, nl, p, 2]),
        helper.make_tensor_value_info("attention_weights", float_type, [n, lq, m, nl, p]),
    ]
    node = helper.make_node(spec.name, [i.name for i in inputs], ["out"], domain=spec.domain, **spec.node_attrs())
    graph = helper.make_graph([node], "msda", inputs, [helper.make_tensor_value_info("out", float_type, [n, lq, m, d])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(spec.domain, 1)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("spec", [STOCK_SPEC, VITDEPLOY_SPEC], ids=["stock", "vitdeploy"])
@pytest.mark.parametrize("np_dtype,onnx_dtype,tol", [(np.float32, TensorProto.FLOAT, 1e-6), (np.float16, TensorProto.FLOAT16, 5e-3)])
def test_ort_face_runs_both_node_types(spec, np_dtype, onnx_dtype, tol):
    from vitdeploy.onnxrt import session

    case = make_case(SHAPES)
    sess = session(one_node_model(spec, onnx_dtype))
    feeds = {name: (t.numpy().astype(np_dtype) if t.is_floating_point() else t.numpy())
             for name, t in zip(["value", "spatial_shapes", "level_start_index", "sampling_locations", "attention_weights"], case)}
    (out,) = sess.run(None, feeds)
    assert out.dtype == np_dtype and out.shape == (2, 7, 3, 5)
    want = msda(*(torch.from_numpy(v.astype(np.float32)) if v.dtype != np.int32 else torch.from_numpy(v) for v in feeds.values()))
    np.testing.assert_allclose(out.astype(np.float32), want.numpy(), atol=tol, rtol=tol)


# ----------------------------------------------------------------------------- Triton kernel

KERNEL_CASES = [
    {"name": "fp32-detr-like", "shapes": SHAPES, "n": 2, "lq": 9, "m": 2, "d": 32, "p": 4, "dtype": "float32", "block_q": 16, "tol": 1e-5},
    {"name": "fp16-edges", "shapes": [(5, 3), (2, 2)], "n": 1, "lq": 20, "m": 3, "d": 20, "p": 2, "dtype": "float16", "block_q": 16, "tol": 3e-3},
    {"name": "fp32-far-outside", "shapes": [(4, 4)], "n": 1, "lq": 5, "m": 1, "d": 8, "p": 3, "dtype": "float32", "block_q": 16,
     "tol": 1e-6, "spread": [-50.0, 50.0]},
]

_CHILD = r"""
import json, sys
import torch
sys.path.insert(0, ".")
from tests.test_msda_plugin import make_case
from vitdeploy.plugins.msda.kernel import msda_triton
from vitdeploy.plugins.msda.reference import msda
res = {}
for c in json.loads(sys.argv[1]):
    dt = getattr(torch, c["dtype"])
    case = make_case(c["shapes"], n=c["n"], lq=c["lq"], m=c["m"], d=c["d"], p=c["p"], spread=tuple(c.get("spread", (-0.3, 1.3))))
    value, shapes, starts, loc, w = case
    if c["name"] == "fp32-far-outside":
        loc[0, 0, 0, 0, 0] = torch.tensor([1e9, -1e9])
    got = msda_triton(value.to(dt), shapes, starts, loc.to(dt), w.to(dt), block_q=c["block_q"])
    want = msda(value.to(dt).float(), shapes, starts, loc.to(dt).float(), w.to(dt).float())
    res[c["name"]] = {"err": (got.float() - want).abs().max().item(), "dtype": str(got.dtype), "shape": list(got.shape),
                      "want_shape": list(want.shape)}
print(json.dumps(res))
"""


@pytest.fixture(scope="module")
def kernel_results():
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(KERNEL_CASES)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", KERNEL_CASES, ids=[c["name"] for c in KERNEL_CASES])
def test_triton_kernel_matches_reference_on_interpreter(kernel_results, case):
    r = kernel_results[case["name"]]
    assert r["shape"] == r["want_shape"]
    assert r["dtype"] == f"torch.{case['dtype']}"
    assert r["err"] <= case["tol"], r


def test_launcher_refuses_mismatched_dtypes_and_cpu_without_interpreter():
    from vitdeploy.plugins.msda import kernel

    value, shapes, starts, loc, w = make_case(SHAPES)
    with pytest.raises(TypeError, match="share one dtype"):
        kernel.msda_triton(value, shapes, starts, loc.half(), w)
    if not kernel.interpreter_active():
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
            kernel.msda_triton(value, shapes, starts, loc, w)


@pytest.fixture(scope="module")
def ptx_sm90_fp16():
    from vitdeploy.plugins.msda import kernel

    if kernel.interpreter_active():
        pytest.skip("AOT compilation needs TRITON_INTERPRET unset")
    return kernel.ptx_for_tensorrt(90, "fp16", kernel.LaunchConfig(num_levels=4, num_points=4, head_dim=32))


@pytest.mark.parametrize("arch,dtype", [(87, "fp32"), (90, "fp16")])
def test_compiles_to_ptx_for_jetson_and_hopper(arch, dtype, ptx_sm90_fp16):
    from vitdeploy.plugins.ptx import entry_params
    from vitdeploy.plugins.msda import kernel

    if (arch, dtype) == (90, "fp16"):
        name, ptx, meta = ptx_sm90_fp16  # Deformable DETR R50's L=4, P=4, D=32
    else:
        name, ptx, meta = kernel.ptx_for_tensorrt(arch, dtype, kernel.LaunchConfig(num_levels=2, num_points=2, head_dim=16))
    target = next(line for line in ptx.splitlines() if line.startswith(".target"))
    assert target.startswith(f".target sm_{arch}")
    # exactly what TensorRT's AOT launcher passes: 5 input pointers, S/Lq/M, the output pointer
    assert entry_params(ptx, name) == [".u64"] * 5 + [".u32"] * 3 + [".u64"]
    assert meta.shared == 0
    assert ("ld.global" in ptx) and ("st.global" in ptx)


def test_stripped_ptx_assembles_with_ptxas(ptx_sm90_fp16):
    from vitdeploy.plugins.ptx import ptxas_path

    ptxas = ptxas_path()
    if ptxas is None:
        pytest.skip("Triton ships no ptxas here")
    _, ptx, _ = ptx_sm90_fp16
    proc = subprocess.run([ptxas, "-arch=sm_90a", "-o", os.devnull, "-"], input=ptx, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


# ----------------------------------------------------------------------------- TensorRT / GPU

def test_tensorrt_face_imports_without_tensorrt():
    """TensorRT is imported only inside register()/run_one_node(), so the module loads anywhere."""
    import importlib

    mod = importlib.import_module("vitdeploy.plugins.msda.trt")
    assert callable(mod.register) and mod.SPEC.plugin_id == "vitdeploy::MultiscaleDeformableAttention"


@pytest.mark.trt
@pytest.mark.gpu
@pytest.mark.parametrize("stock", [False, True], ids=["vitdeploy", "stock"])
def test_tensorrt_plugins_match_reference(stock):
    from vitdeploy.plugins.msda.trt import run_one_node

    case = make_case(SHAPES, d=32)
    got = run_one_node(*case, stock=stock).cpu()
    assert (got - msda(*case)).abs().max().item() < 1e-4


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float16, 1e-2)])
def test_triton_kernel_on_gpu_matches_reference(dtype, tol):
    from vitdeploy.plugins.msda.kernel import msda_triton

    value, shapes, starts, loc, w = make_case(SHAPES, n=2, lq=300, m=8, d=32)
    got = msda_triton(value.cuda().to(dtype), shapes.cuda(), starts.cuda(), loc.cuda().to(dtype), w.cuda().to(dtype))
    want = msda(value.to(dtype).float(), shapes, starts, loc.to(dtype).float(), w.to(dtype).float())
    assert (got.float().cpu() - want).abs().max().item() < tol


def test_benchmark_dry_run_checks_correctness_and_writes_json(tmp_path):
    out = tmp_path / "msda.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks/kernels/msda.py"), "--dry-run", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["dry_run"] is True and "interpreter" in res["environment"]["device"]
    assert {"torch", "triton", "git", "date_utc"} <= set(res["environment"])
    assert len(res["cases"]) == 2
    for case in res["cases"]:
        for impl in (case["impls"]["grid_sample"], case["impls"]["triton"]["default"]):
            assert impl["max_abs_err"] <= case["tolerance_max_abs"]
