"""The plugin registry: every row's declared faces exist and serve its op type, and every list of plugins is derived from it."""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from vitdeploy.plugins import registry
from vitdeploy.plugins.registry import PLUGINS

ROWS = {p.op_type: p for p in PLUGINS}


@pytest.mark.parametrize("op_type", list(ROWS))
def test_every_row_has_every_face_it_declares(op_type):
    row = ROWS[op_type]
    folder = Path(importlib.import_module("vitdeploy.plugins").__file__).parent / row.folder
    for face in row.faces:
        assert (folder / f"{face}.py").is_file(), f"{op_type}: {row.folder}/{face}.py is missing"
    spec = getattr(importlib.import_module(row.module("spec")), row.spec)
    assert (spec.name, spec.domain) == (op_type, row.domain)
    assert spec.namespace == ("" if row.stock else "vitdeploy")
    if "reference" in row.faces:
        importlib.import_module(row.module("reference"))
    if "ort" in row.faces:
        ort = importlib.import_module(row.module("ort"))
        assert spec in (getattr(ort, "SPECS", None) or (ort.SPEC,)), f"{op_type}: the ORT face does not serve its spec"
        assert callable(ort.compute)
    if "trt" in row.faces:  # registration imports tensorrt inside register(), never at import
        trt = importlib.import_module(row.module("trt"))
        assert callable(trt.register) and trt.SPEC is spec
    if "kernel" in row.faces:
        importlib.import_module(row.module("kernel"))
    from vitdeploy.deploy.rewrite import PASSES

    assert row.rewrite_pass in PASSES


def test_every_plugin_list_is_the_registry():
    from vitdeploy.calibration import precision
    from vitdeploy.plugins import ORT_FACES, TRT_FACES

    assert list(ORT_FACES) == [p.op_type for p in PLUGINS if "ort" in p.faces]
    assert list(TRT_FACES) == [p.op_type for p in PLUGINS if not p.stock]
    assert precision.PLUGIN_OPS == registry.OP_TYPES == set(ROWS)


def test_plugin_nodes_are_found_by_op_type_and_a_non_default_domain():
    import onnx
    from onnx import helper

    from vitdeploy.onnxgraph import plugin_node_counts, plugin_nodes

    nodes = [helper.make_node("HaloAttention", ["a"], ["b"], domain="vitdeploy", plugin_namespace="vitdeploy", plugin_version="1"),
             helper.make_node("HaloAttention", ["b"], ["c"], domain="vitdeploy", plugin_namespace="vitdeploy", plugin_version="1"),
             helper.make_node("MultiscaleDeformableAttnPlugin_TRT", ["c"], ["d"], domain="trt.plugins",
                              plugin_namespace="", plugin_version="2"),
             helper.make_node("WindowAttention", ["d"], ["e"]),  # default domain: a standard op name, not our plugin
             helper.make_node("Relu", ["e"], ["f"])]
    vi = helper.make_tensor_value_info
    model = helper.make_model(helper.make_graph(nodes, "g", [vi("a", onnx.TensorProto.FLOAT, [1])],
                                                [vi("f", onnx.TensorProto.FLOAT, [1])]))
    assert plugin_nodes(model) == [
        {"op": "HaloAttention", "domain": "vitdeploy", "namespace": "vitdeploy", "version": "1", "count": 2, "kind": "vitdeploy AOT"},
        {"op": "MultiscaleDeformableAttnPlugin_TRT", "domain": "trt.plugins", "namespace": "", "version": "2", "count": 1,
         "kind": "TensorRT stock"}]
    assert plugin_node_counts(model) == {"HaloAttention": 2, "MultiscaleDeformableAttnPlugin_TRT": 1}


def test_the_registry_is_pure_data():
    """Any layer may read it: it imports nothing from vitdeploy (nor onnx, torch, tensorrt)."""
    import ast

    tree = ast.parse(Path(registry.__file__).read_text())
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    imported += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert set(imported) <= {"__future__", "dataclasses"}, imported
