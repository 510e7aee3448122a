"""Issue 26 item 7: lint prints identical findings once, with a count and the first node names, and says
when it extrapolates to a TensorRT newer than its tables (no green tick for 12.0)."""
from __future__ import annotations

import json

import onnx
from onnx import TensorProto, helper

H = TensorProto.FLOAT16


def window_attention_chain(n: int) -> onnx.ModelProto:
    """n vitdeploy WindowAttention plugin nodes one after another (what a rewritten Swin holds)."""
    from vitdeploy.plugins.window_attention.spec import SPEC

    nodes, x = [], "qkv"
    for i in range(n):
        nodes.append(helper.make_node(SPEC.name, [x, "bias", "pad"], [f"y{i}"], name=f"roll_{i}__swin_WindowAttention{i}",
                                      domain="vitdeploy", plugin_version=SPEC.version, plugin_namespace=SPEC.namespace))
        x = f"y{i}"
    vi = helper.make_tensor_value_info
    g = helper.make_graph(nodes, "g", [vi("qkv", H, [1, 49, 96]), vi("bias", H, [1, 49, 49]), vi("pad", H, [96])],
                          [vi(x, H, [1, 49, 32])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("vitdeploy", 1)])
    m.ir_version = 10
    return m


def test_identical_findings_print_once_with_count_and_first_nodes(tmp_path, cli_run):
    p = tmp_path / "swin.onnx"
    onnx.save(window_attention_chain(12), str(p))
    res = cli_run("lint", p, "--trt", "10.3", "--json", tmp_path / "r.json")
    assert res.exit_code == 1, res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error")]
    assert len(errors) == 1, res.output
    assert errors[0].startswith("error   [plugin] WindowAttention ×12 (roll_0__swin_WindowAttention0, "
                                "roll_1__swin_WindowAttention1, … 10 more): ")
    assert "--plugins off" in errors[0]
    assert "✘ TensorRT 10.3: 12 error(s)" in res.output  # the count stays the count of findings
    rep = json.loads((tmp_path / "r.json").read_text())
    assert len(rep["findings"]) == 12 and rep["findings"][11]["node"] == "roll_11__swin_WindowAttention11"


def test_a_version_newer_than_the_tables_is_extrapolated_not_ticked(tmp_path, cli_run):
    from vitdeploy.deploy.lint.core import newest_described

    p = tmp_path / "swin.onnx"
    onnx.save(window_attention_chain(2), str(p))
    newest = ".".join(map(str, newest_described()))
    res = cli_run("lint", p, "--trt", "12.0", "--json", tmp_path / "r.json")
    assert res.exit_code == 0, res.output
    assert f"TensorRT 12.0 is newer than every release vitdeploy's tables describe (newest {newest})" in res.output
    assert f"? TensorRT 12.0 (extrapolated from {newest}'s tables): 0 error(s)" in res.output
    assert "✔ TensorRT" not in res.output
    assert json.loads((tmp_path / "r.json").read_text())["extrapolated_from"] == newest
    res = cli_run("lint", p, "--trt", newest)
    assert res.exit_code == 0 and "✔ TensorRT" in res.output and "extrapolated" not in res.output
