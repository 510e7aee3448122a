"""No block passed over in silence (issue 24): every Softmax a rewrite leaves is named in the report with
what it is and why it stays -- a windowed form declined for its *cause*, global attention left to
TensorRT, or no attention at all -- and a replacement ONNX Runtime cannot run is reported with ORT's whole
message, not its first 200 characters."""
from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
import torch
from onnx import TensorProto, helper

from vitdeploy.deploy.export import BatchSpec, export_onnx
from vitdeploy.deploy.rewrite.census import lines
from vitdeploy.deploy.rewrite.driver import Candidate, Emission, RewritePass, run_pass, run_passes


class Windows(torch.nn.Module):
    """Window attention (2x3 windows on a 4x6 map, 2 heads) with an extra logit term: `bias` "query" adds
    q·P (depends on the query, but not on relative offsets), "key" adds (k·P)ᵀ (depends on the keys)."""

    def __init__(self, bias: str):
        super().__init__()
        self.bias = bias
        self.qkv, self.proj = torch.nn.Linear(16, 48), torch.nn.Linear(16, 16)
        self.p = torch.nn.Parameter(torch.randn(8, 6))

    def forward(self, x):  # [B, 24, 16]
        b = x.shape[0]
        w = x.view(b, 2, 2, 2, 3, 16).permute(0, 1, 3, 2, 4, 5).reshape(b * 4, 6, 16)
        q, k, v = self.qkv(w).reshape(b * 4, 6, 3, 2, 8).permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q * 8 ** -0.5) @ k.transpose(-2, -1)
        attn = attn + (q @ self.p if self.bias == "query" else (k @ self.p).transpose(-2, -1))
        out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(b * 4, 6, 16)
        return x + self.proj(out).view(b, 2, 2, 2, 3, 16).permute(0, 1, 3, 2, 4, 5).reshape(b, 24, 16)


class Cross(torch.nn.Module):
    """Attention whose keys/values come from a pooled copy of the tokens (Twins' GSA, PVT's SRA)."""

    def __init__(self):
        super().__init__()
        self.q, self.kv, self.proj = torch.nn.Linear(16, 16), torch.nn.Linear(16, 32), torch.nn.Linear(16, 16)

    def forward(self, x):
        b = x.shape[0]
        pooled = x.view(b, 12, 2, 16).mean(2)
        q = self.q(x).view(b, 24, 2, 8).transpose(1, 2)
        k, v = self.kv(pooled).view(b, 12, 2, 2, 8).permute(2, 0, 3, 1, 4).unbind(0)
        out = ((q @ k.transpose(-2, -1)) * 8 ** -0.5).softmax(-1) @ v
        return x + self.proj(out.transpose(1, 2).reshape(b, 24, 16))


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.Sequential(Windows("query"), Windows("key"), Cross())
        self.head = torch.nn.Linear(16, 5)

    def forward(self, x):
        return self.head(self.blocks(x).mean(1)).softmax(-1)  # a classifier's Softmax: no attention


@pytest.fixture(scope="module")
def rewritten(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("census") / "net.onnx"
    export_onnx(Net().eval(), torch.randn(1, 24, 16), path, exporter="torchscript", batch=BatchSpec.static(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_passes(onnx.load(str(path)), ["swin"], "plugin")


def test_every_softmax_left_is_named_with_its_cause(rewritten):
    model, report = rewritten
    census = report["softmax"]
    names = [n.name for n in model.graph.node if n.op_type == "Softmax"]
    assert [c["node"] for c in census] == names and len(names) == 4
    query, key, cross, head = census
    assert query["kind"] == "declined" and "depends on the query, and not as SAM's decomposed relative" in query["why"]
    assert key["kind"] == "declined" and "depends on the keys or values" in key["why"]
    assert cross["kind"] == "global" and "keys/values from another tensor" in cross["why"]
    assert head["kind"] == "other" and "not attention-shaped" in head["why"]
    assert all(c["pass"] == "swin" for c in census)
    # the pass's notes name the attention blocks (not the classifier), by node name
    notes = report["passes"][0]["notes"]
    assert len(notes) == 3 and all(any(f"'{c['node']}'" in n for n in notes) for c in census[:3])
    shown = lines(census)
    assert shown[0] == "4 Softmax/Attention nodes left: 1 global attention, 2 declined, 1 not attention"
    assert all(any(c["node"] in line for line in shown) for c in census)


def test_the_census_is_in_the_json_a_build_writes(rewritten):
    import json

    _, report = rewritten
    back = json.loads(json.dumps(report))
    assert back["softmax"] == report["softmax"] and {"node", "op", "kind", "why"} <= set(back["softmax"][0])


# --- an ONNX Runtime error, whole ---------------------------------------------------------------------------


class BadReshape(RewritePass):
    """Replaces y = Relu(x) by a Reshape ONNX Runtime refuses at run time."""

    name = "bad"
    modes = ("plugin",)

    def find(self, graph):
        n = next(n for n in graph.nodes if n.op == "Relu")
        return [Candidate("relu", [n], [n.inputs[0]], [n.outputs[0]])], []

    def emit(self, graph, cand, mode):
        out = gs.Variable("y_new")
        shape = gs.Constant("bad_shape", np.asarray([7, 5], np.int64))
        return Emission([gs.Node("Reshape", inputs=[cand.inputs[0], shape], outputs=[out])], [out])


def test_an_onnx_runtime_error_is_reported_whole():
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "toy",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 8])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    with pytest.warns(UserWarning, match="left relu untouched"):
        _, rep = run_pass(m, BadReshape())
    why = rep.candidates[0].reason
    assert why.startswith("replacement does not run:") and "Reshape" in why
    # ORT's status message names the shapes; it sits past the first 200 characters the report used to keep
    assert "{3,8}" in why and "{7,5}" in why and len(why) > 200
