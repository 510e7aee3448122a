"""FP64 index/grid islands -> FP32: the normalisation graphs get before ONNX Runtime and the passes see them.

PyTorch's TorchScript exporter types Python scalars that come from tensor shapes as doubles, so a
static-shape export of Deformable DETR or Mask2Former computes its reference points and sampling
grids in FP64 (in PyTorch they are FP32). ONNX Runtime has no FP64 GridSample kernel, so such a
graph cannot even be loaded -- although the msda pass would remove those very GridSample nodes --
and TensorRT has no FP64 at all (its ONNX parser casts DOUBLE down to FLOAT; `lint` warns about it).

An *island* is a connected set of nodes joined by DOUBLE tensors. It is normalised (computed in
FP32) only when it computes indices or grids: DOUBLE enters through constants and Casts to DOUBLE,
and leaves only as a GridSample grid, through Shape/Size, as a Cast to an integer or bool type, or
through a comparison. An island whose doubles flow back into the data as values (a Cast to
FLOAT), reach a graph output or come from a graph input is left as exported and reported.

Each normalised island is measured on the graph's own activations: the island runs once in FP64
(as exported, ONNX Runtime or, for an op it lacks, onnx's reference evaluator) and once in FP32;
integer, bool and shape results must be identical, and grids must agree within GRID_BOUND
(grid units: 2 / W of a map W pixels wide per unit of pixel shift). The figures go into the report.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DOUBLE = TensorProto.DOUBLE
FLOAT = TensorProto.FLOAT
# |FP64 grid - FP32 grid| an island may show; a grid unit is half a map, so 1e-5 is at most
# 1e-5 * 1333 / 2 = 0.007 pixel on an 800x1333 input's stride-8 level (bilinear: a sample moves by
# that fraction of the difference of neighbouring pixels).
GRID_BOUND = 1e-5
_INT_TYPES = {TensorProto.INT8, TensorProto.INT16, TensorProto.INT32, TensorProto.INT64, TensorProto.UINT8,
              TensorProto.UINT16, TensorProto.UINT32, TensorProto.UINT64}
_STRICTNESS = {"shape": 0, "value": 1, "other": 1, "output": 1, "grid": 2, "index": 3, "mask": 3}
_COMPARISONS = {"Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "IsNaN", "IsInf"}


@dataclass
class Island:
    """One connected FP64 computation: its nodes (indices into graph.node), how DOUBLE enters and leaves."""

    nodes: list[int]
    tensors: set[str]
    initializers: list[str] = field(default_factory=list)
    entries: Counter = field(default_factory=Counter)
    exits: Counter = field(default_factory=Counter)  # kind -> count: grid, shape, index, mask, value, output, other
    exit_tensors: dict[str, str] = field(default_factory=dict)  # double tensor read by an exit -> kind
    blocked: str | None = None  # why it is kept FP64

    def summary(self, graph: onnx.GraphProto) -> dict:
        ops = Counter(graph.node[i].op_type for i in self.nodes)
        return {"nodes": len(self.nodes), "ops": dict(ops.most_common()), "entries": dict(self.entries),
                "exits": dict(self.exits)}


def _may_have_doubles(model: onnx.ModelProto) -> bool:
    """Whether any tensor of the graph can be FP64: a double input, initializer or constant, or an op told to
    make doubles (Cast `to`, a `dtype`); a graph with none of these has no FP64 tensor at all. Cheap: no
    shape inference, no weights read (most graphs stop here)."""
    g = model.graph
    if any(t.data_type == DOUBLE for t in g.initializer):
        return True
    if any(v.type.tensor_type.elem_type == DOUBLE for v in [*g.input, *g.value_info] if v.type.HasField("tensor_type")):
        return True
    for n in g.node:
        for a in n.attribute:
            if a.name in ("to", "dtype") and a.type == onnx.AttributeProto.INT and a.i == DOUBLE:
                return True
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == DOUBLE:
                return True
    return False


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every typed tensor, after shape inference on a light copy of the graph (types, dims and
    small constants; never the weights, so a model over 2 GiB is not copied or serialised whole)."""
    from vitdeploy.onnx_files import light_copy
    from vitdeploy.onnxgraph import tensor_types

    light = light_copy(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(light)
    except Exception:
        inferred = light
    return tensor_types(inferred)


def _exit_kind(node: onnx.NodeProto, tensor: str, types: dict[str, int]) -> str:
    if node.op_type == "GridSample" and len(node.input) > 1 and node.input[1] == tensor:
        return "grid"
    if node.op_type in ("Shape", "Size"):
        return "shape"
    if node.op_type in _COMPARISONS:
        return "mask"
    if node.op_type == "Cast":
        to = next(a.i for a in node.attribute if a.name == "to")
        if to in _INT_TYPES:
            return "index"
        if to == TensorProto.BOOL:
            return "mask"
        return "value"
    if node.op_type in ("ArgMax", "ArgMin", "NonZero"):
        return "index"
    return "other"


def find_fp64_islands(model: onnx.ModelProto) -> list[Island]:
    """The graph's FP64 islands (none for most graphs)."""
    g = model.graph
    if not _may_have_doubles(model):
        return []
    types = _elem_types(model)
    dbl = {name for name, t in types.items() if t == DOUBLE}
    if not dbl:
        return []
    producer = {o: i for i, n in enumerate(g.node) for o in n.output if o}
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(g.node):
        for x in n.input:
            if x:
                consumers.setdefault(x, []).append(i)
    inner = [i for i, n in enumerate(g.node) if any(o in dbl for o in n.output)]  # nodes that make doubles
    parent = {i: i for i in inner}

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in inner:  # a double tensor joins its producer with every double-producing consumer
        for x in g.node[i].input:
            if x in dbl and producer.get(x) in parent:
                a, b = find(i), find(producer[x])
                if a != b:
                    parent[a] = b
    groups: dict[int, list[int]] = {}
    for i in inner:
        groups.setdefault(find(i), []).append(i)
    inits = {t.name for t in g.initializer}
    graph_inputs = {i.name for i in g.input}
    graph_outputs = {o.name for o in g.output}
    islands = []
    for nodes in groups.values():
        isl = Island(sorted(nodes), {o for i in nodes for o in g.node[i].output if o in dbl})
        members = set(nodes)
        for i in nodes:
            n = g.node[i]
            for x in n.input:
                if x in dbl and x not in isl.tensors:
                    if x in inits:
                        isl.initializers.append(x)
                        isl.tensors.add(x)
                        isl.entries["initializer"] += 1
                    elif x in graph_inputs:
                        isl.entries["graph input"] += 1
                        isl.blocked = f"graph input {x} is DOUBLE (the interface would change)"
            if n.op_type == "Constant":
                isl.entries["constant"] += 1
            elif n.op_type == "Cast" and not any(x in dbl for x in n.input):
                isl.entries["cast"] += 1
        for t in sorted(isl.tensors):
            if t in graph_outputs:
                isl.exits["output"] += 1
                isl.blocked = f"graph output {t} is DOUBLE (the interface would change)"
            for c in consumers.get(t, []):
                if c in members:
                    continue
                kind = _exit_kind(g.node[c], t, types)
                isl.exits[kind] += 1
                # a tensor read by several exits is held to the strictest: index/mask exact, grid bounded
                if _STRICTNESS[kind] > _STRICTNESS.get(isl.exit_tensors.get(t), -1):
                    isl.exit_tensors[t] = kind
        if isl.blocked is None:
            if isl.exits["value"]:
                isl.blocked = "its FP64 results flow back into the data as values (Cast to a float type)"
            elif isl.exits["other"]:
                isl.blocked = "an FP64 result is read by an op that is not a grid, shape, index or comparison"
        islands.append(isl)
    return islands


def _to_float32(model: onnx.ModelProto, island: Island) -> None:
    """Rewrite one island in place to compute in FP32."""
    g = model.graph
    for i in island.nodes:
        n = g.node[i]
        for a in n.attribute:
            if n.op_type == "Cast" and a.name == "to" and a.i == DOUBLE:
                a.i = FLOAT
            elif a.name == "dtype" and a.type == onnx.AttributeProto.INT and a.i == DOUBLE:
                a.i = FLOAT
            elif a.type == onnx.AttributeProto.TENSOR and a.t.data_type == DOUBLE:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float32), a.t.name))
    for t in g.initializer:
        if t.name in island.initializers:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name))
    for vi in g.value_info:
        if vi.name in island.tensors and vi.type.tensor_type.elem_type == DOUBLE:
            vi.type.tensor_type.elem_type = FLOAT


def _subgraph(model: onnx.ModelProto, island: Island, inputs: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The island's nodes alone: fed by the other tensors they read, returning the tensors its exits read."""
    g = model.graph
    nodes = [g.node[i] for i in island.nodes]
    inits = [t for t in g.initializer if t.name in island.initializers]
    init_names = {t.name for t in inits}
    ins = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape))
           for k, v in inputs.items() if k not in init_names]
    outs = [helper.make_tensor_value_info(t, 0, None) for t in island.exit_tensors]
    graph = helper.make_graph(nodes, "fp64_island", ins, outs, initializer=inits)
    sub = helper.make_model(graph, opset_imports=list(model.opset_import))
    sub.ir_version = model.ir_version
    return sub


def _run_island(sub: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    names = [o.name for o in sub.graph.output]
    try:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(sub.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return sess.run(names, feeds)
    except Exception:  # an op without an FP64 kernel in ONNX Runtime: onnx's reference evaluator has them all
        from onnx.reference import ReferenceEvaluator

        return ReferenceEvaluator(sub).run(names, feeds)


def _island_inputs(model: onnx.ModelProto, island: Island) -> list[str]:
    g = model.graph
    made = {o for i in island.nodes for o in g.node[i].output}
    out = []
    for i in island.nodes:
        for x in g.node[i].input:
            if x and x not in made and x not in island.initializers and x not in out:
                out.append(x)
    return out


def _deviation(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| over the elements finite in both; inf when shapes or the NaN/inf pattern differ
    (an exported 1-pixel level computes linspace's step as 0/0 = NaN in either precision)."""
    if a.shape != b.shape:
        return float("inf")
    fa, fb = np.isfinite(a), np.isfinite(b)
    if not np.array_equal(fa, fb) or not np.array_equal(np.isnan(a), np.isnan(b)):
        return float("inf")
    if (a[~fa & ~np.isnan(a)] != b[~fb & ~np.isnan(b)]).any():  # infinities of different sign
        return float("inf")
    return float(np.abs(a[fa] - b[fb]).max(initial=0.0))


def measure_islands(original: onnx.ModelProto, normalized: onnx.ModelProto, islands: list[Island],
                    feeds: dict[str, np.ndarray]) -> list[dict]:
    """Per island: its exits computed in FP64 (as exported) and FP32 (normalised) on the graph's activations."""
    from vitdeploy.deploy.rewrite.probe import capture

    needed = sorted({x for isl in islands for x in _island_inputs(normalized, isl)})
    values = capture(normalized, needed, feeds)
    results = []
    for isl in islands:
        inputs = {x: values[x] for x in _island_inputs(normalized, isl)}
        want = _run_island(_subgraph(original, isl, inputs), inputs)
        got = _run_island(_subgraph(normalized, isl, inputs), inputs)
        rec = {"grid_max_abs_deviation": 0.0, "exact_exits": 0, "exits_checked": len(want)}
        for (t, kind), w, o in zip(isl.exit_tensors.items(), want, got):
            w64, o64 = np.asarray(w, np.float64), np.asarray(o, np.float64)
            if kind == "shape":
                same = w64.shape == o64.shape
                rec["exact_exits"] += int(same)
                if not same:
                    rec.setdefault("problems", []).append(f"{t}: shape {w64.shape} != {o64.shape}")
                continue
            dev = _deviation(w64, o64)
            if dev == 0.0:
                rec["exact_exits"] += 1
            if kind == "grid":
                rec["grid_max_abs_deviation"] = max(rec["grid_max_abs_deviation"], dev)
                if not dev <= GRID_BOUND:
                    rec.setdefault("problems", []).append(f"grid {t} deviates by {dev:.3g} > {GRID_BOUND:g}")
            elif dev != 0.0:  # the exit is cast to an index or compared: it must not move
                rec.setdefault("problems", []).append(f"{kind} {t} changes in FP32 (max deviation {dev:.3g})")
        results.append(rec)
    return results


def normalize_fp64(model: onnx.ModelProto, feeds: dict[str, np.ndarray] | None = None
                   ) -> tuple[onnx.ModelProto, dict | None]:
    """(model with its index/grid FP64 islands in FP32, report) -- the model itself and None when it has none.

    `feeds` (graph inputs) are what the islands are measured on; seeded random inputs by default.
    An island whose FP32 version does not hold (an index moves, a grid beyond GRID_BOUND) stays FP64.
    """
    islands = find_fp64_islands(model)
    if not islands:
        return model, None
    g = model.graph
    candidates = [isl for isl in islands if isl.blocked is None]
    normalized = onnx.ModelProto.FromString(model.SerializeToString())
    for isl in candidates:
        _to_float32(normalized, isl)
    measured: dict[int, dict] = {}
    if candidates:
        if feeds is None:
            from vitdeploy.deploy.rewrite.probe import static_feeds

            feeds = static_feeds(model)
        for isl, rec in zip(candidates, measure_islands(model, normalized, candidates, feeds)):
            measured[id(isl)] = rec
        refused = [isl for isl in candidates if measured[id(isl)].get("problems")]
        if refused:  # start again without the islands whose FP32 version does not hold
            for isl in refused:
                isl.blocked = "; ".join(measured[id(isl)]["problems"])
            normalized = onnx.ModelProto.FromString(model.SerializeToString())
            for isl in candidates:
                if isl.blocked is None:
                    _to_float32(normalized, isl)
    records = []
    for isl in islands:
        rec = isl.summary(g)
        rec["normalized"] = isl.blocked is None
        if isl.blocked:
            rec["kept_fp64"] = isl.blocked
        rec.update({k: v for k, v in measured.get(id(isl), {}).items() if k != "problems"})
        records.append(rec)
    done = [r for r in records if r["normalized"]]
    report = {
        "fp64_islands": len(islands),
        "normalized": len(done),
        "nodes": sum(r["nodes"] for r in done),
        "grid_max_abs_deviation": max((r.get("grid_max_abs_deviation", 0.0) for r in done), default=0.0),
        "grid_bound": GRID_BOUND,
        "exact": all(r.get("exact_exits") == r.get("exits_checked") for r in done),
        "islands": records,
    }
    return (normalized if done else model), report


def describe(report: dict | None) -> str:
    """One line for the console: what the normalisation did."""
    if not report:
        return "no FP64 islands"
    if not report["normalized"]:
        return f"{report['fp64_islands']} FP64 island(s) kept as exported"
    how = "exact" if report["exact"] else f"grids within {report['grid_max_abs_deviation']:.2g} of FP64"
    kept = report["fp64_islands"] - report["normalized"]
    return (f"{report['normalized']} FP64 index/grid island(s) ({report['nodes']} nodes) computed in FP32, {how}"
            + (f"; {kept} kept FP64" if kept else ""))
