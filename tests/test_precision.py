"""FP16 conversion: which nodes are FP16, what stays FP32, I/O types, plugin nodes, and that it runs."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from vitdeploy.calibration.precision import convert_fp16, node_precision

from vitdeploy.deploy.export import BatchSpec, export_onnx
from vitdeploy.onnxgraph import tensor_types
from vitdeploy.onnxrt import session


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory):
    """A 1-block timm ViT: patch Conv, attention MatMuls, Softmax, LayerNorm, GELU, residual Adds, head."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(img_size=16, patch_size=4, num_classes=5, embed_dim=32, depth=1, num_heads=2).eval()
    path = tmp_path_factory.mktemp("fp16") / "tiny_vit.onnx"
    export_onnx(model, torch.randn(2, 3, 16, 16), path, batch=BatchSpec.parse("1:2:8"))
    return path


def _x(n=3, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, 16, 16)).astype(np.float32)


def test_fp16_graph_types(tiny_vit):
    model = onnx.load(str(tiny_vit))
    fp16, summary = convert_fp16(model)
    prec = node_precision(fp16)
    by_op: dict[str, set] = {}
    for i, n in enumerate(fp16.graph.node):
        by_op.setdefault(n.op_type, set()).add(prec[n.name or f"{n.op_type}_{i}"])
    # The compute-heavy ops are FP16 ...
    for op in ("MatMul", "Conv", "Erf", "Add", "Mul", "Softmax"):
        assert by_op[op] == {"fp16"}, (op, by_op[op])
    # ... and the normalisations stay FP32, with casts around them. The Softmax is FP16, the form of
    # TensorRT's FP16 fused attention (its kernels accumulate in FP32 themselves).
    assert by_op["LayerNormalization"] == {"fp32"}
    assert summary["fp32_ops"] == {"LayerNormalization": 3}
    assert summary["casts"] >= 2 * 3
    # LayerNorm scale/bias initializers stay FP32; MatMul weights became FP16.
    types = tensor_types(fp16)
    ln = next(n for n in fp16.graph.node if n.op_type == "LayerNormalization")
    assert types[ln.input[1]] == TensorProto.FLOAT
    mm = next(n for n in fp16.graph.node if n.op_type == "MatMul" and n.input[1] in types and
              any(i.name == n.input[1] for i in fp16.graph.initializer))
    assert types[mm.input[1]] == TensorProto.FLOAT16
    # I/O FP32 by default.
    assert summary["io"] == {"input": "float32", "logits": "float32"}
    # The exporter's value_info typing initializers is gone (issue 12 finding 6): the full check passes,
    # and no no-op Cast FLOAT->FLOAT was added for it.
    inits = {i.name for i in fp16.graph.initializer}
    assert not [vi.name for vi in fp16.graph.value_info if vi.name in inits]
    casts = [n for n in fp16.graph.node if n.op_type == "Cast"]
    assert not [n.name for n in casts if types.get(n.input[0]) == types.get(n.output[0])]
    onnx.checker.check_model(fp16, full_check=True)


def test_fp16_runs_in_ort_and_matches(tiny_vit):
    fp16, _ = convert_fp16(onnx.load(str(tiny_vit)))
    x = _x()
    ref = session(str(tiny_vit)).run(None, {"input": x})[0]
    got = session(fp16).run(None, {"input": x})[0]
    assert got.dtype == np.float32
    assert np.abs(ref - got).max() < 2e-2 * max(1.0, np.abs(ref).max())
    cos = (ref * got).sum() / np.linalg.norm(ref) / np.linalg.norm(got)
    assert cos > 0.9999


def test_fp16_io_can_be_fp16(tiny_vit):
    fp16, summary = convert_fp16(onnx.load(str(tiny_vit)), keep_io_fp32=False)
    assert summary["io"] == {"input": "float16", "logits": "float16"}
    got = session(fp16).run(None, {"input": _x().astype(np.float16)})[0]
    assert got.dtype == np.float16 and np.isfinite(got).all()


def test_fp16_refuses_an_fp16_model(tiny_vit):
    from vitdeploy.errors import VitdeployError

    fp16, _ = convert_fp16(onnx.load(str(tiny_vit)), keep_io_fp32=False)
    with pytest.raises(VitdeployError, match="already has FP16 inputs"):
        convert_fp16(fp16)


def _plugin_graph():
    """LayerNorm -> WindowAttention plugin -> LayerNorm -> MatMul: the converter cannot type the plugin alone."""
    rng = np.random.default_rng(0)
    c = 8
    inits = [
        helper.make_tensor("g", TensorProto.FLOAT, [c], np.ones(c, np.float32)),
        helper.make_tensor("b", TensorProto.FLOAT, [c], np.zeros(c, np.float32)),
        helper.make_tensor("qkv_w", TensorProto.FLOAT, [c, 3 * c], rng.standard_normal((c, 3 * c)).astype(np.float32).ravel()),
        helper.make_tensor("w", TensorProto.FLOAT, [c, 4], rng.standard_normal((c, 4)).astype(np.float32).ravel()),
    ]
    nodes = [
        helper.make_node("LayerNormalization", ["x", "g", "b"], ["ln1"], axis=-1, name="ln1"),
        helper.make_node("WindowAttention", ["ln1", "qkv_w"], ["attn"], domain="vitdeploy", name="wa",
                         plugin_namespace="vitdeploy", plugin_version="1"),
        helper.make_node("LayerNormalization", ["attn", "g", "b"], ["ln2"], axis=-1, name="ln2"),
        helper.make_node("MatMul", ["ln2", "w"], ["y"], name="head"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16, c])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 16, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("vitdeploy", 1)])


def test_plugin_nodes_become_fp16():
    fp16, summary = convert_fp16(_plugin_graph())
    types = tensor_types(fp16)
    wa = next(n for n in fp16.graph.node if n.op_type == "WindowAttention")
    assert wa.domain == "vitdeploy"
    assert all(types[i] == TensorProto.FLOAT16 for i in wa.input), [types.get(i) for i in wa.input]
    assert types[wa.output[0]] == TensorProto.FLOAT16
    assert summary["plugins_fp16"] == 1
    # The FP32 LayerNorm after the plugin reads it through a Cast to FP32 (the converter alone would not insert it).
    ln2 = next(n for n in fp16.graph.node if n.name == "ln2")
    producer = {o: n for n in fp16.graph.node for o in n.output}
    cast = producer[ln2.input[0]]
    assert cast.op_type == "Cast" and cast.input[0] == "attn"
    assert types[ln2.input[0]] == TensorProto.FLOAT


def run_cli(args, capsys) -> tuple[int, str, str]:
    """Run the real entry point (one-line errors, exit codes) in-process."""
    from vitdeploy.cli import main

    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = e.code
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_cli_convert(tiny_vit, tmp_path, capsys):
    out = tmp_path / "fp16.onnx"
    code, stdout, err = run_cli(["convert", str(tiny_vit), "-o", str(out), "--fp16"], capsys)
    assert code == 0, err
    assert "LayerNormalization×3" in stdout and "runs in ONNX Runtime" in stdout
    m = onnx.load(str(out))
    assert m.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert any(i.data_type == TensorProto.FLOAT16 for i in m.graph.initializer)

    code, _, err = run_cli(["convert", str(tiny_vit), "-o", str(tmp_path / "no.onnx")], capsys)
    assert code == 2 and err.strip() == "error: nothing to convert (pass --fp16)"
    assert not (tmp_path / "no.onnx").exists()
    code, _, err = run_cli(["convert", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "x.onnx"), "--fp16"], capsys)
    assert code == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1
    assert f"trtexec --onnx={out} --stronglyTyped" in stdout  # plugin-free: trtexec can build it


def test_cli_convert_plugin_graph_suggests_vitdeploy_build(tmp_path, capsys):
    """trtexec cannot load vitdeploy's Python plugins, so the Next block must not offer it for plugin graphs."""
    src, out = tmp_path / "plugin.onnx", tmp_path / "plugin.fp16.onnx"
    onnx.save(_plugin_graph(), str(src))
    code, stdout, err = run_cli(["convert", str(src), "-o", str(out), "--fp16"], capsys)
    assert code == 0, err
    assert f"vitdeploy build --onnx {out} -o {tmp_path}" in stdout and "trtexec" not in stdout


def test_rewritten_swin_fp16_and_int8_run_with_fp16_plugins(tmp_path):
    """A real WindowAttention graph (swin rewrite pass): plugins FP16 in both FP16 and INT8 graphs, running in ORT."""
    from timm.models.swin_transformer import SwinTransformer

    from vitdeploy.calibration.data import CalibrationData
    from vitdeploy.calibration.quantization import quantize_int8
    from vitdeploy.deploy.rewrite import load_pass
    from vitdeploy.deploy.rewrite.driver import run_pass

    torch.manual_seed(0)
    m = SwinTransformer(img_size=16, patch_size=2, window_size=4, num_classes=5, embed_dim=16, depths=(2,),
                        num_heads=(2,)).eval()
    fp32_path = tmp_path / "swin.onnx"
    export_onnx(m, torch.randn(2, 3, 16, 16), fp32_path, batch=BatchSpec.parse("1:2:8"))
    rewritten, report = run_pass(onnx.load(str(fp32_path)), load_pass("swin"), "plugin")
    assert report.replaced == 2
    plugin_path = tmp_path / "swin.plugins.onnx"
    onnx.save(rewritten, str(plugin_path))
    x = _x(4, seed=3)
    with torch.no_grad():
        ref = m(torch.from_numpy(x)).numpy()

    fp16, summary = convert_fp16(rewritten)
    assert summary["plugins_fp16"] == 2 and summary["fp16_ops"]["WindowAttention"] == 2
    got = session(fp16).run(None, {"input": x})[0]
    assert np.abs(got - ref).max() < 1e-2 * max(1.0, np.abs(ref).max())

    calib = CalibrationData(np.random.default_rng(4).standard_normal((16, 3, 16, 16)).astype(np.float32))
    qdq, _, s = quantize_int8(plugin_path, calib, "minmax", show_progress=False)
    assert s["precision"]["plugins_fp16"] == 2
    types = tensor_types(qdq)
    wa = [n for n in qdq.graph.node if n.op_type == "WindowAttention"]
    producer = {o: n for n in qdq.graph.node for o in n.output}
    for n in wa:  # the plugin reads FP16 activations, not Q/DQ
        assert types[n.input[0]] == TensorProto.FLOAT16
        assert producer[n.input[0]].op_type != "DequantizeLinear"
    got8 = session(qdq).run(None, {"input": x})[0]
    cos = (ref * got8).sum() / np.linalg.norm(ref) / np.linalg.norm(got8)
    assert cos > 0.99


def test_cli_fp16_io_graph_through_convert_accuracy_and_verify(tiny_vit, tmp_path, capsys):
    """`convert --no-keep-io-fp32` makes a graph with FP16 inputs; the commands that feed it must cast, not crash."""
    out = tmp_path / "fp16io.onnx"
    code, stdout, err = run_cli(["convert", str(tiny_vit), "-o", str(out), "--fp16", "--no-keep-io-fp32"], capsys)
    assert code == 0, err
    assert "runs in ONNX Runtime; vs FP32" in stdout
    assert onnx.load(str(out)).graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    np.savez(tmp_path / "val.npz", images=_x(4))
    code, stdout, err = run_cli(["accuracy", str(tiny_vit), str(out), "--accuracy-data", str(tmp_path / "val.npz")], capsys)
    assert code == 0, err
    assert "top-1 agreement" in stdout
    code, stdout, err = run_cli(["verify", str(tiny_vit), str(out), "--atol", "0.02", "--min-cosine", "0.999"], capsys)
    assert code == 0, err
    assert "match" in stdout


def _one_plugin_node_graph(op_type: str):
    """x -> Relu -> <plugin node of `op_type`, inputs as its spec declares> -> Relu -> y (FP32)."""
    from vitdeploy.plugins.ort import load_ort_face

    face = load_ort_face(op_type)
    spec = next(s for s in (getattr(face, "SPECS", None) or (face.SPEC,)) if s.name == op_type)
    inputs, inits = [], []
    for i, ts in enumerate(spec.inputs):
        if ts.kind == "float":
            inputs.append(helper.make_tensor_value_info(f"in{i}", TensorProto.FLOAT, [2, 4]))
        else:
            inits.append(helper.make_tensor(f"in{i}", TensorProto.INT32, [1], [1]))
    nodes = [helper.make_node("Relu", ["in0"], ["r0"], name="pre"),
             helper.make_node(op_type, ["r0", *[f"in{i}" for i in range(1, len(spec.inputs))]], ["plug"],
                              domain=spec.domain, name="plugin", plugin_namespace=spec.namespace, plugin_version=spec.version),
             helper.make_node("Relu", ["plug"], ["y"], name="post")]
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(spec.domain, 1)])


def _plugin_op_types() -> list[str]:
    from vitdeploy.plugins.registry import PLUGINS

    return [p.op_type for p in PLUGINS]


@pytest.mark.parametrize("op_type", _plugin_op_types())
def test_every_registered_plugin_node_is_fp16_and_checked(op_type):
    """Every plugin vitdeploy emits (HaloAttention was once left out of a hand-kept list): its float output gets
    a declared FP16 type, the summary counts it, and the FP16 plugin check guards it (a node kept FP32 is refused)."""
    from vitdeploy.errors import VitdeployError

    fp16, summary = convert_fp16(_one_plugin_node_graph(op_type))
    types = tensor_types(fp16)
    assert types["plug"] == TensorProto.FLOAT16
    assert summary["plugins_fp16"] == 1 and summary["fp16_ops"][op_type] == 1
    with pytest.raises(VitdeployError, match="plugin node plugin would not be FP16"):
        convert_fp16(_one_plugin_node_graph(op_type), fp32_nodes=["plugin"])
