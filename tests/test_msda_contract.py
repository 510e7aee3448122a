"""Contract tests (not engine tests) of vitdeploy's MultiscaleDeformableAttention with its issue-25 attributes:
D-FINE-S's and RT-DETR v2's full-size decoder nodes driven through TensorRT's real Python plugin layer over the
stand-in core (`vitdeploy.testing.contract`, as tests/test_trt_contract.py does for the Deformable DETR graph):
the INTS `num_points` and string `method` fields as TensorRT's ONNX parser hands them over, output shapes equal
to the ONNX Runtime face's, and the AOT kernel's PTX ABI; then the launch level (`vitdeploy.testing.aot_emulator`):
the kernel whose compile produced that PTX, run on Triton's interpreter with exactly the grid, scalars and
argument order `aot_impl` returned, against the PyTorch reference. One tactic per node and precision keeps it
to one AOT compile each (the tactics differ only in the query block, which the Deformable DETR graph's
emulation in tests/test_trt_contract.py runs for every tactic)."""
# No `from __future__ import annotations`: tensorrt.plugin reads real annotation objects.

import numpy as np
import pytest

from vitdeploy.plugins import ptx_target
from vitdeploy.testing import aot_emulator, contract
from vitdeploy.testing.contract import synthetic_node
from vitdeploy.plugins.msda.spec import vitdeploy_attrs

pytestmark = pytest.mark.contract  # `pytest -m contract` (test ids carry the plugin folder: this file's name has msda)

FLOAT, INT32 = 1, 6
HOPPER = ptx_target.PtxTarget(90, ptx_target.pinned_isa(90))
ORIN = ptx_target.PtxTarget(87, ptx_target.pinned_isa(87))


def decoder_node(levels, points, method="default", heads=8, head_dim=32, queries=300):
    """A full-size decoder cross-attention node, concatenated-points layout [N, Lq, M, sum(P), 2]."""
    s = sum(h * w for h, w in levels)
    starts = np.concatenate([[0], np.cumsum([h * w for h, w in levels])[:-1]]).astype(np.int32)
    total = sum(points)
    return synthetic_node("MultiscaleDeformableAttention", vitdeploy_attrs(points, method), [
        ("value", FLOAT, ("batch", s, heads, head_dim), None),
        ("spatial_shapes", INT32, (len(levels), 2), np.array(levels, dtype=np.int32)),
        ("level_start_index", INT32, (len(levels),), starts),
        ("sampling_locations", FLOAT, ("batch", queries, heads, total, 2), None),
        ("attention_weights", FLOAT, ("batch", queries, heads, total), None),
    ], graph="full-size")


LEVELS_640 = [(80, 80), (40, 40), (20, 20)]  # strides 8/16/32 of a 640x640 input
CASES = {
    "dfine_s-fp16": (decoder_node(LEVELS_640, [3, 6, 3]), "fp16", HOPPER),
    "rtdetr_v2-discrete-fp32": (decoder_node(LEVELS_640, [4, 4, 4], "discrete"), "fp32", ORIN),
}


@pytest.fixture(scope="module")
def layer():
    with contract.plugin_layer() as lay:
        yield lay


@pytest.mark.parametrize("name", list(CASES))
def test_per_level_points_and_discrete_nodes_meet_the_plugin_layer(layer, name):
    from vitdeploy.plugins.msda.kernel import interpreter_active
    from vitdeploy.plugins.msda.trt import SPEC

    if interpreter_active():
        pytest.skip("Triton was imported with TRITON_INTERPRET=1 in this process: AOT compilation is off")
    node, precision, target = CASES[name]
    with ptx_target.compile_for(target):
        r = contract.drive(layer, node, precision, only=1)
    bad = contract.problems(r, layer, max_isa=target.isa, portable=target.portable)
    assert not bad, "\n".join(bad)
    # loadFields handed both attributes over in the creator's order; QDP read them back as the spec says
    assert [f[0] for f in r.fields] == list(SPEC.attrs) and not r.skipped_fields
    got = r.plugin.attrs
    assert np.asarray(got["num_points"]).dtype == np.int32
    assert list(np.asarray(got["num_points"])) == node.attr_values()["num_points"]
    assert got["method"] == node.attr_values()["method"]
    trt = layer.trt
    assert r.output_types == [trt.DataType.HALF if precision == "fp16" else trt.DataType.FLOAT]
    assert r.output_dims(3) == contract.reference_output_shapes(node, 3)  # [N, Lq, M, D] like the ONNX face
    (la,) = r.launches
    from vitdeploy.plugins.ptx import parse

    info = parse(la.ptx, la.kernel_name)
    assert info.target == target.name and list(info.params) == [".u64"] * 5 + [".u32"] * 3 + [".u64"]
    if node.attr_values()["method"] == "discrete":
        assert "fma" not in la.ptx  # x * W + 0.5 rounds as transformers computes it


def test_launch_emulation_of_per_level_points_and_discrete_nodes(layer):
    """The launch TensorRT would make for each node (reduced for the interpreter to fewer queries and heads: runtime
    values, so the PTX is the real node's), at batch 2, computes the reference; every output element written,
    nothing outside the outputs or into the inputs."""
    from vitdeploy.plugins.msda.kernel import interpreter_active

    if interpreter_active():
        pytest.skip("Triton was imported with TRITON_INTERPRET=1 in this process: AOT compilation is off")
    jobs = []
    for name, (node, precision, target) in CASES.items():
        jobs += aot_emulator.prepare(layer, node, precision, target=target, first_id=len(jobs), only=1,
                                     covers=[f"full-size: {name}"])
    assert len(jobs) == len(CASES) and all(not j.problems for j in jobs), [j.problems for j in jobs]
    outcomes = aot_emulator.start(jobs).wait()
    for o in outcomes:
        assert o.ok, o.message()
        assert o.result.get("err_written") is not None and o.job.node.attr_values()["num_points"]
