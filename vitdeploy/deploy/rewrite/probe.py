"""Running graphs and pieces of graphs with ONNX Runtime, for the rewrite passes and their driver.

A pass *measures* its parameters instead of reading them off attributes: it runs the whole
graph once for the activations at its candidates' boundaries (`activations`), then runs a
candidate's nodes alone with chosen inputs and some intermediate tensors overridden
(`probe`: tensor -> tensor*0 + c keeps its shape whatever it is). The driver runs the same
pieces to verify a replacement (`standalone`, `run`). Every run goes through
`vitdeploy.onnxrt.session`, so plugin nodes run on their CPU reference.
"""
from __future__ import annotations

import contextlib
import contextvars

from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from vitdeploy.errors import VitdeployError

T = TypeVar("T")
R = TypeVar("R")


def static_feeds(model: onnx.ModelProto, batch: int = 2, seed: int = 0, dims: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Seeded random inputs for a graph's inputs; symbolic batch dims become `batch`."""
    rng = np.random.default_rng(seed)
    inits = {i.name for i in model.graph.initializer}
    feeds = {}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        t = inp.type.tensor_type
        shape = []
        for i, d in enumerate(t.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                shape.append(d.dim_value)
            elif dims and d.dim_param in dims:
                shape.append(dims[d.dim_param])
            elif i == 0:
                shape.append(batch)
            else:
                raise VitdeployError(
                    f"input '{inp.name}' has a symbolic dimension '{d.dim_param}' besides the batch",
                    "pass example inputs with --inputs FILE.npz",
                )
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)
        if np.issubdtype(dtype, np.floating):
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[inp.name] = rng.integers(0, 2, size=shape).astype(dtype)
    return feeds


def capture(model: onnx.ModelProto, names: list[str], feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Values of the named intermediate tensors (plus outputs) for `feeds`.

    The names are added to `model`'s outputs only while its session is made, then taken off again: no copy
    of the model (of a 2.5 GB ViT-H, a copy and its serialisation cost three times the weights)."""
    from vitdeploy.onnxrt import session

    outputs = model.graph.output
    kept = len(outputs)
    have = {o.name for o in outputs}
    try:
        for n in names:
            if n not in have:
                outputs.append(onnx.ValueInfoProto(name=n))
                have.add(n)
        sess = session(model)
    finally:
        del outputs[kept:]
    out_names = [o.name for o in sess.get_outputs()]
    return dict(zip(out_names, sess.run(None, feeds)))


_SOURCE: contextvars.ContextVar = contextvars.ContextVar("rewrite_graph_source", default=None)


@contextlib.contextmanager
def graph_source(graph: gs.Graph, model: onnx.ModelProto):
    """While a pass's `find` looks at `graph` (imported from `model`, not yet changed), `activations` runs
    `model` itself instead of exporting the graph again: one copy of the weights, not three."""
    token = _SOURCE.set((graph, model))
    try:
        yield
    finally:
        _SOURCE.reset(token)


def activations(graph: gs.Graph, tensors: Iterable[gs.Tensor], batch: int) -> dict[str, np.ndarray]:
    """The values of `tensors` when the whole graph runs on seeded random inputs of batch `batch`."""
    source = _SOURCE.get()
    model = source[1] if source is not None and source[0] is graph else gs.export_onnx(graph, do_type_check=False)
    names = sorted({t.name for t in tensors if not isinstance(t, gs.Constant)})
    return capture(model, names, static_feeds(model, batch=batch))


def measured(items: Iterable[T], measure: Callable[[T], tuple[R | None, str | None]], where: Callable[[T], str],
             notes: list[str]) -> Iterator[tuple[T, R]]:
    """(item, measure(item)) for every item its probe could measure; a note naming each one it could not.

    A probe that raises means the structure is not what the pass thinks it is: the item is
    reported and left alone, never a crash.
    """
    for item in items:
        try:
            result, why = measure(item)
        except Exception as e:
            result, why = None, f"probe failed ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
        if result is None:
            notes.append(f"{where(item)} not rewritten: {why}")
            continue
        yield item, result


def _as_model(g: gs.Graph, opset: int, domains: dict[str, int] | None = None) -> onnx.ModelProto:
    g.cleanup()
    model = gs.export_onnx(g, do_type_check=False)
    del model.opset_import[:]
    model.opset_import.append(onnx.helper.make_opsetid("", opset))
    for d, v in (domains or {}).items():
        model.opset_import.append(onnx.helper.make_opsetid(d, v))
    model.ir_version = min(model.ir_version, 10)
    return model


def probe(nodes: list[gs.Node], feeds: dict[str, np.ndarray], variants: list[tuple[dict[str, float], list[str]]],
          opset: int) -> list[list[np.ndarray]]:
    """Run copies of `nodes` in ONE ONNX Runtime session (one copy per variant).

    A variant is (overrides, fetch): `overrides` maps a tensor name to a constant c; in that copy the
    tensor is replaced by tensor*0 + c (same shape, whatever it is). Returns the fetched values.
    """
    from vitdeploy.onnxrt import session

    g = gs.Graph(opset=opset)
    shared: dict[str, gs.Tensor] = {}
    for k, v in feeds.items():
        shared[k] = gs.Variable(k, dtype=v.dtype, shape=list(v.shape))
    fetched: list[list[gs.Variable]] = []
    for i, (overrides, fetch) in enumerate(variants):
        local: dict[str, gs.Tensor] = {}

        def clone(t: gs.Tensor, i=i, local=local) -> gs.Tensor:
            if isinstance(t, gs.Constant):
                return shared.setdefault(t.name, gs.Constant(t.name, t.values))
            if t.name in shared or not t.name:
                return shared.get(t.name) or gs.Variable.empty()
            if t.name not in local:
                local[t.name] = gs.Variable(f"{t.name}__p{i}", dtype=t.dtype)
            return local[t.name]

        for n in nodes:
            outs = []
            for o in n.outputs:
                if o.name in overrides:
                    raw = gs.Variable(f"{o.name}__p{i}_raw")
                    zero = gs.Variable(f"{o.name}__p{i}_zero")
                    g.nodes.append(gs.Node("Mul", inputs=[raw, gs.Constant(f"{o.name}__p{i}_0", np.zeros((), np.float32))], outputs=[zero]))
                    g.nodes.append(gs.Node("Add", inputs=[zero, gs.Constant(f"{o.name}__p{i}_c", np.asarray(overrides[o.name], np.float32))],
                                           outputs=[clone(o)]))
                    outs.append(raw)
                else:
                    outs.append(clone(o))
            g.nodes.append(gs.Node(n.op, f"{n.name}__p{i}", dict(n.attrs), [clone(t) for t in n.inputs], outs, domain=n.domain))
        fetched.append([clone(gs.Variable(name)) for name in fetch])
    g.inputs = list(v for k, v in shared.items() if k in feeds)
    g.outputs = [t for ts in fetched for t in ts]
    for o in g.outputs:
        o.dtype = o.dtype or np.float32
    sess = session(_as_model(g, opset))
    names = [t.name for t in g.outputs]
    got = dict(zip(names, sess.run(names, {k: feeds[k] for k in (i.name for i in sess.get_inputs())})))
    return [[got[t.name] for t in ts] for ts in fetched]


def probe_once(nodes: list[gs.Node], feeds: dict[str, np.ndarray], fetch: list[str], opset: int,
               overrides: dict[str, float] | None = None) -> list[np.ndarray]:
    """`probe` with one variant."""
    return probe(nodes, feeds, [(overrides or {}, fetch)], opset)[0]


def standalone(nodes: list[gs.Node], inputs: list[gs.Variable], outputs: list[gs.Variable],
               values: dict[str, np.ndarray], opset: int, domains: dict[str, int]) -> onnx.ModelProto:
    """An ONNX model of just `nodes`, fed by `inputs` (typed from `values`)."""
    g = gs.Graph(opset=opset)
    mapping: dict[str, gs.Tensor] = {}

    def clone(t: gs.Tensor) -> gs.Tensor:
        if t.name in mapping:
            return mapping[t.name]
        if isinstance(t, gs.Constant):
            c = gs.Constant(t.name, t.values)
        elif t.name in values:
            c = gs.Variable(t.name, dtype=values[t.name].dtype, shape=list(values[t.name].shape))
        else:
            c = gs.Variable(t.name, dtype=t.dtype, shape=t.shape)
        mapping[t.name] = c
        return c

    for n in nodes:
        g.nodes.append(gs.Node(n.op, n.name, dict(n.attrs), [clone(i) for i in n.inputs], [clone(o) for o in n.outputs], domain=n.domain))
    g.inputs = [clone(i) for i in inputs if not isinstance(i, gs.Constant)]
    g.outputs = [clone(o) for o in outputs]
    for o in g.outputs:
        if o.dtype is None and o.name in values:
            o.dtype = values[o.name].dtype
    return _as_model(g, opset, domains)


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """All outputs of `model`, fed from `feeds` by input name (extra feeds are ignored)."""
    from vitdeploy.onnxrt import session

    sess = session(model)
    names = [i.name for i in sess.get_inputs()]
    return sess.run(None, {n: feeds[n] for n in names})
