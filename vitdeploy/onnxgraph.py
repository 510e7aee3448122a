"""Facts about an ONNX graph that every stage asks, answered one way: its inputs and outputs, which
plugin nodes it holds, the element type of every tensor, its precision label, a topological order,
which value_info is stale.

A base module: it imports nothing from vitdeploy but the plugin registry (pure data) and the
errors, so the export, rewrite, precision, lint, build, bench and serving code all ask it.
"""
from __future__ import annotations

from pathlib import Path

from vitdeploy.errors import VitdeployError
from vitdeploy.plugins.registry import lookup


def io_signature(path: str | Path) -> dict:
    """Names, shapes (symbolic dims as strings) and dtypes of a graph's inputs and outputs."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)

    def describe(values):
        out = []
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_param if d.dim_param else (d.dim_value if d.HasField("dim_value") else "?") for d in t.shape.dim]
            out.append({"name": v.name, "shape": dims, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name})
        return out

    inits = {i.name for i in proto.graph.initializer}
    return {
        "inputs": describe([i for i in proto.graph.input if i.name not in inits]),
        "outputs": describe(proto.graph.output),
    }


def model_input(model) -> tuple[str, list]:
    """Name and shape (ints, or strings for symbolic dims) of an ONNX model's first input."""
    inp = model.graph.input[0]
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in inp.type.tensor_type.shape.dim]
    return inp.name, dims


def tensor_types(model) -> dict[str, int]:
    """Element type of every named tensor the graph declares (inputs, outputs, value_info, initializers)."""
    g = model.graph
    types = {i.name: i.data_type for i in g.initializer}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    types[n.output[0]] = a.t.data_type
    return types


def graph_precision(path_or_model) -> str:
    """The canonical precision label of an ONNX graph, from the graph alone.

    int8 when it holds Q/DQ nodes; fp16 / bf16 when weights or casts use that type; joined
    with '+' (an INT8 graph whose other layers are FP16 is 'int8+fp16'); 'fp32' otherwise.
    The same graph gets the same label whatever its file or directory is called.
    """
    import onnx

    from vitdeploy.artifact import load_onnx

    model = path_or_model if isinstance(path_or_model, onnx.ModelProto) else load_onnx(path_or_model, load_external_data=False)
    types = {t.data_type for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Cast":
            types.update(a.i for a in n.attribute if a.name == "to")
        elif n.op_type == "Constant":
            types.update(a.t.data_type for a in n.attribute if a.name == "value" and a.HasField("t"))
    parts = []
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node):
        parts.append("int8")
    if onnx.TensorProto.FLOAT16 in types:
        parts.append("fp16")
    if onnx.TensorProto.BFLOAT16 in types:
        parts.append("bf16")
    return "+".join(parts) or "fp32"


def toposort(model) -> None:
    """Sort nodes so every input is produced before it is read (stable; in place).

    The converter appends its Casts at the end of the node list; ONNX Runtime does
    not mind, but the ONNX checker and TensorRT's parser require topological order.
    """
    g = model.graph
    nodes = list(g.node)
    available = {i.name for i in g.input} | {i.name for i in g.initializer} | {""}
    producers = {o: idx for idx, n in enumerate(nodes) for o in n.output}
    order, done, pending = [], set(), list(range(len(nodes)))
    while pending:
        progressed, rest = False, []
        for idx in pending:
            ins = [i for i in nodes[idx].input if i not in available]
            if all(producers.get(i) in done or i not in producers for i in ins):
                order.append(idx)
                done.add(idx)
                available.update(nodes[idx].output)
                progressed = True
            else:
                rest.append(idx)
        if not progressed:
            raise VitdeployError("the graph has a cycle after FP16 conversion", "report the model")
        pending = rest
    del g.node[:]
    g.node.extend(nodes[i] for i in order)


def plugin_nodes(model) -> list[dict]:
    """vitdeploy / TensorRT stock plugin nodes in a graph: op, domain, namespace, version, count, kind."""
    seen: dict[tuple, dict] = {}
    for node in model.graph.node:
        row = lookup(node)
        if row is None:
            continue
        attrs = {a.name: _attr(a) for a in node.attribute if a.name in ("plugin_namespace", "plugin_version")}
        entry = seen.setdefault((node.op_type, node.domain), {
            "op": node.op_type, "domain": node.domain or "ai.onnx",
            "namespace": attrs.get("plugin_namespace", ""), "version": str(attrs.get("plugin_version", "1")),
            "count": 0, "kind": row.kind,
        })
        entry["count"] += 1
    return list(seen.values())


def plugin_node_counts(model) -> dict[str, int]:
    """op type -> how many plugin nodes of that type the graph holds."""
    counts: dict[str, int] = {}
    for p in plugin_nodes(model):
        counts[p["op"]] = counts.get(p["op"], 0) + p["count"]
    return counts


def _attr(a):
    import onnx

    v = onnx.helper.get_attribute_value(a)
    return v.decode() if isinstance(v, bytes) else v


def _describes_a_computed_tensor(model):
    """vi -> whether a value_info entry is live: a tensor some node produces, not an initializer or graph input."""
    g = model.graph
    declared = {i.name for i in g.initializer} | {i.name for i in g.input}
    produced = {o for n in g.node for o in n.output}
    return lambda vi: vi.name not in declared and vi.name in produced


def stale_value_info(model) -> list:
    """value_info entries that describe initializers or graph inputs (whose type the graph already states)
    or tensors nothing produces."""
    live = _describes_a_computed_tensor(model)
    return [vi for vi in model.graph.value_info if not live(vi)]


def strip_stale_value_info(model) -> int:
    """Drop the stale entries in place; returns how many.

    A rewrite leaves entries for tensors it removed; the exporter's entries for initializers make
    the FP16 converter type an FP32 initializer FP16 (and `onnx.checker` full_check fail).
    """
    import onnx

    g = model.graph
    live = _describes_a_computed_tensor(model)
    kept = [onnx.ValueInfoProto.FromString(vi.SerializeToString()) for vi in g.value_info if live(vi)]
    dropped = len(g.value_info) - len(kept)
    if dropped:
        del g.value_info[:]
        g.value_info.extend(kept)
    return dropped
