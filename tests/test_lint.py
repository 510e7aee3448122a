"""Issue 12: `vitdeploy lint` names each of the issue's findings 1, 2, 3 and 6 when it is planted in a graph.

Small hand-made graphs, one problem each: (1) ScatterND reduction="none" (TensorRT < 10.9), (2) opset 23 and
ONNX Attention (< 10.14), (3) INT8 on the attention BMMs / a subnormal scale / per-channel DQ on a non-weight
input, (6) stale value_info; plus plugin versions (the review's F2: the stock deformable-attention plugin v2
exists only from 10.11), attention forms, types, the CLI and the build's lint step.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from vitdeploy.deploy.lint import lint_model
from vitdeploy.errors import VitdeployError

F, H = TensorProto.FLOAT, TensorProto.FLOAT16


def model(nodes, inputs, outputs, inits=(), opset=18, domains=(), value_info=()):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits), value_info=list(value_info))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset), *[helper.make_opsetid(d, 1) for d in domains]])
    m.ir_version = 10
    return m


def vi(name, t=F, shape=None):
    return helper.make_tensor_value_info(name, t, shape)


def rules(report, severity=None):
    return [(f.severity, f.rule, f.node) for f in report.findings if severity is None or f.severity == severity]


def scatter_nd(reduction="none"):
    """DETR's box head after the dynamo export: ScatterND with the default reduction written out (finding 1)."""
    idx = numpy_helper.from_array(np.array([[0], [2]], np.int64), "idx")
    upd = numpy_helper.from_array(np.ones((2, 4), np.float32), "upd")
    n = helper.make_node("ScatterND", ["x", "idx", "upd"], ["y"], name="node_ScatterND_2212", reduction=reduction)
    return model([n], [vi("x", F, [4, 4])], [vi("y", F, [4, 4])], [idx, upd])


# ----------------------------------------------------------------------------- finding 1

def test_finding1_scatternd_reduction_rejected_before_10_9_and_dropped_by_export():
    from vitdeploy.deploy.export import drop_scatter_reduction_none

    m = scatter_nd()
    r = lint_model(m, "10.3")
    f = next(f for f in r.errors if f.node == "node_ScatterND_2212")
    assert f.rule == "attribute" and f.op == "ScatterND" and 'reduction="none"' in f.message
    assert f.fixed_in == (10, 9) and "delete the attribute" in f.fix
    assert f.line().startswith('error   [attribute] node_ScatterND_2212 (ScatterND): attribute reduction="none"')
    assert not lint_model(m, "10.9").errors and not lint_model(m, "11.4").errors
    add = lint_model(scatter_nd("add"), "11.4")  # a real reduction: no TensorRT supports it
    assert [(e.rule, e.fixed_in) for e in add.errors] == [("attribute", None)]
    assert drop_scatter_reduction_none(m) == 1 and not lint_model(m, "10.3").errors
    assert drop_scatter_reduction_none(scatter_nd("add")) == 0  # meaning would change: kept


# ----------------------------------------------------------------------------- finding 2: opset

def attention_op23():
    q = [vi(n, F, [1, 2, 8, 16]) for n in ("q", "k", "v")]
    n = helper.make_node("Attention", ["q", "k", "v"], ["y"], name="node_Attention_0")
    return model([n], q, [vi("y", F, [1, 2, 8, 16])], opset=23)


def test_finding2_opset_23_attention_needs_10_14():
    m = attention_op23()
    for v in ("10.3", "10.9"):
        r = lint_model(m, v)
        op = next(f for f in r.errors if f.rule == "operator")
        assert op.node == "node_Attention_0" and op.fixed_in == (10, 14) and "--opset 20" in op.fix
        opset = next(f for f in r.warnings if f.rule == "opset")
        assert "opset 23" in opset.message and opset.fixed_in == (10, 11)
    assert not lint_model(m, "11.4").errors and not [f for f in lint_model(m, "11.4").findings if f.rule == "opset"]
    # 10.14+: the importer's own restrictions apply
    m.graph.node[0].attribute.append(helper.make_attribute("softcap", 30.0))
    assert [f.rule for f in lint_model(m, "11.4").errors] == ["attribute"]


def test_attention_rules_are_the_operator_table_row():
    """Each Attention restriction of onnx-tensorrt operators.md (10.15), cited in the message: attn_mask must be
    4-D like Q/K/V; softmax_precision is not in the row (no finding); softcap / qk_matmul_output_mode, KV-cache
    inputs and extra outputs are errors."""
    from vitdeploy.deploy.lint.tables import ATTENTION_ROW

    def attention(mask_shape=None, extra_in=(), outputs=("y",), **attrs):
        ins = [vi(n, F, [1, 2, 8, 16]) for n in ("q", "k", "v")]
        names = ["q", "k", "v"]
        if mask_shape is not None or extra_in:
            names.append("mask" if mask_shape is not None else "")
            if mask_shape is not None:
                ins.append(vi("mask", F, mask_shape))
        for name in extra_in:
            names.append(name)
            ins.append(vi(name, F, [1, 2, 4, 16]))
        n = helper.make_node("Attention", names, list(outputs), name="node_Attention_0", **attrs)
        return model([n], ins, [vi(o, F, None) for o in outputs], opset=23)

    ok = lint_model(attention(mask_shape=[1, 1, 8, 8], softmax_precision=TensorProto.FLOAT, scale=0.25, is_causal=0), "11.4")
    assert not ok.errors, [f.line() for f in ok.errors]
    r = lint_model(attention(mask_shape=[8, 8]), "11.4")
    assert [(f.rule, f.node) for f in r.errors] == [("shape", "node_Attention_0")]
    assert "attn_mask (mask) is 2-D" in r.errors[0].message and ATTENTION_ROW in r.errors[0].message
    r = lint_model(attention(softcap=30.0, qk_matmul_output_mode=1), "11.4")
    assert [f.rule for f in r.errors] == ["attribute"]
    assert "qk_matmul_output_mode and softcap" in r.errors[0].message and ATTENTION_ROW in r.errors[0].message
    assert not lint_model(attention(softcap=0.0, qk_matmul_output_mode=0), "11.4").errors  # the defaults, written out
    r = lint_model(attention(extra_in=("past_key", "past_value")), "11.4")
    assert [f.rule for f in r.errors] == ["inputs"] and "past_key/past_value" in r.errors[0].message
    r = lint_model(attention(outputs=("y", "present_key")), "11.4")
    assert [f.rule for f in r.errors] == ["outputs"] and "present_key" in r.errors[0].message


def test_build_lowers_opset_to_the_target_in_one_line(capsys):
    from vitdeploy.deploy.lint.targets import build_target
    from vitdeploy.pipeline.build import bound_opset
    from vitdeploy.pipeline.options import BuildOptions

    for target, mode, want in (("jetson", "native", 20), ("gpu", "plugin", 22), ("gpu", "native", 20)):
        opts = BuildOptions(out_dir=None, alias="vit_t", opset=23)
        record = {}
        bound_opset(opts, build_target(None, target, mode), record)
        assert opts.opset == want and record["opset"] == {"requested": 23, "used": want}
        line = capsys.readouterr().out.strip()
        assert line.startswith(f"--opset 23 lowered to {want}") and "Attention imports only from TensorRT 10.14" in line
    opts = BuildOptions(out_dir=None, alias="vit_t", opset=18)
    bound_opset(opts, build_target(None, "jetson", "native"), {})
    assert opts.opset == 18 and capsys.readouterr().out == ""
    opts = BuildOptions(out_dir=None, alias="vit_t", opset=23)
    bound_opset(opts, build_target("10.15.1.29", "gpu", "plugin"), {})  # TensorRT here: its own range
    assert opts.opset == 23


# ----------------------------------------------------------------------------- finding 3: INT8 placement

def _q(name, x, scale, out=None):
    return helper.make_node("QuantizeLinear", [x, scale, "zp"], [out or f"{x}_q"], name=name)


def _dq(name, x, scale, out=None, axis=None):
    kw = {} if axis is None else {"axis": axis}
    return helper.make_node("DequantizeLinear", [x, scale, "zp" if axis is None else "zpc"], [out or f"{x}_dq"],
                            name=name, **kw)


def int8_attention(subnormal_softmax_scale=True, per_channel_const_a=True):
    """The review's vit_int8: Q/DQ on q, kᵀ, v and the Softmax output, the Softmax scale an FP16 subnormal,
    and (ConViT native) a constant first operand with a per-channel DQ."""
    s = lambda name, v: numpy_helper.from_array(np.array(v, np.float16), name)  # noqa: E731
    inits = [s("s_q", 0.02), s("s_k", 0.02), s("s_v", 0.02), s("s_p", 4.88e-5 if subnormal_softmax_scale else 0.004),
             numpy_helper.from_array(np.array(0, np.int8), "zp"), numpy_helper.from_array(np.zeros(2, np.int8), "zpc"),
             numpy_helper.from_array(np.ones((1, 2, 8, 8), np.int8), "gp_int8"), s("s_gp", [0.01, 0.01]),
             numpy_helper.from_array(np.array(0.25, np.float16), "scale")]
    nodes = [
        helper.make_node("Mul", ["q", "scale"], ["qs"], name="mul_scale"),
        _q("q_q", "qs", "s_q"), _dq("dq_q", "qs_q", "s_q"), _q("q_k", "kt", "s_k"), _dq("dq_k", "kt_q", "s_k"),
        helper.make_node("MatMul", ["qs_q_dq", "kt_q_dq"], ["logits"], name="node_MatMul_60"),
        helper.make_node("Softmax", ["logits"], ["p"], name="node_Softmax_61", axis=-1),
        _q("q_p", "p", "s_p"), _dq("dq_p", "p_q", "s_p"), _q("q_v", "v", "s_v"), _dq("dq_v", "v_q", "s_v"),
        helper.make_node("MatMul", ["p_q_dq", "v_q_dq"], ["y"], name="node_scaled_dot_product_attention"),
    ]
    outputs = [vi("y", H, [1, 2, 8, 16])]
    if per_channel_const_a:
        nodes += [_dq("dq_gp", "gp_int8", "s_gp", out="gp", axis=1),
                  helper.make_node("MatMul", ["gp", "v"], ["y2"], name="gpsa0/MatMul_11")]
        outputs.append(vi("y2", H, [1, 2, 8, 16]))
    ins = [vi("q", H, [1, 2, 8, 16]), vi("kt", H, [1, 2, 16, 8]), vi("v", H, [1, 2, 8, 16])]
    return model(nodes, ins, outputs, inits, opset=19)


def test_finding3_int8_attention_subnormal_scale_and_per_channel_non_weight():
    r = lint_model(int8_attention(), "10.9")
    by_rule = {}
    for f in r.findings:
        by_rule.setdefault(f.rule, []).append(f)
    sub = by_rule["qdq-scale"][0]
    assert sub.severity == "error" and sub.node == "q_p" and "tensor p is 4.88e-05, a subnormal FLOAT16" in sub.message
    pc = by_rule["qdq-per-channel"][0]
    assert pc.severity == "error" and pc.node == "dq_gp" and "input 0 of MatMul gpsa0/MatMul_11" in pc.message
    att = by_rule["attention-form"][0]
    assert att.severity == "warning" and att.node == "node_Softmax_61" and "Q/DQ on the attention BMMs" in att.message
    assert r.attention[0]["quantized"] and r.attention[0]["form"] == "not fusible"
    assert r.qdq == {"MatMul": {"nodes": 3, "quantize": 4, "dequantize": 5}}  # the second MatMul: 4 DQ, 2 MatMuls
    clean = lint_model(int8_attention(False, False), "10.9")
    assert not clean.errors and [f.rule for f in clean.warnings] == ["attention-form"]


def test_qdq_zero_point_per_channel_activation_and_pairing():
    zp1 = numpy_helper.from_array(np.array(1, np.int8), "zp")
    sc = numpy_helper.from_array(np.array([0.1, 0.1], np.float32), "sc")
    nodes = [helper.make_node("QuantizeLinear", ["x", "sc", "zp"], ["xq"], name="q0", axis=1),
             helper.make_node("Relu", ["xq"], ["y"], name="relu")]
    r = lint_model(model(nodes, [vi("x", F, [1, 2])], [vi("y", TensorProto.INT8, [1, 2])], [zp1, sc], opset=19), "11.4")
    assert {f.rule for f in r.errors} == {"qdq-zero-point", "qdq-per-channel", "qdq-pair"}


# ----------------------------------------------------------------------------- finding 6

def test_finding6_stale_value_info_named_and_stripped_by_fp16_conversion():
    from vitdeploy.calibration.precision import convert_fp16

    w = numpy_helper.from_array(np.ones(4, np.float32), "inner.blocks.0.norm1.weight")
    b = numpy_helper.from_array(np.zeros(4, np.float32), "b")
    n = helper.make_node("LayerNormalization", ["x", "inner.blocks.0.norm1.weight", "b"], ["y"], name="ln", axis=-1)
    m = model([n], [vi("x", F, [2, 4])], [vi("y", F, [2, 4])], [w, b], value_info=[vi("inner.blocks.0.norm1.weight", H, [4])])
    with pytest.raises(Exception, match="differs from existing elem type"):
        onnx.checker.check_model(m, full_check=True)
    r = lint_model(m, "10.3")
    f = next(f for f in r.findings if f.rule == "value-info")
    assert f.severity == "warning" and f.node == "inner.blocks.0.norm1.weight" and "FLOAT16" in f.message
    assert not [x for x in r.findings if x.rule == "onnx-checker"]  # the same problem is reported once
    fp16, _ = convert_fp16(m)
    onnx.checker.check_model(fp16, full_check=True)
    assert not [x for x in lint_model(fp16, "10.3").findings if x.rule in ("value-info", "onnx-checker")]


# ----------------------------------------------------------------------------- plugins

def msda(version="2", int64_shapes=False):
    it = TensorProto.INT64 if int64_shapes else TensorProto.INT32
    n = helper.make_node("MultiscaleDeformableAttnPlugin_TRT", ["value", "shapes", "start", "loc", "w"], ["out"],
                         name="msda0", domain="trt.plugins", plugin_version=version, plugin_namespace="")
    ins = [vi("value", H, [1, 20, 4, 16]), vi("shapes", it, [1, 2]), vi("start", it, [1]),
           vi("loc", H, [1, 10, 4, 1, 4, 2]), vi("w", H, [1, 10, 4, 1, 4])]
    return model([n], ins, [vi("out", H, [1, 10, 4, 16])], domains=["trt.plugins"])


def test_stock_msda_plugin_version_per_tensorrt():
    """F2 of the review: v2 exists from 10.11; v1 is registered on every version (the Legacy creator from 10.11)."""
    v2 = msda("2")
    for v in ("10.3", "10.9", "10.10"):
        e = [f for f in lint_model(v2, v).errors if f.rule == "plugin"]
        assert len(e) == 1 and e[0].node == "msda0" and e[0].fixed_in == (10, 11) and "emit version 1" in e[0].fix
    assert not lint_model(v2, "10.11").errors and not lint_model(v2, "11.4").errors
    v1 = msda("1")
    assert all(not lint_model(v1, v).errors for v in ("10.3", "10.9", "11.4"))
    assert "version 3" in lint_model(msda("3"), "11.4").errors[0].message
    assert not lint_model(msda("1", int64_shapes=True), "10.3").errors  # the parser narrows this plugin's INT64


def test_vitdeploy_plugins_need_10_9_and_their_registered_version():
    from vitdeploy.plugins.window_attention.spec import SPEC

    def wa(version=SPEC.version, ns=SPEC.namespace, index_type=H):
        n = helper.make_node(SPEC.name, ["qkv", "bias", "pad"], ["y"], name="wa0", domain="vitdeploy",
                             plugin_version=version, plugin_namespace=ns)
        return model([n], [vi("qkv", H, [1, 49, 96]), vi("bias", H, [1, 49, 49]), vi("pad", index_type, [96])],
                     [vi("y", H, [1, 49, 32])], domains=["vitdeploy"])

    e = lint_model(wa(), "10.3").errors
    assert [(f.rule, f.fixed_in) for f in e] == [("plugin", (10, 9))] and "--plugins off" in e[0].fix
    assert not lint_model(wa(), "10.9").errors and not lint_model(wa(), "11.4").errors
    assert "vitdeploy registers WindowAttention as version" in lint_model(wa(version="7"), "11.4").errors[0].message
    wide = lint_model(wa(index_type=TensorProto.INT64), "11.4").errors
    assert [f.rule for f in wide] == ["plugin"] and "INT64" in wide[0].message
    n = helper.make_node("MysteryOp", ["x"], ["y"], name="m0", domain="com.example")
    w = lint_model(model([n], [vi("x", F, [1])], [vi("y", F, [1])], domains=["com.example"]), "11.4")
    assert not w.errors and [f.rule for f in w.warnings] == ["plugin"]


# ----------------------------------------------------------------------------- attention forms, types

def attention(scale_after=False, reshape_5d=False, fp32_softmax=False):
    """MatMul(q·s, kᵀ) -> Add(bias) -> Softmax -> MatMul(·, v), or the review's departures from it."""
    t = F if fp32_softmax else H
    np_t = np.float32 if t == F else np.float16
    inits = [numpy_helper.from_array(np.array(0.125, np_t), "s"),
             numpy_helper.from_array(np.zeros((1, 8, 49, 49) if not reshape_5d else (4, 2, 49, 49), np_t), "bias")]
    nodes = []
    q = "q"
    if not scale_after:
        nodes.append(helper.make_node("Mul", ["q", "s"], ["qs"], name="scale"))
        q = "qs"
    nodes.append(helper.make_node("MatMul", [q, "kt"], ["l0"], name="bmm1"))
    last = "l0"
    if scale_after:
        nodes.append(helper.make_node("Mul", [last, "s"], ["l1"], name="scale_after"))
        last = "l1"
    if reshape_5d:
        inits += [numpy_helper.from_array(np.array([-1, 4, 2, 49, 49], np.int64), "s5"),
                  numpy_helper.from_array(np.array([-1, 2, 49, 49], np.int64), "s4")]
        nodes += [helper.make_node("Reshape", [last, "s5"], ["r5"], name="r5"),
                  helper.make_node("Add", ["r5", "bias"], ["a5"], name="add5"),
                  helper.make_node("Reshape", ["a5", "s4"], ["l2"], name="r4")]
    else:
        nodes.append(helper.make_node("Add", [last, "bias"], ["l2"], name="add"))
    nodes += [helper.make_node("Softmax", ["l2"], ["p"], name="softmax", axis=-1),
              helper.make_node("MatMul", ["p", "v"], ["y"], name="bmm2")]
    heads = 2 if reshape_5d else 8
    ins = [vi("q", t, [4, heads, 49, 32]), vi("kt", t, [4, heads, 32, 49]), vi("v", t, [4, heads, 49, 32])]
    return model(nodes, ins, [vi("y", t, [4, heads, 49, 32])], inits)


def test_attention_forms():
    ok = lint_model(attention(), "10.3")
    assert ok.attention[0]["form"] == "fusible" and ok.attention[0]["scale"] == "before BMM1"
    assert ok.attention[0]["bias"]["rank"] == 4 and ok.attention[0]["head_size"] == 32
    assert not ok.warnings and ok.attention[0]["softmax_precision"] == "fp16"
    after = lint_model(attention(scale_after=True), "10.3")
    f = next(f for f in after.warnings if f.rule == "attention-form")
    assert "the scale is applied after MatMul(q, kᵀ)" in f.message and "before MatMul(q, kᵀ)" in f.fix
    detour = lint_model(attention(reshape_5d=True), "10.3")
    f = next(f for f in detour.warnings if f.rule == "attention-form")
    assert "Reshape between MatMul(q, kᵀ) and Softmax" in f.message and "one 4-D constant" in f.fix


def test_types_double_io_is_an_error():
    n = helper.make_node("Relu", ["x"], ["y"], name="r")
    r = lint_model(model([n], [vi("x", TensorProto.DOUBLE, [2])], [vi("y", TensorProto.DOUBLE, [2])]), "11.4")
    assert [(f.rule, f.node) for f in r.errors] == [("dtype", "x")] and "(and 1 more)" in r.errors[0].message
    n = helper.make_node("Cast", ["x"], ["y"], name="c", to=TensorProto.UINT16)
    r = lint_model(model([n], [vi("x", F, [2])], [vi("y", TensorProto.UINT16, [2])]), "11.4")
    assert {f.rule for f in r.errors} == {"dtype"} and any(f.node == "c" for f in r.errors)


# ----------------------------------------------------------------------------- the command and the build step

def test_cli_one_line_per_problem_json_and_exit_codes(tmp_path, cli_run):
    bad = tmp_path / "detr_box_head.onnx"
    onnx.save(scatter_nd(), str(bad))
    res = cli_run("lint", str(bad), "--trt", "10.3")
    assert res.exit_code == 1, res.output
    lines = res.output.splitlines()
    assert lines[0] == "detr_box_head.onnx: linted for TensorRT 10.3 (--trt)"
    err = [ln for ln in lines if ln.startswith("error")]
    assert err == ['error   [attribute] node_ScatterND_2212 (ScatterND): attribute reduction="none" is rejected by '
                   'TensorRT < 10.9 whatever its value -> fix: delete the attribute ("none" is the default; '
                   'vitdeploy export does this)']
    assert "✘ TensorRT 10.3: 1 error(s)" in res.output
    res = cli_run("lint", str(bad), "--trt", "10.9", "--json")
    assert res.exit_code == 0
    rep = json.loads(res.stdout)  # the report alone on stdout; the human lines went to stderr
    assert rep["tensorrt"] == "10.9" and rep["errors"] == 0 and rep["reason"] == "--trt"
    res = cli_run("lint", str(bad), "--trt", "10.3", "--json", str(tmp_path / "r.json"))
    rep = json.loads((tmp_path / "r.json").read_text())
    assert res.exit_code == 1 and rep["errors"] == 1 and rep["findings"][0]["fixed_in"] == "10.9"
    res = cli_run("lint", str(bad), "--trt", "8.6")
    assert res.exit_code == 2 and "predates TensorRT 10" in res.output
    res = cli_run("lint", str(tmp_path / "missing.onnx"))
    assert res.exit_code == 2 and "does not exist" in res.output
    res = cli_run("lint", str(bad))  # auto: no TensorRT here, no manifest -> JetPack 6
    assert res.exit_code == 1 and "TensorRT 10.3 (no TensorRT here and no manifest" in res.output


def test_build_lint_step_fails_before_the_engine_or_raises_an_open_ended_floor(tmp_path, capsys):
    from vitdeploy.deploy.lint.targets import LintTarget, build_target
    from vitdeploy.pipeline.steps import step_lint

    p = tmp_path / "model.fp16.onnx"
    onnx.save(msda("2"), str(p))
    # JetPack 6 is a definite target: refused, naming the node and the fix
    with pytest.raises(VitdeployError) as e:
        step_lint(p, build_target(None, "jetson", "native"))
    assert "would not build on TensorRT 10.3: msda0 MultiscaleDeformableAttnPlugin_TRT version 2" in e.value.message
    assert "emit version 1" in e.value.hint and f"vitdeploy lint {p} --trt 10.3" in e.value.hint
    # no TensorRT here, GPU target: ">= 10.9" becomes ">= 10.11", said in one line and recorded
    rec = step_lint(p, build_target(None, "gpu", "plugin"))
    assert rec["requires"] == "10.11" and rec["target"] == "10.9" and rec["open_ended"] and rec["errors"] == 0
    assert "this graph needs TensorRT >= 10.11" in capsys.readouterr().out
    # the TensorRT installed here is exact: refused
    with pytest.raises(VitdeployError, match="would not build on TensorRT 10.10"):
        step_lint(p, build_target("10.10.0.31", "gpu", "plugin"))
    # an error no later TensorRT fixes is refused even when open-ended
    q = tmp_path / "sub.onnx"
    onnx.save(int8_attention(per_channel_const_a=False), str(q))
    with pytest.raises(VitdeployError, match="tensor p is 4.88e-05"):
        step_lint(q, LintTarget((10, 9), "test", open_ended=True))
