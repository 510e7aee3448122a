"""`vitdeploy.onnxrt.session(path)`: an ONNX Runtime session for any graph vitdeploy writes.

Graphs with vitdeploy plugin nodes (or TensorRT stock plugin nodes vitdeploy
emits) run on the CPU through each plugin's reference implementation,
registered as an onnxruntime-extensions Python op. That op API serves one fixed
domain and FP32 only, so the graph is adapted in memory: plugin nodes move to
that domain and FP16 plugin inputs/outputs get casts around them. The file on
disk is never changed.

Every vitdeploy op is registered before the first session that loads the library
(`vitdeploy.plugins.register_ort_faces`): onnxruntime-extensions hands sessions pointers
into a vector that grows with each registration, so an op registered while a session is
open would leave that session dangling (the SIGSEGV of a process that opened a Swin and
then a ConViT graph). Any order of graphs, sessions kept or released, threads: all safe.
"""
from __future__ import annotations

import os
import threading
import weakref

import numpy as np

from vitdeploy.errors import VitdeployError


# Sessions this module created with onnxruntime-extensions loaded (they hold its op pointers).
_PLUGIN_SESSIONS: "weakref.WeakSet" = weakref.WeakSet()
_SESSIONS_LOCK = threading.Lock()


def _prepare_extensions() -> str:
    """Register every vitdeploy op (once), refuse if someone else grew the op table under open
    sessions, and return the library path to give the session options."""
    from onnxruntime_extensions import get_library_path

    from vitdeploy.plugins.ort import ort_ops_added_since_seal, register_ort_faces, seal_ort_ops

    register_ort_faces()
    with _SESSIONS_LOCK:
        added = ort_ops_added_since_seal()
        if added:
            if len(_PLUGIN_SESSIONS):
                raise VitdeployError(
                    f"{added} onnxruntime-extensions Python op(s) were registered outside vitdeploy while "
                    f"{len(_PLUGIN_SESSIONS)} vitdeploy plugin session(s) were open, which invalidates them",
                    "register your own onnx_op functions before the first vitdeploy.onnxrt.session",
                )
            seal_ort_ops()  # no session holds the old table: accept the new ops
    return get_library_path()


def _plugin_nodes(model):
    from vitdeploy.plugins.ort import load_ort_face

    found = []
    for node in model.graph.node:
        mod = load_ort_face(node.op_type)
        if mod is None:
            continue
        # A face module serves one spec (SPEC) or several node types sharing one reference (SPECS).
        specs = getattr(mod, "SPECS", None) or (mod.SPEC,)
        spec = next((s for s in specs if s.matches(node.op_type, node.domain)), None)
        if spec is not None:
            found.append((node, spec))
    return found


def adapt_for_ort(model):
    """Return a copy of `model` whose plugin nodes run as onnxruntime-extensions Python ops."""
    import onnx
    from onnx import helper

    from vitdeploy.plugins.spec import ORT_PYOP_DOMAIN

    model = onnx.ModelProto.FromString(model.SerializeToString())
    found = _plugin_nodes(model)
    if not found:
        return model, False
    new_nodes = []
    targets = {id(n): spec for n, spec in found}
    for node in model.graph.node:
        spec = targets.get(id(node))
        if spec is None:
            new_nodes.append(node)
            continue
        # FP32 islands: Cast float inputs up, run the reference, CastLike outputs back.
        float_inputs = [(i, name) for i, (name, ts) in enumerate(zip(node.input, spec.inputs)) if ts.kind == "float" and name]
        like = float_inputs[0][1] if float_inputs else None
        ins = list(node.input)
        for i, name in float_inputs:
            cast_out = f"{node.name or node.op_type}__ort_in{i}"
            new_nodes.append(helper.make_node("Cast", [name], [cast_out], to=onnx.TensorProto.FLOAT, name=cast_out))
            ins[i] = cast_out
        outs = []
        post = []
        for j, (name, ts) in enumerate(zip(node.output, spec.outputs)):
            if ts.kind == "float" and like is not None:
                tmp = f"{node.name or node.op_type}__ort_out{j}"
                outs.append(tmp)
                post.append(helper.make_node("CastLike", [tmp, like], [name], name=tmp + "_castlike"))
            else:
                outs.append(name)
        op = helper.make_node(node.op_type, ins, outs, name=node.name, domain=ORT_PYOP_DOMAIN)
        op.attribute.extend(spec.ort_attribute(a) for a in node.attribute)  # list attributes as strings
        new_nodes.append(op)
        new_nodes.extend(post)
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    if not any(o.domain == ORT_PYOP_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(ORT_PYOP_DOMAIN, 1))
    return model, True


def session(path_or_model, *, providers: list[str] | None = None, threads: int | None = None):
    """An `onnxruntime.InferenceSession` that can run every graph vitdeploy writes.

    `path_or_model` is a path or an `onnx.ModelProto`. Plugin nodes run on the CPU reference.
    """
    import onnxruntime as ort

    if isinstance(path_or_model, (str, os.PathLike)):
        from vitdeploy.artifact import load_onnx

        model = load_onnx(path_or_model)
    else:
        model = path_or_model
    model, has_plugins = adapt_for_ort(model)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    if has_plugins:
        so.register_custom_ops_library(_prepare_extensions())
    data = model.SerializeToString()
    try:
        sess = ort.InferenceSession(data, so, providers=providers or ["CPUExecutionProvider"])
    except Exception as e:
        msg = str(e).splitlines()[0][:300]
        raise VitdeployError(f"ONNX Runtime cannot load the graph: {msg}", "run 'vitdeploy doctor' and check the model") from None
    if has_plugins:
        with _SESSIONS_LOCK:
            _PLUGIN_SESSIONS.add(sess)
    return sess


def run(sess, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return sess.run(None, feeds)
