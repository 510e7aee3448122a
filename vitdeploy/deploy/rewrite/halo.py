"""`halo`: HaloNet's blocked local attention (timm `HaloAttn`) -> one `HaloAttention` node, or cheaper plain ONNX.

What is matched, by structure (timm's dynamo export writes each HaloAttn as ~45 Pad/Gather/
Slice/Reshape/Transpose/Expand nodes around three MatMuls):

    kv_in ──layout (pad, unfold, split)──▶ k, v          q_in ──layout (blocking)──▶ q
    logits = MatMul(q, kᵀ)·s (+ terms computed from q by MatMuls with constants and layout ops)
    MatMul(Softmax(logits), v) ──layout (fold)──▶ y

where q_in and kv_in are the two tensors the region reads (timm's q and kv convolutions) and
"layout" ops only move data. Nothing is read off names or attributes: the parameters are
*measured* on the candidate with ONNX Runtime, then the whole candidate is verified by
`rewrite/driver.py` like every pass:

- data movement: q_in and kv_in filled with their own element codes are pushed through the
  region; the codes arriving at the two MatMuls (q, kᵀ, v) and, in a second probe, the codes
  the fold moves from the attention output to y, must equal timm's blocking / zero-padded
  neighbourhood / fold for exactly one (block, halo, heads, dims, stride). Zero codes are the
  halo padding;
- numbers: with q_in = 0 and q·kᵀ forced to 1 the logits are the scale; with a random q_in
  and q·kᵀ forced to 0 they are the relative logits, which must be PosEmbedRel's for the
  region's two [2·win-1, d] constant tables, in one of the two orders, times the scale or not
  (that decides `scale_pos_embed` and which table is height, which width).

Modes:
- plugin: HaloAttention(q_in, kv_in, height_rel, width_rel) -> y (the avg-down pool, if any,
  stays outside).
- native (TensorRT 10.3 / JetPack 6, no plugins): plain ONNX that materialises each
  neighbourhood once instead of the exporter's pad + two unfold gathers + transposes + split
  copies: one Pad of the flattened kv, two constant-index Gathers that write kᵀ and v directly
  in the layout the batched MatMuls read; the relative logits as two small MatMuls
  ([M, 2·win-1] per query) and constant Gathers broadcast-added to the q·kᵀ logits instead
  of the exporter's pad/slice/expand chain; the scale folded into q. No Shape ops.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from vitdeploy.deploy.rewrite.driver import Candidate, Emission, RewritePass
from vitdeploy.deploy.rewrite.emit import Emitter, taken_names
from vitdeploy.deploy.rewrite.graph import Walker, between, const_value, match_each, producer
from vitdeploy.deploy.rewrite.probe import activations, measured, probe_once

# Ops that only move or select data (blocking, pad, unfold, split, fold, the rel-logit shuffles).
LAYOUT_OPS = {"Reshape", "Transpose", "Slice", "Concat", "Pad", "Squeeze", "Unsqueeze", "Gather", "Identity",
              "Split", "Flatten", "Expand"}
# Between q / k and the Softmax: layout, the q·kᵀ and q·table MatMuls, the scale and the sums.
LOGIT_OPS = LAYOUT_OPS | {"MatMul", "Add", "Mul", "Div"}
MAX_EXACT = 2 ** 24  # element codes stay exact in FP32 below this


# ----------------------------------------------------------------------------- timm's index maps (numpy)

def neighbourhood_index(height: int, width: int, block: int, halo: int) -> np.ndarray:
    """[blocks, win*win] flat pixel (row-major H x W) of every key of every block; -1 = zero padding.

    timm: F.pad(kv, halo) then unfold(win, step=block) on both axes; blocks row-major.
    """
    win = block + 2 * halo
    nh, nw = height // block, width // block
    u = np.arange(win)
    ys = (np.arange(nh) * block)[:, None] + u[None, :] - halo  # [nh, win]
    xs = (np.arange(nw) * block)[:, None] + u[None, :] - halo  # [nw, win]
    y = ys[:, None, :, None]
    x = xs[None, :, None, :]
    inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
    pix = np.where(inside, y * width + x, -1)  # [nh, nw, win, win]
    return pix.reshape(nh * nw, win * win)


def query_index(height_q: int, width_q: int, bsd: int) -> np.ndarray:
    """[blocks, bsd*bsd] flat pixel of the q map of every query of every block (row-major in the block)."""
    nh, nw = height_q // bsd, width_q // bsd
    i = np.arange(bsd)
    ys = (np.arange(nh) * bsd)[:, None] + i[None, :]
    xs = (np.arange(nw) * bsd)[:, None] + i[None, :]
    pix = ys[:, None, :, None] * width_q + xs[None, :, None, :]  # [nh, nw, bsd, bsd]
    return pix.reshape(nh * nw, bsd * bsd)


def relative_rows(bsd: int, win: int) -> np.ndarray:
    """[bsd, win] table row read by query i for key u: u - i + win - 1 (timm's rel_logits_1d)."""
    return np.arange(win)[None, :] - np.arange(bsd)[:, None] + win - 1


def relative_logits(q: np.ndarray, th: np.ndarray, tw: np.ndarray, win: int) -> np.ndarray:
    """q [..., bsd*bsd, d], tables [2*win-1, d] -> [..., bsd*bsd, win*win] (FP64)."""
    bsd = math.isqrt(q.shape[-2])
    qb = q.astype(np.float64).reshape(*q.shape[:-2], bsd, bsd, q.shape[-1])
    idx = relative_rows(bsd, win)
    rel_h = np.einsum("...ijd,iud->...iju", qb, th.astype(np.float64)[idx])
    rel_w = np.einsum("...ijd,jvd->...ijv", qb, tw.astype(np.float64)[idx])
    return (rel_h[..., :, None] + rel_w[..., None, :]).reshape(*q.shape[:-1], win * win)


@dataclass(frozen=True)
class Geometry:
    """One HaloAttn's parameters, as measured."""

    batch: int
    height: int  # kv map
    width: int
    block: int
    halo: int
    stride: int
    heads: int
    dqk: int
    dv: int

    @property
    def bsd(self) -> int:
        return self.block // self.stride

    @property
    def win(self) -> int:
        return self.block + 2 * self.halo

    @property
    def blocks(self) -> tuple[int, int]:
        return self.height // self.block, self.width // self.block

    @property
    def q_size(self) -> tuple[int, int]:
        return self.height // self.stride, self.width // self.stride

    def codes(self) -> dict[str, np.ndarray]:
        """Expected element codes (1 + flat index into q_in / kv_in; 0 = zero padding) at q, kᵀ and v,
        and the fold map (1 + flat index into the attention output) at y."""
        B, heads, dqk, dv = self.batch, self.heads, self.dqk, self.dv
        hq, wq = self.q_size
        nb = self.blocks[0] * self.blocks[1]
        m = self.bsd ** 2
        hw = self.height * self.width
        qpix = query_index(hq, wq, self.bsd)  # [nb, M]
        b = np.arange(B)[:, None, None, None, None]
        h = np.arange(heads)[None, :, None, None, None]
        d = np.arange(dqk)[None, None, None, None, :]
        q = ((b * heads + h) * dqk + d) * (hq * wq) + qpix[None, None, :, :, None]  # [B, heads, nb, M, dqk]
        pix = neighbourhood_index(self.height, self.width, self.block, self.halo)  # [nb, K]
        ckv = heads * (dqk + dv)
        chan_k = (np.arange(B)[:, None] * ckv + np.arange(heads)[None, :] * (dqk + dv))[:, :, None, None, None]
        k_t = np.where(pix[None, None, :, None, :] >= 0,
                       (chan_k + np.arange(dqk)[None, None, None, :, None]) * hw + pix[None, None, :, None, :] + 1, 0)
        v = np.where(pix[None, None, :, :, None] >= 0,
                     (chan_k + dqk + np.arange(dv)[None, None, None, None, :]) * hw + pix[None, None, :, :, None] + 1, 0)
        # fold: y[b, h*dv + e, pixel of query (blk, m)] = out[b*heads + h, blk, m, e]
        fold = np.empty(B * heads * dv * hq * wq, np.int64)
        src = np.arange(B * heads * nb * m * dv).reshape(B, heads, nb, m, dv)
        dst = ((np.arange(B)[:, None, None, None, None] * heads + np.arange(heads)[None, :, None, None, None]) * dv
               + np.arange(dv)[None, None, None, None, :]) * (hq * wq) + qpix[None, None, :, :, None]
        fold[dst.ravel()] = src.ravel() + 1
        return {"q": (q + 1).reshape(B * heads, nb, m, dqk), "k_t": k_t.reshape(B * heads, nb, dqk, -1),
                "v": v.reshape(B * heads, nb, -1, dv), "fold": fold.reshape(B, heads * dv, hq, wq)}


# ----------------------------------------------------------------------------- structure

@dataclass
class Core:
    """The structural match around one Softmax, before anything is measured."""

    q_in: gs.Variable
    kv_in: gs.Variable
    y: gs.Variable
    qk: gs.Node  # MatMul(q, kᵀ)
    av: gs.Node  # MatMul(softmax, v)
    softmax: gs.Node


class _Walker(Walker):
    """The HaloAttn match on top of the shared activation walker."""

    def match(self, softmax: gs.Node) -> tuple[Core | None, str | None]:
        if int(softmax.attrs.get("axis", -1)) not in (-1, 3):
            return None, None
        users = self.data_consumers(softmax.outputs[0])
        if len(users) != 1 or users[0].op != "MatMul" or users[0].inputs[0] is not softmax.outputs[0]:
            return None, None
        av = users[0]
        kv = self.up([av.inputs[1]], LAYOUT_OPS)[0]
        if len(kv) != 1 or producer(kv[0]) is None or producer(av.inputs[1]) is None \
                or producer(av.inputs[1]).op not in LAYOUT_OPS:
            return None, None  # v is not a data movement of one tensor: not a HaloAttn
        kv_in = kv[0]
        sources = self.up([softmax.inputs[0]], LOGIT_OPS)[0]
        others = [t for t in sources if t is not kv_in]
        where = softmax.name or softmax.outputs[0].name
        if len(others) != 1 or len(sources) != 2:
            return None, None
        q_in = others[0]
        qk = None
        for n in self._region_nodes(softmax.inputs[0], {id(q_in), id(kv_in)}):
            if n.op != "MatMul" or len(self.data_inputs(n)) != 2:
                continue
            a, b = (self.up([t], LAYOUT_OPS)[0] for t in n.inputs[:2])
            if [t.name for t in a] == [q_in.name] and [t.name for t in b] == [kv_in.name]:
                qk = n
        if qk is None:
            return None, f"attention at '{where}': no MatMul of blocked q with neighbourhood keys"
        ys = self.down(av.outputs[0], LAYOUT_OPS)[0]
        if len(ys) != 1:
            return None, f"attention at '{where}': its output is not folded into one tensor"
        return Core(q_in, kv_in, ys[0], qk, av, softmax), None

    def _region_nodes(self, t: gs.Tensor, stop: set[int]) -> list[gs.Node]:
        nodes: dict[int, gs.Node] = {}
        stack = [t]
        while stack:
            t = stack.pop()
            if id(t) in stop:
                continue
            p = producer(t)
            if p is None or id(p) in nodes or p.op not in LOGIT_OPS:
                continue
            nodes[id(p)] = p
            stack.extend(self.data_inputs(p))
        return list(nodes.values())

# ----------------------------------------------------------------------------- probing

def _table_candidates(nodes: list[gs.Node], rows: int, dim: int) -> list[np.ndarray]:
    """Constant [rows, dim] (or [dim, rows]) matrices the region reads, as [rows, dim]."""
    seen: dict[int, np.ndarray] = {}
    for n in nodes:
        for t in n.inputs:
            v = const_value(t)
            if v is None or v.ndim != 2 or not np.issubdtype(v.dtype, np.floating) or id(t) in seen:
                continue
            if v.shape == (rows, dim):
                seen[id(t)] = v
            elif v.shape == (dim, rows):
                seen[id(t)] = v.T
    out: list[np.ndarray] = []
    for v in seen.values():  # the same values under two names count once
        if not any(v.shape == o.shape and np.array_equal(v, o) for o in out):
            out.append(np.ascontiguousarray(v, dtype=np.float32))
    return out


@dataclass
class Measured:
    geometry: Geometry
    scale: float
    scale_pos_embed: int
    height_rel: np.ndarray
    width_rel: np.ndarray


def _shape_hypothesis(batch, q_in, kv_in, y, q_mm, k_t, v) -> tuple[Geometry | None, str | None]:
    if q_in.ndim != 4 or kv_in.ndim != 4 or y.ndim != 4:
        return None, "q, kv and the output are not NCHW maps"
    if q_mm.ndim != 4 or k_t.ndim != 4 or v.ndim != 4:
        return None, "q, kᵀ and v at the MatMuls are not [batch*heads, blocks, ., .]"
    bh, nb, m, dqk = q_mm.shape
    k = v.shape[2]
    dv = v.shape[3]
    _, _, height, width = kv_in.shape
    hq, wq = q_in.shape[2:]
    win, bsd = math.isqrt(k), math.isqrt(m)
    if bh % batch or win * win != k or bsd * bsd != m or k_t.shape != (bh, nb, dqk, k) or v.shape[:2] != (bh, nb):
        return None, f"attention shapes q {q_mm.shape}, kᵀ {k_t.shape}, v {v.shape} are not square blocks of one map"
    if height % hq or width % wq or height // hq != width // wq:
        return None, f"q map {hq}x{wq} is not the kv map {height}x{width} at one stride"
    stride = height // hq
    block = bsd * stride
    halo2 = win - block
    if halo2 < 0 or halo2 % 2 or height % block or width % block or (height // block) * (width // block) != nb:
        return None, f"{nb} blocks of {bsd}x{bsd} queries and {win}x{win} keys do not tile the {height}x{width} map"
    geo = Geometry(batch, height, width, block, halo2 // 2, stride, bh // batch, dqk, dv)
    if q_in.shape[1] != geo.heads * dqk or kv_in.shape[1] != geo.heads * (dqk + dv) or y.shape != (batch, geo.heads * dv, hq, wq):
        return None, f"channels q {q_in.shape[1]}, kv {kv_in.shape[1]}, out {y.shape[1]} do not fit {geo.heads} heads of {dqk}/{dv}"
    return geo, None


class HaloAttentionPass(RewritePass):
    name = "halo"
    description = "HaloNet blocked local attention -> HaloAttention plugin, or plain ONNX with one neighbourhood copy (native)"
    modes = ("plugin", "native")

    def extra_opsets(self, mode):
        from vitdeploy.plugins.halo_attention.spec import SPEC

        return {SPEC.domain: 1} if mode == "plugin" else {}

    # ------------------------------------------------------------------ find

    def find(self, graph):
        walker = _Walker(graph)
        notes: list[str] = []
        cores: list[Core] = match_each([n for n in graph.nodes if n.op == "Softmax"], walker.match, notes)
        if not cores:
            return [], notes
        blocks = [(c, *walker.subgraph([c.q_in, c.kv_in], c.y)) for c in cores]  # (core, nodes, extra inputs)
        try:
            values = activations(graph, [t for c, _, extras in blocks for t in (c.q_in, c.kv_in, c.y, *extras)], batch=2)
        except Exception as e:  # shapes cannot be measured: report, rewrite nothing
            return [], [*notes, f"halo: could not run the graph to measure the blocks: {str(e).splitlines()[0][:160]}"]
        cands: list[Candidate] = []
        for (core, nodes, extras), m in measured(
                blocks, lambda b: self._measure(b[0], b[1], b[2], values, graph.opset),
                lambda b: f"blocked attention at '{b[0].softmax.name or b[0].softmax.outputs[0].name}'", notes):
            g = m.geometry
            name = (f"HaloAttn {len(cands) + 1} ({g.height}x{g.width}, block {g.block}, halo {g.halo}, "
                    f"stride {g.stride}, {g.heads}x{g.dqk}/{g.dv})")
            params = dict(measured=m, dtype=values[core.q_in.name].dtype)
            cands.append(Candidate(name, nodes, [core.q_in, core.kv_in, *extras], [core.y], params))
        return cands, notes

    def _measure(self, core: Core, nodes, extras, values, opset) -> tuple[Measured | None, str | None]:
        q_val, kv_val, y_val = values[core.q_in.name], values[core.kv_in.name], values[core.y.name]
        if q_val.dtype != np.float32 or kv_val.dtype != np.float32:
            return None, f"the block computes in {q_val.dtype}; run the rewrite before precision conversion"
        if max(q_val.size, kv_val.size, y_val.size) >= MAX_EXACT:
            return None, "too large to probe exactly in FP32"
        batch = q_val.shape[0]
        extra = {e.name: values[e.name] for e in extras}
        q_code = np.arange(1, q_val.size + 1, dtype=np.float32).reshape(q_val.shape)
        kv_code = np.arange(1, kv_val.size + 1, dtype=np.float32).reshape(kv_val.shape)
        probe = [core.qk.inputs[0].name, core.qk.inputs[1].name, core.av.inputs[1].name]
        q_mm, k_t, v = probe_once(nodes, {core.q_in.name: q_code, core.kv_in.name: kv_code, **extra}, probe, opset)
        geo, why = _shape_hypothesis(batch, q_val, kv_val, y_val, q_mm, k_t, v)
        if geo is None:
            return None, why
        want = geo.codes()
        for key, got, what in (("q", q_mm, "query blocking"), ("k_t", k_t, "key neighbourhoods"), ("v", v, "value neighbourhoods")):
            if not np.array_equal(got.astype(np.int64), want[key]):
                return None, f"the {what} are not timm's (block {geo.block}, halo {geo.halo}, stride {geo.stride})"
        # fold: the nodes between the attention output and y, fed with codes
        av_out = core.av.outputs[0]
        fold_nodes = between(nodes, av_out, core.y)
        av_shape = (q_mm.shape[0], q_mm.shape[1], q_mm.shape[2], geo.dv)
        (y_code,) = probe_once(fold_nodes, {av_out.name: np.arange(1, int(np.prod(av_shape)) + 1, dtype=np.float32).reshape(av_shape),
                                      **extra}, [core.y.name], opset)
        if not np.array_equal(y_code.astype(np.int64), want["fold"]):
            return None, "the attention output is not folded back in timm's order"
        # numbers: the scale, then the relative logits
        logits = core.softmax.inputs[0].name
        rng = np.random.default_rng(0)
        kv_rand = rng.standard_normal(kv_val.shape).astype(np.float32)
        (ones,) = probe_once(nodes, {core.q_in.name: np.zeros_like(q_val), core.kv_in.name: kv_rand, **extra}, [logits], opset,
                       overrides={core.qk.outputs[0].name: 1.0})
        scale = float(ones.ravel()[0])
        if not np.allclose(ones, scale, rtol=1e-6, atol=1e-7) or scale == 0.0:
            return None, "the logits are not scale * q·kᵀ + terms linear in q"
        q_rand = rng.standard_normal(q_val.shape).astype(np.float32)
        rel, q_at = probe_once(nodes, {core.q_in.name: q_rand, core.kv_in.name: kv_rand, **extra}, [logits, core.qk.inputs[0].name],
                         opset, overrides={core.qk.outputs[0].name: 0.0})
        tables = _table_candidates(nodes, 2 * geo.win - 1, geo.dqk)
        rel = rel.astype(np.float64)
        tol = 1e-4 * max(1.0, float(np.abs(rel).max()))
        for a in range(len(tables)):
            for b in range(len(tables)):
                if a == b:
                    continue
                base = relative_logits(q_at, tables[a], tables[b], geo.win)
                for spe, factor in ((0, 1.0), (1, scale)):
                    if float(np.abs(base * factor - rel).max()) <= tol:
                        return Measured(geo, scale, spe, tables[a], tables[b]), None
        if not tables:
            return None, f"no constant [{2 * geo.win - 1}, {geo.dqk}] relative-position tables in the region"
        return None, "the q-dependent logits are not PosEmbedRel's for the region's tables"

    # ------------------------------------------------------------------ emit

    def emit(self, graph, cand, mode):
        m: Measured = cand.params["measured"]
        g = m.geometry
        e = Emitter(cand.outputs[0].name + "__halo", taken_names(graph))
        q_in, kv_in = cand.inputs[0], cand.inputs[1]
        if mode == "plugin":
            from vitdeploy.plugins.halo_attention.spec import SPEC

            attrs = SPEC.node_attrs(block_size=g.block, halo_size=g.halo, num_heads=g.heads, dim_head_qk=g.dqk,
                                    dim_head_v=g.dv, scale=m.scale, scale_pos_embed=m.scale_pos_embed,
                                    block_stride=g.stride)
            out = e.op(SPEC.name, [q_in, kv_in, e.const(m.height_rel), e.const(m.width_rel)], attrs, domain=SPEC.domain)
        else:
            out = _native(e, q_in, kv_in, m)
        out.dtype = cand.outputs[0].dtype or np.float32
        return Emission(e.nodes, [out])


def _native(e: Emitter, q_in, kv_in, m: Measured):
    """Plain ONNX HaloAttn: each neighbourhood gathered once, straight into the MatMul layouts."""
    g = m.geometry
    heads, dqk, dv, bsd, win = g.heads, g.dqk, g.dv, g.bsd, g.win
    nh, nw = g.blocks
    nb, mq, k = nh * nw, bsd * bsd, win * win
    hq, wq = g.q_size
    hw = g.height * g.width
    r = 2 * win - 1
    # queries [B, heads, blocks, M, dqk] (one transpose), scaled once here instead of every logit
    q = e.reshape(q_in, [0, heads, dqk, nh, bsd, nw, bsd])
    q = e.reshape(e.op("Transpose", [q], {"perm": [0, 1, 3, 5, 4, 6, 2]}), [0, heads, nb, mq, dqk])
    q = e.op("Mul", [q, e.const(np.asarray(m.scale, np.float32))])
    # keys/values: the flattened kv map plus one zero (the halo padding), gathered once each
    kv = e.op("Pad", [e.reshape(kv_in, [0, -1]), e.const(np.asarray([0, 0, 0, 1], np.int64))], {"mode": "constant"})
    pix = neighbourhood_index(g.height, g.width, g.block, g.halo)  # [nb, K]
    zero = heads * (dqk + dv) * hw
    chan = (np.arange(heads) * (dqk + dv))[:, None, None, None]
    idx_k = np.where(pix[None, :, None, :] >= 0, (chan + np.arange(dqk)[None, None, :, None]) * hw + pix[None, :, None, :], zero)
    idx_v = np.where(pix[None, :, :, None] >= 0, (chan + dqk + np.arange(dv)[None, None, None, :]) * hw + pix[None, :, :, None], zero)
    k_t = e.op("Gather", [kv, e.const(idx_k.astype(np.int32))], {"axis": 1})  # [B, heads, nb, dqk, K]
    v = e.op("Gather", [kv, e.const(idx_v.astype(np.int32))], {"axis": 1})  # [B, heads, nb, K, dv]
    logits = e.reshape(e.op("MatMul", [q, k_t]), [0, heads, nb, mq, win, win])  # s·q·k
    # relative logits: q·tableᵀ per query ([M, 2win-1]), then the rows each query reads
    rel_scale = 1.0 if m.scale_pos_embed else 1.0 / m.scale  # q already carries the scale
    rows = relative_rows(bsd, win)  # [bsd, win]
    qi, qj = np.divmod(np.arange(mq), bsd)
    for table, pick, axis in ((m.height_rel, rows[qi], 5), (m.width_rel, rows[qj], 4)):
        t = e.const((table.astype(np.float64) * rel_scale).T.astype(np.float32))  # [dqk, R]
        rel = e.reshape(e.op("MatMul", [q, t]), [0, heads, nb, mq * r])
        flat = (np.arange(mq)[:, None] * r + pick).astype(np.int32)  # [M, win]
        rel = e.op("Gather", [rel, e.const(flat)], {"axis": 3})  # [B, heads, nb, M, win]
        rel = e.op("Unsqueeze", [rel, e.const(np.asarray([axis], np.int64))])
        logits = e.op("Add", [logits, rel])
    attn = e.op("Softmax", [e.reshape(logits, [0, heads, nb, mq, k])], {"axis": -1})
    out = e.op("MatMul", [attn, v])  # [B, heads, nb, M, dv]
    out = e.reshape(out, [0, heads, nh, nw, bsd, bsd, dv])
    out = e.op("Transpose", [out], {"perm": [0, 1, 6, 2, 4, 3, 5]})  # [B, heads, dv, nh, bsd, nw, bsd]
    return e.reshape(out, [0, heads * dv, hq, wq])
