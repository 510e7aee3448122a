"""FP64 index/grid islands -> FP32 (`vitdeploy.deploy.normalize`): which islands, how measured, what is kept."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from vitdeploy.deploy.normalize import GRID_BOUND, describe, find_fp64_islands, normalize_fp64


def graph_with_islands(value_exit=False, index_exit=False, double_output=False):
    """x [1,2,4,4] float -> GridSample(x, grid) where grid = (loc (float) cast to DOUBLE) * 2 - 1, as the
    TorchScript exporter writes Deformable DETR's grids; optional: the doubles also leave as a value
    (Cast to FLOAT added to the output), as an index (Cast to INT64), or as a DOUBLE graph output."""
    nodes = [
        helper.make_node("Cast", ["loc"], ["loc64"], to=TP.DOUBLE),
        helper.make_node("Constant", [], ["two"], value=numpy_helper.from_array(np.array(2.0), "two")),
        helper.make_node("Constant", [], ["one"], value=numpy_helper.from_array(np.array(1.0), "one")),
        helper.make_node("Mul", ["loc64", "two"], ["g2"]),
        helper.make_node("Sub", ["g2", "one"], ["grid"]),
        helper.make_node("Shape", ["grid"], ["grid_shape"]),
        helper.make_node("GridSample", ["x", "grid"], ["sampled"], align_corners=0),
    ]
    outputs = [helper.make_tensor_value_info("sampled", TP.FLOAT, None),
               helper.make_tensor_value_info("grid_shape", TP.INT64, None)]
    if value_exit:
        nodes += [helper.make_node("Cast", ["g2"], ["g2f"], to=TP.FLOAT),
                  helper.make_node("ReduceSum", ["g2f"], ["g2sum"], keepdims=0)]
        outputs.append(helper.make_tensor_value_info("g2sum", TP.FLOAT, None))
    if index_exit:
        nodes += [helper.make_node("Mul", ["loc64", "four"], ["pix"]),
                  helper.make_node("Cast", ["pix"], ["pix_i"], to=TP.INT64)]
        outputs.append(helper.make_tensor_value_info("pix_i", TP.INT64, None))
    if double_output:
        outputs.append(helper.make_tensor_value_info("grid", TP.DOUBLE, None))
    inits = [numpy_helper.from_array(np.array(4.0), "four")] if index_exit else []
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.FLOAT, [1, 2, 4, 4]),
                                           helper.make_tensor_value_info("loc", TP.FLOAT, [1, 3, 5, 2])],
                              outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def feeds(seed=0):
    rng = np.random.default_rng(seed)
    # locations on a 1/8-pixel lattice + 1/16: x * 4 never lands on an integer, so a cast to INT64 is stable
    loc = (rng.integers(0, 8, size=(1, 3, 5, 2)) / 8 + 1 / 16).astype(np.float32)
    return {"x": rng.standard_normal((1, 2, 4, 4)).astype(np.float32), "loc": loc}


def test_grid_island_is_computed_in_fp32_and_measured():
    model = graph_with_islands(index_exit=True)
    (isl,) = find_fp64_islands(model)
    assert isl.blocked is None and dict(isl.exits) == {"shape": 1, "grid": 1, "index": 1}
    assert dict(isl.entries) == {"cast": 1, "constant": 2, "initializer": 1}
    out, rep = normalize_fp64(model, feeds())
    assert rep["fp64_islands"] == rep["normalized"] == 1 and rep["nodes"] == 6
    assert rep["grid_max_abs_deviation"] <= GRID_BOUND
    assert rep["islands"][0]["exact_exits"] >= 2  # the shape and the index are identical
    assert not any(vi.type.tensor_type.elem_type == TP.DOUBLE for vi in out.graph.value_info)
    assert all(t.data_type != TP.DOUBLE for t in out.graph.initializer)
    assert "computed in FP32" in describe(rep)
    import onnxruntime as ort

    with pytest.raises(Exception, match="GridSample"):  # what ONNX Runtime says about the export itself
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = ort.InferenceSession(out.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds())
    from onnx.reference import ReferenceEvaluator  # the FP64 original, evaluated exactly

    want = ReferenceEvaluator(model).run(None, feeds())
    np.testing.assert_allclose(got[0], want[0], atol=1e-6)
    assert np.array_equal(got[1], want[1]) and np.array_equal(got[2], want[2])


@pytest.mark.parametrize("kw,why", [({"value_exit": True}, "flow back into the data as values"),
                                    ({"double_output": True}, "graph output grid is DOUBLE")])
def test_islands_that_compute_values_or_reach_the_interface_are_kept(kw, why):
    model = graph_with_islands(**kw)
    out, rep = normalize_fp64(model, feeds())
    assert rep["normalized"] == 0 and why in rep["islands"][0]["kept_fp64"]
    assert out is model
    assert "kept as exported" in describe(rep)


def test_an_index_that_moves_in_fp32_keeps_its_island_fp64():
    """0.25 * 4 * (1 - 2**-30) truncates to pixel 0 in FP64; in FP32 the scale rounds to 4.0 and the
    index to 1. An index must not move, so that island stays FP64 (and the graph as exported)."""
    model = graph_with_islands(index_exit=True)
    for init in model.graph.initializer:
        if init.name == "four":
            init.CopyFrom(numpy_helper.from_array(np.array(4.0 * (1 - 2 ** -30)), "four"))
    f = feeds()
    f["loc"][0, 0, 0, 0] = 0.25
    out, rep = normalize_fp64(model, f)
    assert out is model and rep["normalized"] == 0
    assert "index pix" in rep["islands"][0]["kept_fp64"] and "changes in FP32" in rep["islands"][0]["kept_fp64"]


def test_graphs_without_doubles_are_returned_as_they_are():
    model = graph_with_islands()
    for n in model.graph.node:
        for a in n.attribute:
            if a.name == "to":
                a.i = TP.FLOAT
            if a.name == "value":
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float32), a.t.name))
    out, rep = normalize_fp64(model)
    assert out is model and rep is None and describe(rep) == "no FP64 islands"
