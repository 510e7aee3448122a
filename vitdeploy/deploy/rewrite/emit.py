"""The Emitter: builds one replacement's nodes and constants under names no other tensor or node has.

A graph rewritten before already holds names a pass emits, so every name is checked against
what the graph has (`taken`) and against what this replacement made so far.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from vitdeploy.deploy.rewrite.graph import const_value


def taken_names(graph: gs.Graph) -> set[str]:
    """Every tensor and node name of `graph` (gs.Graph.tensors() is keyed by name)."""
    return set(graph.tensors()) | {n.name for n in graph.nodes}


class Emitter:
    """Appends uniquely named nodes/constants for one replacement; `nodes` is the emission."""

    def __init__(self, tag: str, taken: set[str]):
        self.tag = tag
        self.taken = taken  # names already in the graph (a graph rewritten before has our names)
        self.nodes: list[gs.Node] = []
        self.count = 0

    def _name(self, what: str) -> str:
        self.count += 1
        while f"{self.tag}_{what}{self.count}" in self.taken:
            self.count += 1
        return f"{self.tag}_{what}{self.count}"

    def const(self, value, dtype=None) -> gs.Constant:
        value = np.asarray(value)
        if dtype is not None or value.dtype == np.float64:
            value = value.astype(dtype or np.float32)
        return gs.Constant(self._name("c"), np.ascontiguousarray(value))

    def op(self, op: str, inputs, attrs=None, n_out: int = 1, domain=None):
        outs = [gs.Variable(self._name(op.lower())) for _ in range(n_out)]
        self.nodes.append(gs.Node(op, self._name(op), dict(attrs or {}), list(inputs), outs, domain=domain))
        return outs[0] if n_out == 1 else outs

    def reshape(self, t, shape):
        return self.op("Reshape", [t, self.const(np.asarray(shape, np.int64))])

    def linear(self, t, w, b):
        """MatMul (+Add): reuses an initializer as is, else makes a constant of the value."""
        t = self.op("MatMul", [t, w if isinstance(w, gs.Constant) else self.const(_value(w))])
        if b is not None:
            t = self.op("Add", [t, b if isinstance(b, gs.Constant) else self.const(_value(b))])
        return t


def _value(t) -> np.ndarray:
    return t if isinstance(t, np.ndarray) else const_value(t)
