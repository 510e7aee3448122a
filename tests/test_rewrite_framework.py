"""The verify-then-replace framework, on a toy pass: good rewrites land, wrong ones are refused."""
import numpy as np
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper

from vitdeploy.deploy.rewrite.driver import Candidate, Emission, RewritePass, run_pass, whole_graph_parity
from vitdeploy.onnxrt import session


def _model():
    """y = Relu((x * 2) + 1) * 2 : two `Mul(.., 2)` sites."""
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["a"], name="mul0"),
        helper.make_node("Add", ["a", "one"], ["b"], name="add"),
        helper.make_node("Relu", ["b"], ["c"], name="relu"),
        helper.make_node("Mul", ["c", "two"], ["y"], name="mul1"),
    ]
    g = helper.make_graph(nodes, "toy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])], [two, one])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


class DoubleToAdd(RewritePass):
    """Replace Mul(x, 2) with Add(x, x); `wrong=True` emits Add(x, x) + x instead (must be refused)."""

    name = "double"
    modes = ("plugin",)

    def find(self, graph):
        cands = []
        for n in graph.nodes:
            c = n.inputs[1] if n.op == "Mul" and len(n.inputs) == 2 else None
            if isinstance(c, gs.Constant) and np.allclose(c.values, 2.0):
                cands.append(Candidate(n.name, [n], [n.inputs[0]], [n.outputs[0]]))
        return cands, []

    def emit(self, graph, cand, mode):
        x = cand.inputs[0]
        out = gs.Variable(cand.outputs[0].name + "_new")
        if self.options.get("wrong") and cand.name == "mul1":
            tmp = gs.Variable(out.name + "_t")
            return Emission([gs.Node("Add", inputs=[x, x], outputs=[tmp]), gs.Node("Add", inputs=[tmp, x], outputs=[out])], [out])
        return Emission([gs.Node("Add", inputs=[x, x], outputs=[out])], [out])


def _run(m, x):
    s = session(m)
    return s.run(None, {"x": x})[0]


def test_good_rewrite_replaces_every_candidate_and_keeps_outputs():
    m = _model()
    out, rep = run_pass(m, DoubleToAdd())
    assert (rep.found, rep.replaced) == (2, 2)
    assert [n.op_type for n in out.graph.node].count("Mul") == 0
    assert out.graph.output[0].name == "y"
    x = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    np.testing.assert_allclose(_run(out, x), _run(m, x), atol=1e-6)
    assert whole_graph_parity(m, out, {"x": x})["passed"]


def test_wrong_replacement_is_refused_and_left_untouched():
    m = _model()
    with pytest.warns(UserWarning, match="left mul1 untouched"):
        out, rep = run_pass(m, DoubleToAdd(wrong=True))
    assert (rep.found, rep.replaced) == (2, 1)
    refused = [c for c in rep.candidates if not c.replaced]
    assert refused[0].name == "mul1" and "differs" in refused[0].reason
    ops = [n.op_type for n in out.graph.node]
    assert ops.count("Mul") == 1  # mul1 kept
    x = np.random.default_rng(2).standard_normal((2, 8)).astype(np.float32)
    np.testing.assert_allclose(_run(out, x), _run(m, x), atol=1e-6)


def test_graph_without_matches_passes_through_unchanged():
    m = _model()
    m.graph.initializer[0].CopyFrom(helper.make_tensor("two", TensorProto.FLOAT, [], [3.0]))
    out, rep = run_pass(m, DoubleToAdd())
    assert rep.found == 0 and out is m
