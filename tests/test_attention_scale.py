"""The `attention_scale` pass: Softmax(MatMul(q, kᵀ)·s) becomes Softmax(MatMul(q·s, kᵀ)), verified, fusible."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from vitdeploy.deploy.lint import lint_model
from vitdeploy.deploy.rewrite.driver import run_passes

F = TensorProto.FLOAT


def mhsa(op="Mul", scale=0.125, weight_k=False):
    """timm ConViT's MHSA core: attn = (q @ kᵀ) * scale; softmax; @ v (or a Linear instead of q·kᵀ)."""
    inits = [numpy_helper.from_array(np.array(scale, np.float32), "s")]
    if weight_k:
        inits.append(numpy_helper.from_array(np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32), "kt"))
    nodes = [helper.make_node("MatMul", ["q", "kt"], ["l"], name="node_matmul_20"),
             helper.make_node(op, ["l", "s"], ["ls"], name="node_mul_20"),
             helper.make_node("Softmax", ["ls"], ["p"], name="node_softmax_20", axis=-1),
             helper.make_node("MatMul", ["p", "v"], ["y"], name="node_matmul_21")]
    ins = [helper.make_tensor_value_info("q", F, [2, 4, 8, 16]), helper.make_tensor_value_info("v", F, [2, 4, 8, 16])]
    if not weight_k:
        ins.insert(1, helper.make_tensor_value_info("kt", F, [2, 4, 16, 8]))
    out_shape = [2, 4, 8, 16]
    g = helper.make_graph(nodes, "g", ins, [helper.make_tensor_value_info("y", F, out_shape)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 10
    return m


@pytest.mark.parametrize("op,scale", [("Mul", 0.125), ("Div", 8.0)])
def test_scale_moves_onto_q_and_the_block_becomes_fusible(op, scale):
    m = mhsa(op, scale)
    before = lint_model(m, "10.3")
    assert before.attention[0]["form"] == "not fusible" and before.attention[0]["scale"] == "after BMM1"
    out, report = run_passes(m, ["attention_scale"], "native")
    rep = report["passes"][0]
    assert (rep["found"], rep["replaced"]) == (1, 1) and report["whole_graph"]["passed"]
    after = lint_model(out, "10.3")
    assert after.attention[0]["form"] == "fusible" and after.attention[0]["scale"] == "before BMM1"
    assert not after.warnings and not after.errors
    sm = next(n for n in out.graph.node if n.op_type == "Softmax")
    producer = {o: n for n in out.graph.node for o in n.output}
    assert producer[sm.input[0]].op_type == "MatMul"  # nothing between MatMul(q·s, kᵀ) and the Softmax
    assert rep["candidates"][0]["max_abs"] < 1e-5


def test_a_linear_before_softmax_is_not_attention():
    out, report = run_passes(mhsa(weight_k=True), ["attention_scale"], "plugin")
    assert report["passes"][0]["found"] == 0
