"""Contract tests: vitdeploy's plugin nodes of real rewritten graphs, driven through TensorRT's real
Python plugin layer (`tensorrt.plugin` from tensorrt-cu13-bindings 11.4) the way TensorRT's ONNX parser
and builder drive it (`vitdeploy.testing.contract`), FP16 and FP32, every tactic.

These are contract tests, not engine tests: only the compiled core of TensorRT is a stand-in
(`vitdeploy.testing.trt_standin`), no engine is built, and what only libnvinfer or a GPU can show is
listed in docs/architecture.md ("What is proven where").

Graphs come from `vitdeploy.testing.contract_graphs.GRAPHS` (add a GraphCase there to add a model or
a plugin). Each graph is exported and rewritten once per module, and every tactic runs at FP16 and
FP32. Every node runs for GatedPositionalAttention, MultiscaleDeformableAttention and
HaloAttention; Swin graphs have 7 WindowAttention nodes whose kernels take seconds each to compile, so there one node per kernel
variant runs (FP16: window, head_dim, shifted, padded; FP32: window, head_dim, since its IEEE dots
compile slowest): nodes sharing the key compile the same tiles, warps, parameter list and code
paths and differ only in constants (H, W, heads). benchmarks/trt_contract_sweep.py drives every node
at every precision for sm_90a, sm_87 and portable sm_80 (benchmarks/results/trt_contract_sweep.json).

The launch level (`vitdeploy.testing.aot_emulator`, the end of this file): the same nodes (every node;
one per kernel variant in the Swin graphs, standing for the others with its key), reduced where the
interpreter would take minutes, FP16 and FP32, every tactic: the kernel `aot_impl` returned run under
Triton's interpreter with exactly the grid, scalars and argument order it returned, against the PyTorch
reference; one interpreter child per plugin. All of it is `pytest -m contract`; ids carry the plugin's
folder (`-k msda`).
"""
# No `from __future__ import annotations`: tensorrt.plugin reads real annotation objects.

import hashlib
import resource
import time

import numpy as np
import pytest

from vitdeploy.plugins import ptx_target
from vitdeploy.plugins.ptx import SHARED_LIMIT, isa_text, parse
from vitdeploy.testing import aot_emulator, contract, contract_graphs

pytestmark = pytest.mark.contract
GRAPHS = contract_graphs.GRAPHS

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


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """name -> the rewritten graph's distinct plugin nodes, each graph exported once per module."""
    done = {}

    def get(name):
        if name not in done:
            case = GRAPHS[name]
            model, done[name] = contract_graphs.export_rewritten(case, tmp_path_factory.mktemp(case.name))
            del model
        return done[name]

    get.done = lambda name: name in done
    return get


@pytest.fixture(scope="module", params=list(GRAPHS), ids=[f"{c.plugin}-{n}" for n, c in GRAPHS.items()])
def graph(request, exports):
    return GRAPHS[request.param], exports(request.param)


def _assert_contract(layer, node, precision, target, ref_shapes=None, only=None):
    with ptx_target.compile_for(target):
        r = contract.drive(layer, node, precision, only=only)
    bad = contract.problems(r, layer, max_isa=target.isa, portable=target.portable)
    assert not bad, f"{node.graph} {node.key} {precision}:\n  " + "\n  ".join(bad)
    trt = layer.trt
    want_float = trt.DataType.HALF if precision == "fp16" else trt.DataType.FLOAT
    assert r.output_types == [want_float] * len(node.outputs)
    # the tactics TensorRT times for this format combination are the face's own list for its precision
    # (a combination carrying the other type's tactics, or none, fails here), each taken through aot_impl
    assert r.tactics == _face_tactics(node, precision), f"{node.key} {precision}: tactics {r.tactics}"
    assert [la.tactic for la in r.launches] == r.tactics[:only]
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


def _face_tactics(node, precision: str) -> list:
    """The tactics each face documents for a node at a precision (its tables, not what QDP returned)."""
    from importlib import import_module

    from vitdeploy.plugins import TRT_FACES

    face = import_module(TRT_FACES[node.op])
    if node.op == "WindowAttention":
        return face.tactics_for(node.attr_values()["num_heads"])
    if node.op == "GatedPositionalAttention":
        from vitdeploy.plugins.gated_positional_attention.kernel import CONFIGS

        return list(range(1, len(CONFIGS[precision]) + 1))
    if node.op == "MultiscaleDeformableAttention":
        return list(face.BLOCK_Q_TACTICS)
    if node.op == "HaloAttention":
        return face.tactics(precision)
    raise KeyError(node.op)


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

    from vitdeploy import plugins
    from vitdeploy.testing import trt_standin

    by_layer = _trt_names(contract.plugin_layer_dir().glob("*.py"))
    by_faces = _trt_names(Path(plugins.__file__).parent.glob("*/trt.py"))
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


# --- the launch, emulated on Triton's interpreter (vitdeploy.testing.aot_emulator) -------------------

PLUGINS = sorted({c.plugin for c in GRAPHS.values()})
EMULATED = [(p, prec) for p in PLUGINS for prec in ("fp16", "fp32")]


@pytest.fixture(scope="module")
def emulation(layer, exports):
    """plugin -> (outcomes of its jobs and mutants, its real nodes): the plugin's graphs' nodes planned
    through the plugin layer and run on the interpreter. One child runs the plugin asked for together
    with every other plugin whose graphs are already exported (the whole file: one child in all)."""
    runs = {}

    def selections(plugin):
        nodes, chosen = [], []
        for name, case in GRAPHS.items():
            if case.plugin != plugin:
                continue
            graph_nodes = exports(name)
            nodes += graph_nodes
            for prec in ("fp16", "fp32"):  # the nodes the contract tests drive, each standing for its key's
                key = case.sample.get(prec)
                for node in contract_graphs.nodes_for(case, graph_nodes, prec, _n_tactics):
                    same = [n for n in graph_nodes if n is node or (key is not None and key(n) == key(node))]
                    chosen.append((prec, node, [f"{n.graph}: {n.key}" for n in same]))
        return nodes, chosen

    def get(plugin):
        if plugin not in runs:
            _triton_compiles()
            now = [plugin] + [p for p in PLUGINS if p != plugin and p not in runs
                              and all(exports.done(n) for n, c in GRAPHS.items() if c.plugin == p)]
            started, cpu = time.perf_counter(), time.process_time()
            child0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            jobs, ids, nodes = [], {}, {}
            for p in now:
                nodes[p], chosen = selections(p)
                mine = aot_emulator.plan(layer, chosen, target=HOPPER, first_id=len(jobs))
                mine += aot_emulator.mutants(mine, len(jobs) + len(mine))
                ids[p] = {j.id for j in mine}
                jobs += mine
            outcomes = aot_emulator.start(jobs).wait()
            child1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            print(f"\naot launch emulation of {', '.join(now)}: {len(jobs)} launches (mutants included), "
                  f"{time.perf_counter() - started:.1f} s wall, {time.process_time() - cpu:.1f} s CPU here, "
                  f"{(child1.ru_utime + child1.ru_stime) - (child0.ru_utime + child0.ru_stime):.1f} s CPU in children")
            for p in now:
                runs[p] = ([o for o in outcomes if o.job.id in ids[p]], nodes[p])
        return runs[plugin]

    return get


@pytest.mark.parametrize("plugin,precision", EMULATED, ids=[f"{p}-{prec}" for p, prec in EMULATED])
def test_aot_launch_computes_the_reference(emulation, layer, plugin, precision):
    """Every node of the plugin's graphs (Swin: one per kernel variant, as above), every tactic: the kernel
    aot_impl returned, run with its grid, scalars and TensorRT's argument order on the interpreter, equals
    the PyTorch reference."""
    outcomes, nodes = emulation(plugin)
    mine = [o for o in outcomes if not o.job.expect and o.job.precision == precision]
    assert mine, f"{plugin} {precision}: nothing emulated"
    bad = [o.message() for o in mine if not o.ok]
    assert not bad, "\n".join(bad) + f"\n({len(bad)} of {len(mine)} launches wrong)"
    # every real node is stood for, and every emulated node ran every tactic its face lists
    covered = {g for o in mine for g in o.job.graphs}
    missing = {f"{n.graph}: {n.key}" for n in nodes} - covered
    assert not missing, f"real nodes not emulated: {sorted(missing)}"
    by_node = {}
    for o in mine:
        by_node.setdefault(o.job.node.key, (o.job.node, []))[1].append(o.job.tactic)
    for node, tactics in by_node.values():
        assert tactics == _face_tactics(node, precision), (node.key, tactics)
    assert {o.job.batch for o in mine} == set(aot_emulator.BATCHES)
    if plugin in ("gated_positional_attention", "msda"):
        # fewer tokens / queries / heads are runtime values for these kernels: the emulated PTX is the real node's
        real = set()
        with ptx_target.compile_for(HOPPER):
            for n in nodes:
                real |= {hashlib.sha256(la.ptx.encode()).hexdigest()[:16] for la in contract.drive(layer, n, precision).launches}
        assert {o.job.ptx_sha for o in mine} == real


@pytest.mark.parametrize("plugin", PLUGINS)
def test_the_emulator_names_each_launch_mistake(emulation, plugin):
    """One job per plugin replayed with each kind of mistake issue 21 planted (grid one block short, grid
    without the batch, input pointers swapped, extra scalars swapped, the other precision's kernel): each
    fails, and its first line after the launch names the parameter."""
    outcomes, _ = emulation(plugin)
    mutants = [o for o in outcomes if o.job.expect]
    kinds = {o.job.note for o in mutants}
    assert {"grid without the batch", "the other precision's kernel"} <= kinds and any("short" in k for k in kinds), kinds
    assert any("inputs" in k for k in kinds)
    if plugin == "msda":  # the one plugin with more than one extra scalar (S, Lq, M)
        assert any("scalars" in k for k in kinds)
    for o in mutants:
        assert not o.ok, f"{o.job.note}: the emulator did not notice\n{o.message()}"
        plugin_and_shapes, parameter = o.message().splitlines()[0].split("): ", 1)
        assert plugin_and_shapes.startswith(plugin) and o.job.node.op in plugin_and_shapes, o.message()
        assert parameter.startswith(o.job.expect), f"{o.job.note}:\n{o.message()}"
