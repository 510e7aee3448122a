"""Facts about an ONNX graph that every stage asks: which plugin nodes it holds, which value_info is stale.

A base module: it imports nothing from vitdeploy but the plugin registry (pure data), so the
rewrite, precision, lint, build, bench and serving code all ask it the same question the same way.
"""
from __future__ import annotations

from vitdeploy.plugins.registry import lookup


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
