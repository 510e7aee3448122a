"""Structural queries the rewrite passes share: who produces a tensor, what constant it holds, which
tensors carry activations, and walks through ops that only move data.

Passes match on structure, never on names: these are the questions they ask of an
onnx-graphsurgeon graph. Each pass keeps only its own knowledge (which ops it walks through,
what its core looks like); how to walk is written here once.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

# Ops that read a tensor only for its shape: a value read through them is not an activation.
SHAPE_OPS = frozenset({"Shape", "Size"})


def producer(t: gs.Tensor) -> gs.Node | None:
    """The node that writes `t` (None for graph inputs and constants)."""
    return t.inputs[0] if isinstance(t, gs.Variable) and t.inputs else None


def const_value(t: gs.Tensor) -> np.ndarray | None:
    """The value of a tensor that is an initializer, a Constant node's output, or an Identity of one; else None."""
    if isinstance(t, gs.Constant):
        return np.asarray(t.values)
    p = producer(t)
    if p is not None and p.op == "Constant" and "value" in p.attrs:
        v = p.attrs["value"]
        return np.asarray(v.values if isinstance(v, gs.Constant) else v)
    if p is not None and p.op == "Identity" and p.inputs:
        return const_value(p.inputs[0])
    return None


def const_nodes(t: gs.Tensor) -> list[gs.Node]:
    """The nodes (Constant, Identity) that write a constant tensor, producer first; [] for an initializer."""
    nodes = []
    p = producer(t)
    while p is not None:
        nodes.insert(0, p)
        p = producer(p.inputs[0]) if p.op == "Identity" and p.inputs else None
    return nodes


def scalar(t: gs.Tensor) -> float | None:
    """A one-element constant as a float, else None."""
    v = const_value(t)
    return float(v.reshape(-1)[0]) if v is not None and v.size == 1 else None


def match_each(nodes, match, notes: list[str]) -> list:
    """`match(node) -> (match | None, why | None)` over `nodes`: the matches, and a note for every why
    (a near-match the pass deliberately refused)."""
    found = []
    for n in nodes:
        m, why = match(n)
        if why:
            notes.append(why)
        if m is not None:
            found.append(m)
    return found


def activation_dependence(graph: gs.Graph) -> set[int]:
    """ids of tensors whose *values* depend on a graph input (shape-only dependence does not count).

    Shape/Size cut the dependence: TorchScript's shape arithmetic and timm's runtime-built masks
    and bias gathers then count as constants of the block. ONNX stores nodes topologically.
    """
    dep = {id(t) for t in graph.inputs}
    for n in graph.nodes:
        if n.op not in SHAPE_OPS and any(id(i) in dep for i in n.inputs):
            dep.update(id(o) for o in n.outputs)
    return dep


def through(t: gs.Tensor, ops) -> tuple[gs.Tensor, gs.Node | None]:
    """Follow first inputs upstream through `ops`: the first tensor something else writes, and that writer."""
    while True:
        p = producer(t)
        if p is None or p.op not in ops:
            return t, p
        t = p.inputs[0]


class Walker:
    """Walks over activations only: a tensor counts when its value depends on a graph input."""

    def __init__(self, graph: gs.Graph):
        self.graph = graph
        self.dep = activation_dependence(graph)
        self.outputs = {id(t) for t in graph.outputs}

    def is_dep(self, t: gs.Tensor) -> bool:
        return id(t) in self.dep

    def data_inputs(self, n: gs.Node) -> list[gs.Tensor]:
        return [i for i in n.inputs if self.is_dep(i)]

    def data_consumers(self, t: gs.Tensor) -> list[gs.Node]:
        return [n for n in t.outputs if n.op not in SHAPE_OPS]

    def up(self, starts: list[gs.Tensor], ops, one_input=frozenset()) -> tuple[list[gs.Tensor], list[gs.Node]]:
        """Follow data inputs upstream through `ops` (those in `one_input` only with one data input);
        returns the frontier tensors, where other compute begins, and the nodes passed."""
        frontier: dict[int, gs.Tensor] = {}
        seen: dict[int, gs.Node] = {}
        stack = list(starts)
        while stack:
            t = stack.pop()
            p = producer(t)
            ins = self.data_inputs(p) if p is not None else []
            if p is None or p.op not in ops or not ins or (p.op in one_input and len(ins) != 1):
                frontier[id(t)] = t
                continue
            if id(p) not in seen:
                seen[id(p)] = p
                stack.extend(ins)
        return list(frontier.values()), list(seen.values())

    def down(self, start: gs.Tensor, ops) -> tuple[list[gs.Tensor], list[gs.Node]]:
        """Follow consumers downstream through `ops`; the frontier is where compute resumes (or a graph output)."""
        frontier: dict[int, gs.Tensor] = {}
        seen: dict[int, gs.Node] = {}
        stack = [start]
        while stack:
            t = stack.pop()
            cons = self.data_consumers(t)
            if id(t) in self.outputs or any(n.op not in ops for n in cons) or not cons:
                frontier[id(t)] = t
            for n in cons:
                if n.op in ops and id(n) not in seen:
                    seen[id(n)] = n
                    stack.extend(o for o in n.outputs if self.data_consumers(o) or id(o) in self.outputs)
        return list(frontier.values()), list(seen.values())

    def subgraph(self, sources: list[gs.Tensor], y: gs.Tensor) -> tuple[list[gs.Node], list[gs.Variable]]:
        """Nodes computing y from `sources` (with their shape arithmetic and constant-only branches), in
        graph order, and any other activation they read (in practice only through Shape ops)."""
        order = {id(n): i for i, n in enumerate(self.graph.nodes)}
        src = {id(s) for s in sources}
        anc: dict[int, gs.Node] = {}
        stack = [y]
        while stack:  # ancestors of y, not crossing the sources
            t = stack.pop()
            if id(t) in src:
                continue
            p = producer(t)
            if p is None or id(p) in anc:
                continue
            anc[id(p)] = p
            stack.extend(p.inputs)
        desc: set[int] = set()
        stack = list(sources)
        while stack:  # descendants of the sources among those ancestors
            t = stack.pop()
            for n in t.outputs:
                if id(n) in anc and id(n) not in desc:
                    desc.add(id(n))
                    stack.extend(n.outputs)
        keep = {i: anc[i] for i in desc}
        extras: dict[int, gs.Variable] = {}
        stack = list(keep.values())
        while stack:  # shape arithmetic and constant-only branches feeding the between-set
            n = stack.pop()
            for t in n.inputs:
                if isinstance(t, gs.Constant) or id(t) in src or not t.name:
                    continue
                p = producer(t)
                if p is None:
                    extras[id(t)] = t
                    continue
                if id(p) in keep:
                    continue
                if self.is_dep(t):  # an activation from outside (TorchScript: read by a Shape op)
                    extras[id(t)] = t
                    continue
                keep[id(p)] = p
                stack.append(p)
        return sorted(keep.values(), key=lambda n: order.get(id(n), 0)), list(extras.values())


def between(nodes: list[gs.Node], src: gs.Tensor, dst: gs.Tensor) -> list[gs.Node]:
    """The nodes of `nodes` on a path from `src` to `dst`, plus constant-only nodes feeding them, in order."""
    by_out = {id(o): n for n in nodes for o in n.outputs}
    anc: dict[int, gs.Node] = {}
    stack = [dst]
    while stack:
        t = stack.pop()
        if t is src:
            continue
        p = by_out.get(id(t))
        if p is None or id(p) in anc:
            continue
        anc[id(p)] = p
        stack.extend(p.inputs)
    order = {id(n): i for i, n in enumerate(nodes)}
    return sorted(anc.values(), key=lambda n: order[id(n)])
