"""Contract tests: vitdeploy's plugin nodes of real rewritten graphs, driven through TensorRT's real
Python plugin layer (`tensorrt.plugin` from tensorrt-cu13-bindings 11.4) the way TensorRT's ONNX parser
and builder drive it (`vitdeploy.plugins.contract`), FP16 and FP32, every tactic.

These are contract tests, not engine tests: only the compiled core of TensorRT is a stand-in
(`vitdeploy.plugins.trt_standin`), no engine is built, and what only libnvinfer or a GPU can show is
listed in docs/architecture.md ("What is proven where").

Graphs come from `vitdeploy.plugins.contract_graphs.GRAPHS` (add a GraphCase there to add a model or
a plugin). Each graph is exported and rewritten once per module, and every tactic runs at FP16 and
FP32. Every node runs for GatedPositionalAttention, MultiscaleDeformableAttention and
HaloAttention; Swin graphs have 7 WindowAttention nodes whose kernels take seconds each to compile, so there one node per kernel
variant runs (FP16: window, head_dim, shifted, padded; FP32: window, head_dim, since its IEEE dots
compile slowest): nodes sharing the key compile the same tiles, warps, parameter list and code
paths and differ only in constants (H, W, heads). benchmarks/trt_contract_sweep.py drives every node
at every precision for sm_90a, sm_87 and portable sm_80 (benchmarks/results/trt_contract_sweep.json).
"""
# No `from __future__ import annotations`: tensorrt.plugin reads real annotation objects.

import numpy as np
import pytest

from vitdeploy.plugins import contract, contract_graphs, ptx_target
from vitdeploy.plugins.ptx import SHARED_LIMIT, isa_text, parse

HOPPER = ptx_target.PtxTarget(90, ptx_target.pinned_isa(90))  # arch-specific sm_90a, the data-centre target
PORTABLE = ptx_target.for_engine("ampere_plus", None)  # --hardware-compat ampere_plus: sm_80, no 'a'


def _triton_compiles() -> None:
    from vitdeploy.plugins.window_attention.kernel import interpreter_active

    if interpreter_active():
        pytest.skip("Triton was imported with TRITON_INTERPRET=1 in this process: AOT compilation is off")


@pytest.fixture(scope="module")
def layer():
    with contract.plugin_layer() as lay:
        yield lay


@pytest.fixture(scope="module", params=list(contract_graphs.GRAPHS))
def graph(request, tmp_path_factory):
    case = contract_graphs.GRAPHS[request.param]
    model, nodes = contract_graphs.export_rewritten(case, tmp_path_factory.mktemp(case.name))
    del model
    return case, nodes


def _assert_contract(layer, node, precision, target, ref_shapes=None, only=None):
    with ptx_target.compile_for(target):
        r = contract.drive(layer, node, precision, only=only)
    bad = contract.problems(r, layer, max_isa=target.isa, portable=target.portable)
    assert not bad, f"{node.graph} {node.key} {precision}:\n  " + "\n  ".join(bad)
    trt = layer.trt
    want_float = trt.DataType.HALF if precision == "fp16" else trt.DataType.FLOAT
    assert r.output_types == [want_float] * len(node.outputs)
    assert r.tactics and [la.tactic for la in r.launches] == r.tactics[:only]  # every tactic TensorRT would time
    # loadFields handed over every attribute of the spec (in the creator's order); QDP read them back
    from importlib import import_module

    from vitdeploy.plugins import TRT_FACES

    spec = import_module(TRT_FACES[node.op]).SPEC
    assert [f[0] for f in r.fields] == list(spec.attrs) and not r.skipped_fields
    def norm(v):  # INT/FLOAT -> int/float (FLOAT32 on the way); INTS/FLOATS -> the INT32/FLOAT32 array QDP made
        vals = np.asarray(v).reshape(-1).tolist() if isinstance(v, (list, tuple, np.ndarray)) else v
        if isinstance(vals, list):
            return tuple(float(np.float32(x)) if isinstance(x, float) else x for x in vals)
        return float(np.float32(vals)) if isinstance(vals, float) else vals

    got = {k: norm(v) for k, v in r.plugin.attrs.items()}
    assert got == {k: norm(v) for k, v in spec.read_attrs(node.attr_values()).items()}
    if ref_shapes is not None:
        for b, shapes in ref_shapes.items():
            assert r.output_dims(b) == shapes, f"get_output_shapes at batch {b}: {r.output_dims(b)} != ONNX {shapes}"
    for la in r.launches:
        info = parse(la.ptx, la.kernel_name)
        assert info.target == target.name and info.isa <= target.isa
        assert la.shared.get_constant_value() + info.static_shared <= SHARED_LIMIT
    return r


def test_graph_has_the_full_models_plugin_nodes(graph):
    """The reduced export has exactly the distinct plugin nodes of the full-size model."""
    case, nodes = graph
    assert nodes, f"{case.name}: no vitdeploy plugin node after the rewrite"
    assert {case.signature(n) for n in nodes} == case.real_nodes()


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_every_tactic_of_every_node(graph, layer, precision):
    """Every tactic of the graph's plugin nodes (one node per kernel variant where the case samples; see the
    module docstring), with get_output_shapes checked against the ONNX Runtime face."""
    _triton_compiles()
    case, nodes = graph
    chosen = contract_graphs.nodes_for(case, nodes, precision, _n_tactics)
    assert chosen and (precision in case.sample or len(chosen) == len(nodes))
    for node in chosen:
        ref = {3: contract.reference_output_shapes(node, 3)}  # batch 3: the symbolic batch really flows
        r = _assert_contract(layer, node, precision, HOPPER, ref)
        if node.op == "WindowAttention" and max(node.attr_values()["window_size"]) == 12 and precision == "fp32":
            # finding 7: a whole 12x12 window in one FP32 program needed 74,752 B
            assert max(la.shared.get_constant_value() for la in r.launches) <= SHARED_LIMIT


def test_portable_ptx_for_hardware_compatible_engines(graph, layer):
    """--hardware-compat ampere_plus: plain sm_80 PTX at ISA 7.8, which every Ampere-or-later GPU JITs
    (one tactic: the target and ISA do not depend on it)."""
    _triton_compiles()
    _, nodes = graph
    r = _assert_contract(layer, nodes[0], "fp16", PORTABLE, only=1)
    assert {parse(la.ptx, la.kernel_name).target for la in r.launches} == {"sm_80"}
    # and the check really looks: Hopper PTX is arch-specific, so it fails the portability rule
    with ptx_target.compile_for(HOPPER):
        hop = contract.drive(layer, nodes[0], "fp16", only=1)
    assert any("architecture-specific" in p for p in contract.problems(hop, layer, max_isa=HOPPER.isa, portable=True))


def _n_tactics(node) -> int:
    from importlib import import_module

    from vitdeploy.plugins import TRT_FACES

    face = import_module(TRT_FACES[node.op])
    if hasattr(face, "tactics_for"):
        return len(face.tactics_for(node.attr_values()["num_heads"]))
    return 0


# --- the harness itself --------------------------------------------------------------------------


def _trt_names(paths) -> set[str]:
    """Names accessed as `trt.<name>` in the code (not the docstrings) of these files."""
    import ast
    import warnings

    names = set()
    for p in paths:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # invalid escapes in TensorRT's docstrings
            tree = ast.parse(p.read_text())
        for n in ast.walk(tree):
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "trt":
                names.add(n.attr)
    return names


def test_stand_in_supplies_only_names_the_plugin_layer_or_a_face_uses():
    """The stand-in is the smallest core: every compiled-core name TensorRT's plugin layer uses exists,
    and each public name of the stand-in is used by that layer or a vitdeploy TensorRT face."""
    from pathlib import Path

    from vitdeploy.plugins import trt_standin

    by_layer = _trt_names(contract.plugin_layer_dir().glob("*.py"))
    by_faces = _trt_names(Path(trt_standin.__file__).parent.glob("*/trt.py"))
    mod = trt_standin.module()
    missing = {n for n in by_layer if not hasattr(mod, n)}
    assert not missing, f"the plugin layer uses trt.{sorted(missing)}, which the stand-in lacks"
    provided = {k for k in vars(mod) if not k.startswith("_")}
    # reached through objects, not as trt.X: the registry accessor, the builder handed to
    # get_output_shapes/get_launch_params, and the logger's severity enum
    indirect = {"get_plugin_registry", "IExprBuilder", "ILogger"}
    unused = provided - by_layer - by_faces - indirect
    assert not unused, f"stand-in names nothing uses: {sorted(unused)}"


def test_a_failed_registration_is_reraised_not_hidden(layer):
    """Finding 13: @trtp.register defines the op at once; a later decorator failing (here QDP's own
    "No return annotation" check, finding 2) must come back on retry, not "already has a definition"."""
    from typing import Tuple

    from vitdeploy.plugins.spec import PluginSpec, TensorSpec

    from vitdeploy.plugins.trt import register_once

    trtp = layer.trtp
    spec = PluginSpec("ContractProbe", (TensorSpec("x"),), (TensorSpec("y"),), {"k": int})

    def define():
        @trtp.register(spec.plugin_id)
        def _desc(x: trtp.TensorDesc, k: int) -> trtp.TensorDesc:
            return x.like()

        @trtp.aot_impl(spec.plugin_id)
        def _aot(x: trtp.TensorDesc, k: int, outputs: Tuple[trtp.TensorDesc], tactic: int):  # no return annotation
            raise AssertionError("never called")

    with pytest.raises(ValueError, match="No return annotation found for aot_impl"):
        register_once(spec, define)
    with pytest.raises(RuntimeError, match="failed earlier.*No return annotation"):
        register_once(spec, define)


def test_the_harness_puts_back_whatever_tensorrt_was_imported():
    import sys

    before = sys.modules.get("tensorrt")
    with contract.plugin_layer() as lay:
        assert sys.modules["tensorrt"] is lay.trt and lay.trt is not before
        assert sys.modules["tensorrt.plugin"] is lay.trtp
        assert lay.trtp.__file__.startswith(str(contract.plugin_layer_dir()))  # the wheel's real sources
    assert sys.modules.get("tensorrt") is before


def test_isa_text():
    assert isa_text(HOPPER.isa) == "8.0" and HOPPER.name == "sm_90a" and PORTABLE.name == "sm_80"
