"""GatedPositionalAttention: PyTorch reference vs timm's GPSA, the renormalisation proof, the ORT face."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from timm.models.convit import GPSA

from vitdeploy.plugins.gated_positional_attention.reference import gated_positional_attention, inputs_from_timm_gpsa
from vitdeploy.plugins.gated_positional_attention.spec import SPEC


def _gpsa(dim: int, heads: int, seed: int, gate_scale: float = 2.0) -> GPSA:
    """A timm GPSA with random weights, a random gate per head and ConViT's local init of pos_proj."""
    torch.manual_seed(seed)
    m = GPSA(dim, num_heads=heads, qkv_bias=False, locality_strength=1.0).eval()
    m.local_init()
    with torch.no_grad():
        m.v.weight.normal_(0, dim ** -0.5)
        m.pos_proj.weight.add_(0.3 * torch.randn_like(m.pos_proj.weight))
        m.pos_proj.bias.normal_(0, 0.5)
        m.gating_param.copy_(gate_scale * torch.randn(heads))
    return m


@pytest.mark.parametrize("dim,heads,n", [(48, 4, 196), (72, 9, 100), (64, 16, 49)])
def test_reference_matches_timm_gpsa(dim, heads, n):
    m = _gpsa(dim, heads, seed=n)
    x = torch.randn(2, n, dim)
    with torch.no_grad():
        expected = m(x)
        attrs, pos, gate = inputs_from_timm_gpsa(m, n)
        core = gated_positional_attention(m.qk(x), m.v(x), pos, gate, **attrs)
        got = m.proj(core)
    assert pos.shape == (heads, n, n) and gate.shape == (heads,)
    assert (got - expected).abs().max().item() < 1e-5


@pytest.mark.parametrize("gate_scale", [0.0, 2.0, 12.0])
def test_timm_renormalisation_is_a_no_op(gate_scale):
    """Each row of (1-g)·softmax + g·P sums to 1, so timm's `attn /= attn.sum(-1)` changes nothing."""
    heads, n, dim = 9, 196, 72
    m = _gpsa(dim, heads, seed=7, gate_scale=gate_scale)
    x = torch.randn(3, n, dim)
    with torch.no_grad():
        m.rel_indices = m.get_rel_indices(n)
        renormalised = m.get_attention(x)  # timm's, with the division
        q, k = m.qk(x).reshape(3, n, 2, heads, dim // heads).permute(2, 0, 3, 1, 4).unbind(0)
        content = ((q @ k.transpose(-2, -1)) * m.scale).softmax(-1)
        pos = m.pos_proj(m.rel_indices).permute(0, 3, 1, 2).softmax(-1)
        g = torch.sigmoid(m.gating_param).view(1, -1, 1, 1)
        blend = (1 - g) * content + g * pos  # without the division
    assert (blend.sum(-1) - 1).abs().max().item() < 1e-6
    assert (renormalised - blend).abs().max().item() < 1e-6


def test_reference_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="heads=4"):
        gated_positional_attention(torch.zeros(1, 10, 96), torch.zeros(1, 10, 48), torch.zeros(4, 9, 9), torch.zeros(4),
                                   num_heads=4, scale=0.1)


def _plugin_model(b: int, n: int, c: int, heads: int, elem: int, pos: np.ndarray, gate: np.ndarray) -> onnx.ModelProto:
    np_dt = onnx.helper.tensor_dtype_to_np_dtype(elem)
    node = helper.make_node(SPEC.name, ["qk", "v", "pos", "gate"], ["out"], domain=SPEC.domain,
                            **SPEC.node_attrs(num_heads=heads, scale=(c // heads) ** -0.5))
    graph = helper.make_graph(
        [node], "gpsa",
        [helper.make_tensor_value_info("qk", elem, ["B", n, 2 * c]), helper.make_tensor_value_info("v", elem, ["B", n, c])],
        [helper.make_tensor_value_info("out", elem, ["B", n, c])],
        initializer=[onnx.numpy_helper.from_array(pos.astype(np_dt), "pos"), onnx.numpy_helper.from_array(gate.astype(np_dt), "gate")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(SPEC.domain, 1)], ir_version=10)


@pytest.mark.parametrize("elem,tol", [(TensorProto.FLOAT, 1e-5), (TensorProto.FLOAT16, 3e-3)])
def test_ort_face_matches_reference(elem, tol):
    from vitdeploy.onnxrt import session

    b, n, c, heads = 2, 100, 72, 9
    rng = np.random.default_rng(0)
    pos = torch.softmax(torch.from_numpy(rng.standard_normal((heads, n, n)).astype(np.float32)), -1).numpy()
    gate = rng.uniform(0, 1, heads).astype(np.float32)
    np_dt = onnx.helper.tensor_dtype_to_np_dtype(elem)
    qk = rng.standard_normal((b, n, 2 * c)).astype(np_dt)
    v = rng.standard_normal((b, n, c)).astype(np_dt)
    (got,) = session(_plugin_model(b, n, c, heads, elem, pos, gate)).run(None, {"qk": qk, "v": v})
    assert got.dtype == np_dt and got.shape == (b, n, c)
    expected = gated_positional_attention(
        torch.from_numpy(qk.astype(np.float32)), torch.from_numpy(v.astype(np.float32)),
        torch.from_numpy(pos.astype(np_dt).astype(np.float32)), torch.from_numpy(gate.astype(np_dt).astype(np.float32)),
        num_heads=heads, scale=(c // heads) ** -0.5,
    ).numpy()
    assert np.abs(got.astype(np.float32) - expected).max() < tol
