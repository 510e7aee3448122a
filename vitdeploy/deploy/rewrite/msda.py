"""Pass `msda`: multi-scale deformable attention cores -> one plugin node (or TensorRT's stock plugin).

Two forms of the core are recognised, from their sampling nodes outwards (op types, edges,
constant indices and axes -- never names), for both the dynamo and the TorchScript exporter:

* Deformable DETR's `multi_scale_deformable_attention` (also RT-DETR's decoder and Mask2Former's
  pixel decoder): per level a slice of value [N, S, M, D] reshaped to [N*M, D, H, W], a GridSample on
  level l of the grid `2 * loc - 1` ([N, Lq, M, L, P, 2], Gather on axis 3), then a stack of the
  samples, a multiply with the attention weights [N, Lq, M, L, P] (transposed heads-first), a sum and
  a reshape/transpose back to [N, Lq, M*D];
* RT-DETR v2 / D-FINE's `multi_scale_deformable_attention_v2`: value transposed to [N*M, D, S] and
  sliced per level; the grid [N, Lq, M, sum(P_l), 2] transposed heads-first and split per level with
  `num_points_list` (D-FINE: e.g. [3, 6, 3]); each level sampled by a GridSample ("default") or, with
  `decoder_method="discrete"`, by a Gather of the pixel clamp(int(loc * size + 0.5)); the samples
  concatenated along the points, weighted by [N, Lq, M, sum(P_l)], summed.

The matchers step through Casts (a TorchScript export computes grids in FP64; `deploy.normalize`
casts those islands to FP32 before the passes, a hand-edited graph may cast each grid itself).

Emission, per core (what each became, and why, is in the pass report's notes):
  plugin mode, --msda-impl stock: TensorRT's stock MultiscaleDeformableAttnPlugin_TRT (v1, or v2 for
      TensorRT >= 10.11) where its semantics are exactly the core's -- bilinear sampling and one P for
      every level (the v2 layout is reshaped to [N, Lq, M, L, P, 2], a free view); otherwise vitdeploy's
      MultiscaleDeformableAttention with `num_points` / `method` attributes (the stock plugin has no
      per-level counts and no discrete sampling);
  plugin mode, --msda-impl vitdeploy: vitdeploy's plugin for every core;
  native mode (TensorRT without Python plugins): the stock plugin's version 1; per-level counts are
      padded to the largest with zero attention weights (exact: a zero weight adds exactly zero);
      discrete sampling becomes plain ONNX (GatherElements of the clamped pixels, a weighted sum).
followed by Reshape [0, 0, -1] = [N, Lq, M*D], what output_proj consumes.

The value projection, the padding-mask `masked_fill`, the softmax and the reference-point / offset
arithmetic (RT-DETR v2's offset scale, D-FINE's 1/P scaling) stay in the graph. Spatial shapes and
level starts become INT32 constants where the export has them as constants and are computed from the
graph's own shape tensors where it does not (TorchScript with dynamic axes, dynamic resolution).
GridSample with anything other than bilinear / zeros padding / align_corners=0 is not rewritten.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from vitdeploy.deploy.rewrite.driver import Candidate, Emission, RewritePass
from vitdeploy.deploy.rewrite.emit import Emitter, taken_names
from vitdeploy.deploy.rewrite.graph import const_value, producer, scalar, through
from vitdeploy.plugins.msda.spec import STOCK_V1_SPEC, VITDEPLOY_SPEC, spec_for, stock_compatible, vitdeploy_attrs


_VIEW_OPS = {"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity"}
_FLOAT_CAST = {"Cast"}  # the matchers step through Casts (a grid cast from FP64 by hand, or kept FP16)
_PLUGIN_SAMPLING = {"mode": ("bilinear", "linear"), "padding_mode": ("zeros",), "align_corners": (0,)}
_HEADS_FIRST = {5: [0, 2, 1, 3, 4], 4: [0, 2, 1, 3]}  # weights [N, Lq, M, L, P] / [N, Lq, M, sum(P)]


class NotACore(Exception):
    """Structure that is not (or not exactly) a deformable attention core; the message says why."""


def _sole_consumer(t: gs.Tensor) -> gs.Node | None:
    """The only non-Shape consumer of `t` (TorchScript adds Shape nodes that read tensors for reshape targets)."""
    users = [n for n in t.outputs if n.op != "Shape"]
    return users[0] if len(users) == 1 else None


def _axis(node: gs.Node, default: int = 0) -> int:
    return int(node.attrs.get("axis", default))


@dataclass
class Sampler:
    """One level's sampling: the node whose output is the level's samples [N*M, D, Lq, P_l]."""

    node: gs.Node  # GridSample, or the Gather of the discrete form
    out: gs.Tensor  # the samples, as they enter the stack
    value_map: gs.Tensor  # [N*M, D, H, W]
    grid: gs.Tensor | None  # the level's grid (default: GridSample's grid input; discrete: found upstream)
    method: str


@dataclass
class Level:
    h: object
    w: object
    start: object
    points: int | None = None  # v2 layout: from the split sizes


@dataclass
class Core:
    stack: gs.Node
    samplers: list[Sampler] = field(default_factory=list)


# ----------------------------------------------------------------------------- samplers

def _sampling_mismatch(gsn: gs.Node) -> str | None:
    attrs = {"mode": gsn.attrs.get("mode", "bilinear"), "padding_mode": gsn.attrs.get("padding_mode", "zeros"),
             "align_corners": int(gsn.attrs.get("align_corners", 0))}
    bad = [f"{k}={v}" for k, v in attrs.items() if v not in _PLUGIN_SAMPLING[k]]
    if not bad:
        return None
    return (f"GridSample {gsn.name} uses {', '.join(bad)}: the plugin samples bilinearly with zero padding and "
            "align_corners=0, so the semantics differ; core not rewritten")


def _discrete_sampler(g: gs.Node) -> Sampler | None:
    """transformers' discrete sampling of one level: value_l[idx, :, y, x] exports as Gather(axis 0) of the
    level map flattened to [N*M*H*W, D] (Reshape [N*M, D, H, W] -> Transpose [0, 2, 3, 1] -> Flatten), then
    Reshape -> Transpose [0, 2, 1] -> Reshape to [N*M, D, Lq, P]. None when `g` is not that."""
    if g.op != "Gather" or _axis(g) != 0:
        return None
    t, p = g.inputs[0], producer(g.inputs[0])
    if p is None or p.op not in ("Flatten", "Reshape"):
        return None
    tr = producer(p.inputs[0])
    if tr is None or tr.op != "Transpose" or list(tr.attrs.get("perm", [])) != [0, 2, 3, 1]:
        return None
    vmap = tr.inputs[0]
    vr = producer(vmap)
    if vr is None or vr.op != "Reshape":
        return None
    out = g.outputs[0]
    for _ in range(4):  # Reshape [N*M, Lq*P, D] -> Transpose [0, 2, 1] -> Reshape [N*M, D, Lq, P]
        n = _sole_consumer(out)
        if n is None or n.op not in ("Reshape", "Transpose", "Identity"):
            break
        out = n.outputs[0]
    return Sampler(g, out, vmap, None, "discrete")


def _samplers(graph: gs.Graph, notes: list[str]) -> list[Sampler]:
    found = []
    for n in graph.nodes:
        if n.op == "GridSample":
            found.append(Sampler(n, n.outputs[0], n.inputs[0], n.inputs[1], "default"))
        else:
            s = _discrete_sampler(n)
            if s is not None:
                found.append(s)
    return found


def _stack_of(s: Sampler) -> tuple[gs.Node, int, int]:
    """samples -> (Unsqueeze/Reshape)* -> Concat (the levels' stack): (Concat, input index, levels).

    With one feature level the stack has one input, and the dynamo exporter drops that Concat: the
    sample's views then feed the attention-weight multiply directly, and the sampler is its own
    one-level stack.
    """
    t = s.out
    while True:
        n = _sole_consumer(t)
        if n is None:
            raise NotACore(f"{s.node.op} {s.node.name} output is not stacked with the other levels")
        if n.op == "Concat":
            return n, [i for i, x in enumerate(n.inputs) if x is t][0], len(n.inputs)
        if n.op == "Mul" and (t is not s.node.outputs[0] or s.method == "discrete"):
            return s.node, 0, 1
        if n.op not in ("Unsqueeze", "Reshape", "Identity"):
            raise NotACore(f"{s.node.op} {s.node.name} feeds {n.op}, not a stack over levels")
        t = n.outputs[0]


def _tail(stack: gs.Node, first_out: gs.Tensor) -> tuple[gs.Node, gs.Tensor, gs.Tensor]:
    """stack -> view* -> Mul(weights) -> ReduceSum -> Reshape -> Transpose[0,2,1]: (Mul, weights operand, core output)."""
    t = stack.outputs[0] if stack.op == "Concat" else first_out
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


def _weights_source(w: gs.Tensor) -> tuple[gs.Tensor, int]:
    """[N*M, 1, Lq, L*P] <- Reshape <- Transpose heads-first <- weights [N, Lq, M, L, P] or [N, Lq, M, sum(P)]."""
    t = w
    while True:
        p = producer(t)
        if p is None:
            break
        perm = list(p.attrs.get("perm", [])) if p.op == "Transpose" else None
        if perm in _HEADS_FIRST.values():
            return p.inputs[0], len(perm)
        if p.op not in ("Reshape", "Flatten", "Identity", "Unsqueeze", "Cast"):
            break
        t = p.inputs[0]
    raise NotACore("attention weights do not come from a [N, Lq, M, L, P] or [N, Lq, M, sum(P)] tensor "
                   "transposed to heads-first")


# ----------------------------------------------------------------------------- grids

def _level_grid(g: gs.Tensor) -> tuple[gs.Tensor, int, int | None, str]:
    """The level's grid, traced to the core's grid: (grid, level index or points offset, points or None, layout).

    layout "levels": Gather(axis 3, const l) of [N, Lq, M, L, P, 2] (Deformable DETR);
    layout "points": output k of a Split (axis -2) of [N*M, Lq, sum(P), 2], itself the heads-first
    transpose of [N, Lq, M, sum(P), 2] (RT-DETR v2 / D-FINE), or a Slice of it on that axis.
    """
    t, p = through(g, _VIEW_OPS | _FLOAT_CAST)
    if p is not None and p.op == "Gather" and _axis(p) == 3:
        idx = const_value(p.inputs[1])
        if idx is None or idx.size != 1:
            raise NotACore("GridSample grid level index is not a constant")
        return _through_casts(p.inputs[0]), int(idx.reshape(-1)[0]), None, "levels"
    if p is not None and p.op == "Split" and _axis(p) in (2, -2):
        sizes = const_value(p.inputs[1]) if len(p.inputs) > 1 else None
        if sizes is None:
            raise NotACore("the grid's per-level split sizes are not constant")
        k = [i for i, o in enumerate(p.outputs) if o is t][0]
        return _heads_first_grid(p.inputs[0]), int(np.sum(sizes[:k])), int(sizes[k]), "points"
    if p is not None and p.op == "Slice":
        axes = const_value(p.inputs[3]) if len(p.inputs) > 3 else None
        start, end = const_value(p.inputs[1]), const_value(p.inputs[2])
        steps = const_value(p.inputs[4]) if len(p.inputs) > 4 else np.array([1])
        if (axes is not None and axes.size == 1 and int(axes[0]) in (2, -2) and start is not None and end is not None
                and steps is not None and int(steps.reshape(-1)[0]) == 1):
            s0, e0 = int(start.reshape(-1)[0]), int(end.reshape(-1)[0])
            return _heads_first_grid(p.inputs[0]), s0, e0 - s0, "points"
    raise NotACore("the sampling grid is not one level of a [N, Lq, M, L, P, 2] grid (Gather on axis 3) or of a "
                   "[N, Lq, M, sum(P), 2] grid (Split of its points)")


def _through_casts(t: gs.Tensor) -> gs.Tensor:
    return through(t, _FLOAT_CAST)[0]


def _heads_first_grid(t: gs.Tensor) -> gs.Tensor:
    """[N*M, Lq, sum(P), 2] <- Reshape <- Transpose [0, 2, 1, 3, 4] <- grid [N, Lq, M, sum(P), 2]."""
    x, p = through(t, {"Reshape", "Identity"} | _FLOAT_CAST)
    if p is None or p.op != "Transpose" or list(p.attrs.get("perm", [])) != [0, 2, 1, 3, 4]:
        raise NotACore("the per-level grids do not split a [N, Lq, M, sum(P), 2] grid transposed heads-first")
    return _through_casts(p.inputs[0])


_INDEX_OPS = {"Add", "Sub", "Mul", "Div", "Gather", "Reshape", "Concat", "Unsqueeze", "Squeeze", "Clip", "Max", "Min",
              "Cast", "Floor", "Identity", "Transpose", "Flatten"}  # how an exported pixel index is computed


def _discrete_grid(s: Sampler, limit: int = 200) -> tuple[gs.Tensor, int, int | None, str]:
    """The level grid the discrete form's pixel index is computed from: breadth first upstream of the Gather's
    indices through index arithmetic (not through shape ops), to the first float tensor that is one level of
    the core's grid."""
    from collections import deque

    seen, todo = set(), deque([s.node.inputs[1]])
    while todo and len(seen) < limit:
        t = todo.popleft()
        if id(t) in seen or isinstance(t, gs.Constant):
            continue
        seen.add(id(t))
        p = producer(t)
        if p is None:
            continue
        if p.op in ("Split", "Slice") and np.dtype(t.dtype or np.float32).kind == "f":
            try:
                return _level_grid(t)
            except NotACore:
                pass
        if p.op in _INDEX_OPS:
            todo.extend(i for i in p.inputs if not isinstance(i, gs.Constant))
    raise NotACore(f"discrete sampling at {s.node.name}: no per-level grid found upstream of its pixel index")


def _locations_of(grid: gs.Tensor, method: str) -> tuple[gs.Tensor, bool]:
    """default: `2 * loc - 1` -> (loc, False); any other producer -> (grid, True): the emission maps it back.
    discrete: transformers samples the locations themselves -> (grid, False)."""
    if method == "discrete":
        return grid, False
    sub = producer(grid)
    if sub is not None and sub.op == "Sub" and scalar(sub.inputs[1]) == 1.0:
        mul = producer(sub.inputs[0])
        if mul is not None and mul.op == "Mul":
            a, b = mul.inputs
            if scalar(b) == 2.0 and const_value(a) is None:
                return _through_casts(a), False
            if scalar(a) == 2.0 and const_value(b) is None:
                return _through_casts(b), False
    return grid, True


# ----------------------------------------------------------------------------- value

def _value_level(vmap: gs.Tensor) -> tuple[gs.Tensor, object, object, object]:
    """The level map [N*M, D, H, W] <- Reshape <- a level slice of value: Slice/Split on axis 1 of value
    [N, S, M, D] (Deformable DETR), or on the last axis of value transposed to [N*M, D, S] (v2).

    Returns (value [N, S, M, D], start, H, W); each of start/H/W is an int or a tensor holding it.
    """
    p = producer(vmap)
    if p is None or p.op != "Reshape":
        raise NotACore("the sampled map is not a reshaped value map")
    h, w = _last_two_dims(p.inputs[1])
    t, src = through(p.inputs[0], _VIEW_OPS)
    if src is None or src.op not in ("Slice", "Split"):
        raise NotACore("the sampled map is not a level slice of one value tensor")
    if src.op == "Slice":
        axes = const_value(src.inputs[3]) if len(src.inputs) > 3 else np.array([0])
        steps = const_value(src.inputs[4]) if len(src.inputs) > 4 else np.array([1])
        if axes is None or axes.size != 1 or steps is None or int(steps.reshape(-1)[0]) != 1:
            raise NotACore("value level is not a unit-step slice along one axis")
        axis = int(axes[0])
        start = const_value(src.inputs[1])
        start = int(start.reshape(-1)[0]) if start is not None else src.inputs[1]
    else:
        axis = _axis(src)
        sizes = const_value(src.inputs[1]) if len(src.inputs) > 1 else None
        if sizes is None:
            raise NotACore("value split sizes are not constant")
        k = [i for i, o in enumerate(src.outputs) if o is t][0]
        start = int(np.sum(sizes[:k]))
    if axis == 1:
        return src.inputs[0], start, h, w
    if axis in (2, -1):
        return _value_of_heads_first(src.inputs[0]), start, h, w
    raise NotACore(f"value is sliced along axis {axis}, not the token axis")


def _value_of_heads_first(t: gs.Tensor) -> gs.Tensor:
    """[N*M, D, S] <- Reshape <- Transpose [0, 2, 3, 1] <- value [N, S, M, D] (RT-DETR v2 / D-FINE)."""
    x, p = through(t, {"Reshape", "Identity"})
    if p is None or p.op != "Transpose" or list(p.attrs.get("perm", [])) != [0, 2, 3, 1]:
        raise NotACore("the per-level value maps do not slice value [N, S, M, D] transposed to [N*M, D, S]")
    return p.inputs[0]


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
    description = ("multi-scale deformable attention (Deformable DETR, RT-DETR (v2), D-FINE, Mask2Former) -> TensorRT's "
                   "MultiscaleDeformableAttnPlugin_TRT where exact, else vitdeploy's MultiscaleDeformableAttention")
    # plugin: the stock plugin at the version the target TensorRT has (option msda_stock_version, else the
    # TensorRT here decides: machine.stock_msda_version) where its semantics are the core's, else (or with
    # msda_impl=vitdeploy) vitdeploy's Triton plugin; native: stock v1, which TensorRT without Python-plugin
    # support (10.3) ships, or plain ONNX for discrete sampling.
    modes = ("plugin", "native")

    def _stock_version(self) -> str:
        version = self.options.get("msda_stock_version")
        if version is None:
            from vitdeploy.machine import stock_msda_version, tensorrt_version

            version = stock_msda_version(tensorrt_version()).version
        return str(version)

    def spec(self, mode: str = "plugin"):
        return spec_for(self.options.get("msda_impl") or self.options.get("impl") or "stock", mode, self._stock_version())

    def extra_opsets(self, mode: str) -> dict[str, int]:
        """Plugin mode may emit the stock node and vitdeploy's (a core the stock plugin cannot compute); native only stock v1."""
        specs = [self.spec(mode)] + ([VITDEPLOY_SPEC] if mode == "plugin" else [])
        return {spec.domain: 1 for spec in specs}

    def find(self, graph: gs.Graph) -> tuple[list[Candidate], list[str]]:
        notes: list[str] = []
        groups: dict[int, tuple[gs.Node, int, dict[int, Sampler]]] = {}
        order: list[int] = []
        for s in _samplers(graph, notes):
            try:
                stack, pos, n_levels = _stack_of(s)
            except NotACore as e:
                if s.method == "default":  # a Gather that is not a discrete core is nothing of ours
                    notes.append(str(e))
                continue
            if id(stack) not in groups:
                groups[id(stack)] = (stack, n_levels, {})
                order.append(id(stack))
            groups[id(stack)][2][pos] = s
        cands = []
        for k, key in enumerate(order):
            stack, n_levels, by_pos = groups[key]
            label = f"deformable attention core {k}"
            try:
                cands.append(self._match(label, stack, n_levels, by_pos))
            except NotACore as e:
                notes.append(f"{label}: {e}")
        return cands, notes

    def _match(self, label: str, stack: gs.Node, n_levels: int, by_pos: dict[int, Sampler]) -> Candidate:
        if sorted(by_pos) != list(range(n_levels)):
            raise NotACore("the stack mixes sampled levels with other tensors")
        samplers = [by_pos[i] for i in range(n_levels)]
        methods = {s.method for s in samplers}
        if len(methods) != 1:
            raise NotACore("levels are sampled with different methods")
        method = methods.pop()
        for s in samplers:
            if s.method == "default":
                why = _sampling_mismatch(s.node)
                if why:
                    raise NotACore(why)
        _, weights_in, out = _tail(stack, samplers[0].out)
        weights, w_rank = _weights_source(weights_in)
        grid, value, levels, layout, offset = None, None, [], None, 0
        for lvl, s in enumerate(samplers):
            g, pos, pts, lay = _level_grid(s.grid) if s.method == "default" else _discrete_grid(s)
            if lay == "levels" and pos != lvl:
                raise NotACore(f"level {lvl} samples grid level {pos}")
            if lay == "points":
                if pos != offset:
                    raise NotACore(f"level {lvl} samples points {pos}.. of the grid, not {offset}.. (levels out of order)")
                offset += pts
            v, start, h, w = _value_level(s.value_map)
            if grid is None:
                grid, value, layout = g, v, lay
            elif g is not grid or v is not value or lay != layout:
                raise NotACore("levels sample different grids or value tensors")
            levels.append(Level(h, w, start, pts))
        if (layout, w_rank) not in (("levels", 5), ("points", 4)):
            raise NotACore(f"the grid's layout ({layout}) and the weights' rank ({w_rank}) do not belong together")
        num_points = tuple(lv.points for lv in levels) if layout == "points" else _uniform_points(samplers, weights)
        locations, from_grid = _locations_of(grid, method)
        shape_inputs = [x for lv in levels for x in (lv.h, lv.w, lv.start) if isinstance(x, gs.Tensor)]
        boundary = [value, locations, weights, *shape_inputs]
        nodes, extra = _region(out, boundary)
        return Candidate(label, nodes, [*boundary, *extra], [out],
                         params={"levels": [(lv.h, lv.w, lv.start) for lv in levels], "from_grid": from_grid,
                                 "value": value, "locations": locations, "weights": weights, "layout": layout,
                                 "num_points": num_points, "method": method})

    # ------------------------------------------------------------------------- emission

    def choose(self, cand: Candidate, mode: str) -> tuple[str, str]:
        """(what this core becomes, why): "stock", "stock_padded", "vitdeploy" or "plain"."""
        p = cand.params
        pts, method = p["num_points"], p["method"]
        impl = self.options.get("msda_impl") or self.options.get("impl") or "stock"
        if mode == "native":
            if method == "discrete":
                return "plain", ("discrete sampling: plain ONNX (GatherElements of the clamped pixels); TensorRT's stock "
                                 "plugin samples bilinearly")
            if len(set(pts)) > 1:
                return "stock_padded", (f"stock plugin v1 with the points padded to {max(pts)} per level at zero weight "
                                        f"(exact): it takes one P for every level, the core has {list(pts)}")
            return "stock", "stock plugin v1 (TensorRT without Python plugins ships it)"
        if impl == "vitdeploy":
            return "vitdeploy", "vitdeploy's MultiscaleDeformableAttention (--msda-impl vitdeploy)"
        why = stock_compatible(pts, method)
        if why:
            return "vitdeploy", f"vitdeploy's MultiscaleDeformableAttention: the stock plugin cannot compute {why}"
        return "stock", f"TensorRT's stock plugin (v{self._stock_version()}): bilinear, one P for every level"

    def emit(self, graph: gs.Graph, cand: Candidate, mode: str) -> Emission:
        p = cand.params
        e = Emitter(cand.name.replace(" ", "_"), taken_names(graph))
        dtype = p["value"].dtype if p["value"].dtype is not None else np.float32
        locations, weights = p["locations"], p["weights"]
        if locations.dtype is not None and np.dtype(locations.dtype) != np.dtype(dtype):  # e.g. an FP64 grid kept
            locations = e.op("Cast", [locations], {"to": _onnx_type(dtype)})
        if p["from_grid"]:  # locations = (grid + 1) / 2
            locations = e.op("Mul", [e.op("Add", [locations, e.const(np.array(1, dtype))]), e.const(np.array(0.5, dtype))])
        kind, why = self.choose(cand, mode)
        pts = p["num_points"]
        flat = p["layout"] == "points"
        if kind == "plain":
            out = _plain_discrete(e, p["value"], locations, weights, p["levels"], pts, flat, dtype)
        else:
            shapes, starts = _level_tensors(e, p["levels"])
            if kind == "vitdeploy":
                spec, attrs = VITDEPLOY_SPEC, vitdeploy_attrs(pts, p["method"])
            else:
                spec, attrs = (STOCK_V1_SPEC if mode == "native" else self.spec("plugin")), {}
                if kind == "stock_padded":
                    locations, weights = _pad_points(e, locations, weights, pts, dtype)
                elif flat:  # [N, Lq, M, L*P, 2] -> [N, Lq, M, L, P, 2]: the same memory
                    locations = e.reshape(locations, [0, 0, 0, len(pts), pts[0], 2])
                    weights = e.reshape(weights, [0, 0, 0, len(pts), pts[0]])
            raw = e.op(spec.name, [p["value"], shapes, starts, locations, weights], spec.node_attrs(**attrs),
                       domain=spec.domain)
            raw.dtype = dtype
            out = e.reshape(raw, [0, 0, -1])
        out.dtype = dtype
        return Emission(e.nodes, [out], why)


def _static_dim(t: gs.Tensor, axis: int) -> int | None:
    """A dimension of `t` known before running: from its inferred shape, or from the Reshape that writes it
    (a constant target, or a Concat whose piece for that axis is a constant: TorchScript's `.view(n, q, M, L, P)`)."""
    if t.shape is not None and len(t.shape) > axis and isinstance(t.shape[axis], (int, np.integer)) and t.shape[axis] > 0:
        return int(t.shape[axis])
    p = producer(t)
    if p is None or p.op != "Reshape":
        return None
    target = const_value(p.inputs[1])
    if target is not None:
        return int(target[axis]) if target.size > axis and target[axis] > 0 else None
    cat = producer(p.inputs[1])
    if cat is not None and cat.op == "Concat" and len(cat.inputs) > axis:
        v = const_value(cat.inputs[axis])
        if v is not None and v.size == 1 and int(v.reshape(-1)[0]) > 0:
            return int(v.reshape(-1)[0])
    return None


def _uniform_points(samplers: list[Sampler], weights: gs.Tensor) -> tuple[int, ...]:
    """P per level of the 6-D layout: the weights' last axis [N, Lq, M, L, P], else a sampled grid's points axis."""
    p = _static_dim(weights, 4)
    for s in samplers:
        if p is None and s.grid is not None:
            p = _static_dim(s.grid, 2)  # [N*M, Lq, P, 2]
    if p is None:
        raise NotACore("the number of points per level is not static")
    return (p,) * len(samplers)


def _onnx_type(dtype) -> int:
    import onnx

    return onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _as_i64_1d(e: Emitter, x) -> gs.Tensor:
    if isinstance(x, (int, np.integer)):
        return e.const(np.array([int(x)], np.int64))
    return e.op("Cast", [e.reshape(x, [1])], {"to": 7})


def _level_tensors(e: Emitter, levels) -> tuple[gs.Tensor, gs.Tensor]:
    """spatial_shapes [L,2] and level_start_index [L] as INT32: constants, or computed from the graph's shape tensors."""
    if all(isinstance(x, (int, np.integer)) for lv in levels for x in lv):
        return (e.const(np.array([[h, w] for h, w, _ in levels], np.int32)),
                e.const(np.array([s for _, _, s in levels], np.int32)))
    hw = [_as_i64_1d(e, x) for h, w, _ in levels for x in (h, w)]
    st = [_as_i64_1d(e, s) for _, _, s in levels]
    out = []
    for parts, shape in ((hw, [-1, 2]), (st, [-1])):
        cat = e.op("Concat", parts, {"axis": 0})
        i32 = e.op("Cast", [e.reshape(cat, shape)], {"to": 6})
        i32.dtype = np.int32
        out.append(i32)
    return out[0], out[1]


def _pad_points(e: Emitter, locations, weights, pts, dtype):
    """[N, Lq, M, sum(P), 2] / [N, Lq, M, sum(P)] -> [N, Lq, M, L, Pmax, 2] / [N, Lq, M, L, Pmax]: each level's points
    padded to the largest count with copies of a real point at weight exactly 0 (a zero weight adds exactly 0)."""
    pmax, idx, mask, off = max(pts), [], [], 0
    for p in pts:
        idx += [off + min(k, p - 1) for k in range(pmax)]
        mask += [1.0 if k < p else 0.0 for k in range(pmax)]
        off += p
    gidx = e.const(np.array(idx, np.int64))
    loc = e.reshape(e.op("Gather", [locations, gidx], {"axis": 3}), [0, 0, 0, len(pts), pmax, 2])
    w = e.op("Mul", [e.op("Gather", [weights, gidx], {"axis": 3}), e.const(np.array(mask, dtype))])
    return loc, e.reshape(w, [0, 0, 0, len(pts), pmax])


def _plain_discrete(e: Emitter, value, locations, weights, levels, pts, flat: bool, dtype):
    """Discrete sampling in plain ONNX: per level the pixel (clamp(int(x * W + 0.5), 0, W - 1), clamp(int(y * H + 0.5),
    0, H - 1)) as a token index start + y * W + x, all levels' indices concatenated, GatherElements of value's rows
    ([N, M, S, D] along S), weighted sum over the points -> [N, Lq, M*D]."""
    if not flat:
        locations = e.reshape(locations, [0, 0, 0, -1, 2])
        weights = e.reshape(weights, [0, 0, 0, -1])
    i64 = lambda v: e.const(np.asarray(v, np.int64))  # noqa: E731
    toks, off = [], 0
    for (h, w, start), p in zip(levels, pts):
        loc = e.op("Slice", [locations, i64([off]), i64([off + p]), i64([3])])  # [N, Lq, M, P, 2]
        off += p
        h64, w64, s64 = (_as_i64_1d(e, x) for x in (h, w, start))
        size = e.op("Cast", [e.op("Concat", [w64, h64], {"axis": 0})], {"to": _onnx_type(dtype)})  # (W, H)
        pix = e.op("Cast", [e.op("Add", [e.op("Mul", [loc, size]), e.const(np.array([0.5], dtype))])], {"to": 7})
        top = e.op("Sub", [e.op("Concat", [w64, h64], {"axis": 0}), i64([1, 1])])  # (W - 1, H - 1)
        pix = e.op("Max", [e.op("Min", [pix, top]), i64([0, 0])])
        stride = e.op("Concat", [i64([1]), w64], {"axis": 0})  # token = x * 1 + y * W
        tok = e.op("ReduceSum", [e.op("Mul", [pix, stride]), i64([4])], {"keepdims": 0})
        toks.append(e.op("Add", [tok, s64]))
    tok = e.op("Concat", toks, {"axis": 3}) if len(toks) > 1 else toks[0]  # [N, Lq, M, sum(P)]
    vt = e.op("Transpose", [value], {"perm": [0, 2, 1, 3]})  # [N, M, S, D]
    idx = e.reshape(e.op("Transpose", [tok], {"perm": [0, 2, 1, 3]}), [0, 0, -1])  # [N, M, Lq*sum(P)]
    d = e.op("Slice", [e.op("Shape", [value]), i64([3]), i64([4])])
    idx = e.op("Expand", [e.op("Unsqueeze", [idx, i64([-1])]), e.op("Concat", [i64([1, 1, 1]), d], {"axis": 0})])
    rows = e.op("GatherElements", [vt, idx], {"axis": 2})  # [N, M, Lq*sum(P), D]
    wt = e.reshape(e.op("Transpose", [weights], {"perm": [0, 2, 1, 3]}), [0, 0, -1])
    weighted = e.op("Mul", [rows, e.op("Unsqueeze", [wt, i64([-1])])])
    target = e.op("Concat", [i64([0, 0, -1, sum(pts)]), d], {"axis": 0})
    summed = e.op("ReduceSum", [e.op("Reshape", [weighted, target]), i64([3])], {"keepdims": 0})  # [N, M, Lq, D]
    return e.reshape(e.op("Transpose", [summed], {"perm": [0, 2, 1, 3]}), [0, 0, -1])


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
            if isinstance(i, gs.Constant) or id(i) in have or not i.name:  # "": an omitted optional input
                continue
            p = producer(i)
            if p is None or id(p) not in inside:
                extra.append(i)
                have.add(id(i))
    return nodes, extra
