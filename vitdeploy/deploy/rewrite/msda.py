"""Pass `msda`: Deformable DETR's multi-scale deformable attention core -> one plugin node.

transformers exports each core (`MultiScaleDeformableAttention.forward`) as, per
feature level, a slice of the value tensor reshaped to [N*M, D, H, W] and a
GridSample on `2 * locations - 1`, then a stack of the samples, a multiply with
the attention weights, a sum and a reshape/transpose back to [N, Lq, M*D]. The
pass recognises that structure from the GridSample nodes outwards (op types,
edges, constant indices and axes -- never names), for both the dynamo and the
TorchScript exporter, and emits

    value [N,S,M,D], spatial_shapes [L,2] int32, level_start_index [L] int32,
    locations [N,Lq,M,L,P,2], weights [N,Lq,M,L,P]
      -> MultiscaleDeformableAttnPlugin_TRT (v1, or v2 for TensorRT >= 10.11)  (or vitdeploy's
         MultiscaleDeformableAttention)
      -> Reshape [0, 0, -1]  = [N, Lq, M*D], what output_proj consumes.

In "native" mode (graphs for TensorRT without Python-plugin support) the node is the
stock plugin's version 1, which those TensorRT versions ship; `msda_impl` is ignored there.

The value projection, the padding-mask `masked_fill`, the softmax and the
reference-point arithmetic stay in the graph. Spatial shapes and level starts
become INT32 constants where the export has them as constants (dynamo, fixed
resolution) and are computed from the graph's own shape tensors where it does
not (TorchScript with dynamic axes, dynamic resolution).
GridSample with anything other than bilinear / zeros padding / align_corners=0
is not rewritten: the plugin's sampling would differ.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from vitdeploy.deploy.rewrite.driver import Candidate, Emission, RewritePass
from vitdeploy.deploy.rewrite.graph import const_value, producer, scalar, through
from vitdeploy.plugins.msda.spec import spec_for

_VIEW_OPS = {"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity"}
_PLUGIN_SAMPLING = {"mode": ("bilinear", "linear"), "padding_mode": ("zeros",), "align_corners": (0,)}


class NotACore(Exception):
    """Structure that is not (or not exactly) a deformable attention core; the message says why."""


# ----------------------------------------------------------------------------- graph helpers

def _sole_consumer(t: gs.Tensor) -> gs.Node | None:
    """The only non-Shape consumer of `t` (TorchScript adds Shape nodes that read tensors for reshape targets)."""
    users = [n for n in t.outputs if n.op != "Shape"]
    return users[0] if len(users) == 1 else None


def _axis(node: gs.Node, default: int = 0) -> int:
    return int(node.attrs.get("axis", default))


# ----------------------------------------------------------------------------- the pattern

def _sampling_mismatch(gsn: gs.Node) -> str | None:
    attrs = {"mode": gsn.attrs.get("mode", "bilinear"), "padding_mode": gsn.attrs.get("padding_mode", "zeros"),
             "align_corners": int(gsn.attrs.get("align_corners", 0))}
    bad = [f"{k}={v}" for k, v in attrs.items() if v not in _PLUGIN_SAMPLING[k]]
    if not bad:
        return None
    return (f"GridSample {gsn.name} uses {', '.join(bad)}: the plugin samples bilinearly with zero padding and "
            "align_corners=0, so the semantics differ; core not rewritten")


def _stack_of(gsn: gs.Node) -> tuple[gs.Node, int, int]:
    """GridSample -> (Unsqueeze/Reshape)* -> Concat (torch.stack over levels): (Concat, input index, levels).

    With one feature level the stack has one input, and the dynamo exporter drops that Concat: the
    sample's views then feed the attention-weight multiply directly, and the GridSample is its own
    one-level stack.
    """
    t = gsn.outputs[0]
    while True:
        n = _sole_consumer(t)
        if n is None:
            raise NotACore(f"GridSample {gsn.name} output is not stacked with the other levels")
        if n.op == "Concat":
            return n, [i for i, x in enumerate(n.inputs) if x is t][0], len(n.inputs)
        if n.op == "Mul" and t is not gsn.outputs[0]:
            return gsn, 0, 1
        if n.op not in ("Unsqueeze", "Reshape", "Identity"):
            raise NotACore(f"GridSample {gsn.name} feeds {n.op}, not a stack over levels")
        t = n.outputs[0]


def _tail(stack: gs.Node) -> tuple[gs.Node, gs.Tensor, gs.Tensor]:
    """Concat -> view* -> Mul(weights) -> ReduceSum -> Reshape -> Transpose[0,2,1]: (Mul, weights operand, core output).

    `stack` is the Concat, or for one elided level the GridSample (its Unsqueeze is then a view here).
    """
    t = stack.outputs[0]
    while True:
        n = _sole_consumer(t)
        if n is None:
            raise NotACore("stacked samples have no single consumer")
        if n.op == "Mul":
            break
        if n.op not in ("Reshape", "Flatten", "Identity", "Unsqueeze"):
            raise NotACore(f"stacked samples feed {n.op}, not the attention-weight multiply")
        t = n.outputs[0]
    mul = n
    weights_in = mul.inputs[1] if mul.inputs[0] is t else mul.inputs[0]
    red = _sole_consumer(mul.outputs[0])
    if red is None or red.op != "ReduceSum":
        raise NotACore("weighted samples are not summed (no ReduceSum)")
    t = red.outputs[0]
    while True:
        n = _sole_consumer(t)
        if n is None:
            raise NotACore("the summed samples have no single consumer")
        if n.op == "Transpose" and list(n.attrs.get("perm", [])) == [0, 2, 1]:
            return mul, weights_in, n.outputs[0]
        if n.op not in ("Reshape", "Identity"):
            raise NotACore(f"the summed samples feed {n.op} before the [N, Lq, M*D] transpose")
        t = n.outputs[0]


def _weights_source(w: gs.Tensor) -> gs.Tensor:
    """[N*M, 1, Lq, L*P] <- Reshape <- Transpose[0,2,1,3,4] <- attention weights [N, Lq, M, L, P]."""
    t = w
    while True:
        p = producer(t)
        if p is None:
            break
        if p.op == "Transpose" and list(p.attrs.get("perm", [])) == [0, 2, 1, 3, 4]:
            return p.inputs[0]
        if p.op not in ("Reshape", "Flatten", "Identity", "Unsqueeze"):
            break
        t = p.inputs[0]
    raise NotACore("attention weights do not come from a [N, Lq, M, L, P] tensor transposed to heads-first")


def _level_of_grid(g: gs.Tensor) -> tuple[gs.Tensor, int]:
    """grid per level <- views <- Gather(axis=3, const index) <- sampling grid [N, Lq, M, L, P, 2]."""
    t, p = through(g, _VIEW_OPS)
    if p is None or p.op != "Gather" or _axis(p) != 3:
        raise NotACore("GridSample grid is not one level (Gather on axis 3) of a [N, Lq, M, L, P, 2] grid")
    idx = const_value(p.inputs[1])
    if idx is None or idx.size != 1:
        raise NotACore("GridSample grid level index is not a constant")
    return p.inputs[0], int(idx.reshape(-1)[0])


def _locations_of(grid: gs.Tensor) -> tuple[gs.Tensor, bool]:
    """`2 * loc - 1` -> (loc, False); any other producer -> (grid, True): the emission maps it back."""
    sub = producer(grid)
    if sub is not None and sub.op == "Sub" and scalar(sub.inputs[1]) == 1.0:
        mul = producer(sub.inputs[0])
        if mul is not None and mul.op == "Mul":
            a, b = mul.inputs
            if scalar(b) == 2.0 and const_value(a) is None:
                return a, False
            if scalar(a) == 2.0 and const_value(b) is None:
                return b, False
    return grid, True


def _value_level(v: gs.Tensor) -> tuple[gs.Tensor, object, object, object]:
    """GridSample input <- Reshape[N*M, D, H, W] <- views <- Slice/Split(axis 1) of value [N, S, M, D].

    Returns (value, start, H, W); each of start/H/W is an int or a tensor holding it.
    """
    p = producer(v)
    if p is None or p.op != "Reshape":
        raise NotACore("GridSample input is not a reshaped value map")
    h, w = _last_two_dims(p.inputs[1])
    t, src = through(p.inputs[0], _VIEW_OPS)
    if src is not None and src.op == "Slice":
        axes = const_value(src.inputs[3]) if len(src.inputs) > 3 else np.array([0])
        steps = const_value(src.inputs[4]) if len(src.inputs) > 4 else np.array([1])
        if axes is None or axes.size != 1 or int(axes[0]) != 1 or steps is None or int(steps.reshape(-1)[0]) != 1:
            raise NotACore("value level is not a unit-step slice along the token axis")
        start = const_value(src.inputs[1])
        return src.inputs[0], (int(start.reshape(-1)[0]) if start is not None else src.inputs[1]), h, w
    if src is not None and src.op == "Split":
        if _axis(src) != 1:
            raise NotACore("value is not split along the token axis")
        sizes = const_value(src.inputs[1]) if len(src.inputs) > 1 else None
        if sizes is None:
            raise NotACore("value split sizes are not constant")
        k = [i for i, o in enumerate(src.outputs) if o is t][0]
        return src.inputs[0], int(np.sum(sizes[:k])), h, w
    raise NotACore("GridSample input is not a level slice of one value tensor")


def _last_two_dims(shape: gs.Tensor) -> tuple[object, object]:
    """H and W from a Reshape target: a constant, or a Concat of 1-element pieces (constant or not)."""
    c = const_value(shape)
    if c is not None:
        if c.size != 4 or c[2] <= 0 or c[3] <= 0:
            raise NotACore("value map reshape is not [N*M, D, H, W]")
        return int(c[2]), int(c[3])
    p = producer(shape)
    if p is None or p.op != "Concat" or len(p.inputs) != 4:
        raise NotACore("value map reshape target is neither constant nor a 4-piece Concat")
    dims = []
    for piece in p.inputs[2:]:
        v = const_value(piece)
        dims.append(int(v.reshape(-1)[0]) if v is not None else piece)
    return dims[0], dims[1]


# ----------------------------------------------------------------------------- the pass

class MsdaPass(RewritePass):
    name = "msda"
    description = ("Deformable DETR multi-scale deformable attention -> TensorRT's MultiscaleDeformableAttnPlugin_TRT "
                   "(or vitdeploy's Triton MultiscaleDeformableAttention with impl=vitdeploy)")
    # plugin: the stock plugin at the version the target TensorRT has (option msda_stock_version, else
    # the TensorRT here decides: machine.stock_msda_version), or vitdeploy's Triton plugin with
    # msda_impl=vitdeploy; native: stock v1, which TensorRT without Python-plugin support (10.3) ships.
    modes = ("plugin", "native")

    def spec(self, mode: str = "plugin"):
        version = self.options.get("msda_stock_version")
        if version is None:
            from vitdeploy.machine import stock_msda_version, tensorrt_version

            version = stock_msda_version(tensorrt_version()).version
        return spec_for(self.options.get("msda_impl") or self.options.get("impl") or "stock", mode, version)

    def extra_opsets(self, mode: str) -> dict[str, int]:
        return {self.spec(mode).domain: 1}

    def find(self, graph: gs.Graph) -> tuple[list[Candidate], list[str]]:
        notes: list[str] = []
        groups: dict[int, tuple[gs.Node, int, dict[int, gs.Node]]] = {}
        order: list[int] = []
        for gsn in (n for n in graph.nodes if n.op == "GridSample"):
            try:
                stack, pos, n_levels = _stack_of(gsn)
            except NotACore as e:
                notes.append(str(e))
                continue
            if id(stack) not in groups:
                groups[id(stack)] = (stack, n_levels, {})
                order.append(id(stack))
            groups[id(stack)][2][pos] = gsn
        cands = []
        for k, key in enumerate(order):
            stack, n_levels, by_pos = groups[key]
            label = f"deformable attention core {k}"
            try:
                cands.append(self._match(label, stack, n_levels, by_pos))
            except NotACore as e:
                notes.append(f"{label}: {e}")
        return cands, notes

    def _match(self, label: str, stack: gs.Node, n_levels: int, by_pos: dict[int, gs.Node]) -> Candidate:
        if sorted(by_pos) != list(range(n_levels)):
            raise NotACore("the stack mixes GridSample outputs with other tensors")
        samplers = [by_pos[i] for i in range(n_levels)]
        for gsn in samplers:
            why = _sampling_mismatch(gsn)
            if why:
                raise NotACore(why)
        _, weights_in, out = _tail(stack)
        weights = _weights_source(weights_in)
        grid, value, levels = None, None, []
        for lvl, gsn in enumerate(samplers):
            g, idx = _level_of_grid(gsn.inputs[1])
            if idx != lvl:
                raise NotACore(f"level {lvl} samples grid level {idx}")
            v, start, h, w = _value_level(gsn.inputs[0])
            if grid is None:
                grid, value = g, v
            elif g is not grid or v is not value:
                raise NotACore("levels sample different grids or value tensors")
            levels.append((h, w, start))
        locations, from_grid = _locations_of(grid)
        shape_inputs = [x for lv in levels for x in lv if isinstance(x, gs.Tensor)]
        boundary = [value, locations, weights, *shape_inputs]
        nodes, extra = _region(out, boundary)
        return Candidate(label, nodes, [*boundary, *extra], [out],
                         params={"levels": levels, "from_grid": from_grid, "value": value,
                                 "locations": locations, "weights": weights})

    def emit(self, graph: gs.Graph, cand: Candidate, mode: str) -> Emission:
        spec = self.spec(mode)
        p = cand.params
        tag = cand.name.replace(" ", "_")
        nodes: list[gs.Node] = []
        dtype = p["value"].dtype if p["value"].dtype is not None else np.float32
        locations = p["locations"]
        if p["from_grid"]:  # locations = (grid + 1) / 2
            fdt = np.dtype(dtype)
            shifted = gs.Variable(f"{tag}_grid_plus1")
            locations_new = gs.Variable(f"{tag}_locations")
            nodes.append(gs.Node("Add", f"{tag}_grid_add", inputs=[locations, gs.Constant(f"{tag}_one", np.array(1, fdt))], outputs=[shifted]))
            nodes.append(gs.Node("Mul", f"{tag}_grid_half", inputs=[shifted, gs.Constant(f"{tag}_half", np.array(0.5, fdt))], outputs=[locations_new]))
            locations = locations_new
        shapes, starts = self._level_tensors(tag, p["levels"], nodes)
        raw = gs.Variable(f"{tag}_msda", dtype=dtype)
        nodes.append(gs.Node(spec.name, f"{tag}_{spec.name}", spec.node_attrs(),
                             inputs=[p["value"], shapes, starts, locations, p["weights"]], outputs=[raw], domain=spec.domain))
        out = gs.Variable(f"{tag}_out", dtype=dtype)
        nodes.append(gs.Node("Reshape", f"{tag}_merge_heads",
                             inputs=[raw, gs.Constant(f"{tag}_merge_shape", np.array([0, 0, -1], np.int64))], outputs=[out]))
        return Emission(nodes, [out])

    @staticmethod
    def _level_tensors(tag: str, levels, nodes: list[gs.Node]) -> tuple[gs.Tensor, gs.Tensor]:
        """spatial_shapes [L,2] and level_start_index [L] as INT32: constants, or computed from the graph's shape tensors."""
        if all(isinstance(x, int) for lv in levels for x in lv):
            return (gs.Constant(f"{tag}_spatial_shapes", np.array([[h, w] for h, w, _ in levels], np.int32)),
                    gs.Constant(f"{tag}_level_start_index", np.array([s for _, _, s in levels], np.int32)))

        def as_i64_1d(x, name):
            if isinstance(x, int):
                return gs.Constant(name, np.array([x], np.int64))
            o = gs.Variable(f"{name}_1d")
            nodes.append(gs.Node("Reshape", f"{name}_reshape", inputs=[x, gs.Constant(f"{name}_shape", np.array([1], np.int64))], outputs=[o]))
            c = gs.Variable(f"{name}_i64")
            nodes.append(gs.Node("Cast", f"{name}_cast", {"to": 7}, inputs=[o], outputs=[c]))
            return c

        hw = [as_i64_1d(x, f"{tag}_l{i}_{k}") for i, (h, w, _) in enumerate(levels) for k, x in (("h", h), ("w", w))]
        st = [as_i64_1d(s, f"{tag}_l{i}_start") for i, (_, _, s) in enumerate(levels)]
        out = []
        for name, parts, shape in (("spatial_shapes", hw, [-1, 2]), ("level_start_index", st, [-1])):
            cat, resh, i32 = gs.Variable(f"{tag}_{name}_cat"), gs.Variable(f"{tag}_{name}_2d"), gs.Variable(f"{tag}_{name}", dtype=np.int32)
            nodes.append(gs.Node("Concat", f"{tag}_{name}_concat", {"axis": 0}, inputs=parts, outputs=[cat]))
            nodes.append(gs.Node("Reshape", f"{tag}_{name}_reshape", inputs=[cat, gs.Constant(f"{tag}_{name}_shape", np.array(shape, np.int64))], outputs=[resh]))
            nodes.append(gs.Node("Cast", f"{tag}_{name}_int32", {"to": 6}, inputs=[resh], outputs=[i32]))
            out.append(i32)
        return out[0], out[1]


def _region(out: gs.Tensor, boundary: list[gs.Tensor]) -> tuple[list[gs.Node], list[gs.Tensor]]:
    """Nodes strictly between `boundary` and `out`, plus the other tensors they read (extra inputs).

    A node belongs to the core when it is an ancestor of `out` and either descends
    from a boundary tensor or computes only from constants. Ancestors that do not
    (e.g. TorchScript's shape arithmetic on other tensors) stay outside; their
    outputs become extra inputs of the candidate.
    """
    stop = {id(t) for t in boundary}
    ancestors: list[gs.Node] = []
    seen: set[int] = set()
    todo = [out]
    while todo:
        t = todo.pop()
        if id(t) in stop or isinstance(t, gs.Constant):
            continue
        p = producer(t)
        if p is None or id(p) in seen:
            continue
        seen.add(id(p))
        ancestors.append(p)
        todo.extend(p.inputs)
    inside: set[int] = set()
    changed = True
    while changed:  # fixed point over the (small) ancestor set
        changed = False
        for n in ancestors:
            if id(n) in inside:
                continue
            feeds = [i for i in n.inputs if not isinstance(i, gs.Constant)]
            if not feeds or any(id(i) in stop or id(producer(i)) in inside for i in feeds):
                inside.add(id(n))
                changed = True
    nodes = [n for n in ancestors if id(n) in inside]
    extra, have = [], set(stop)
    for n in nodes:
        for i in n.inputs:
            if isinstance(i, gs.Constant) or id(i) in have:
                continue
            p = producer(i)
            if p is None or id(p) not in inside:
                extra.append(i)
                have.add(id(i))
    return nodes, extra

