"""Facts about an ONNX graph that every stage asks: which plugin nodes it holds.

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
