"""Window layouts in numpy: which token each window slot holds, for every partition the window plugins know,
and the search that names the layout a measured token order is.

A layout is (map height, width, partition, window (wh, ww), shift (sh, sw), pad_first, q_stride) -- the
attributes of `WindowAttention` (see `vitdeploy.plugins.window_attention.spec`). The `swin` pass measures,
with ONNX Runtime, which token every key slot of every window holds and where every query slot's result is
written; `find_layout` returns the one layout that produces exactly both, or None. Nothing here reads a
graph: these are the plugins' semantics written as index arithmetic, so the pass and its tests share them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MASK_VALUE = -100.0  # timm's (and torchvision's) value for cross-region pairs of a shifted window


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if np.ndim(v) == 0 else (int(v[0]), int(v[1]))


@dataclass(frozen=True)
class WindowLayout:
    height: int
    width: int
    window: tuple[int, int]  # (wh, ww); the grid size (gh, gw) for partition 1
    shift: tuple[int, int] = (0, 0)
    partition: int = 0  # 0 window, 1 grid (MaxViT)
    pad_first: bool = False  # torchvision / Hugging Face: pad, then roll
    q_stride: int = 1  # Hiera: queries max-pooled over q_stride chunks of a window's slots

    @property
    def tokens(self) -> int:
        return self.height * self.width

    @property
    def tokens_per_window(self) -> int:
        return self.window[0] * self.window[1]

    @property
    def queries_per_window(self) -> int:
        return self.tokens_per_window // self.q_stride

    @property
    def windows(self) -> int:
        return len(slot_tokens(self))

    @property
    def shifted(self) -> bool:
        return any(self.shift)

    @property
    def padded(self) -> bool:
        return self.partition == 0 and (self.height % self.window[0] or self.width % self.window[1]) > 0

    @property
    def is_global(self) -> bool:
        """One window holding every token in its own order (queries pooled or not): attention over the whole
        map, nothing moves."""
        keys = slot_tokens(self)
        return len(keys) == 1 and np.array_equal(keys[0], np.arange(self.tokens))

    def describe(self) -> str:
        kind = "grid" if self.partition else "window"
        parts = [f"{self.height}x{self.width} map", f"{kind} {self.window[0]}x{self.window[1]}"]
        if self.shifted:
            parts.append(f"shift {self.shift}")
        if self.padded:
            parts.append("padded")
        if self.q_stride > 1:
            parts.append(f"queries pooled by {self.q_stride}")
        return ", ".join(parts)


def window_order(height: int, width: int, window, shift, pad_first: bool = False) -> np.ndarray:
    """Token index (row-major, original map) at each window slot after timm's roll -> pad ->
    partition (`pad_first`: torchvision's and Hugging Face's pad -> roll -> partition); -1 marks
    zero padding. `window`/`shift`: int or (h, w). Length = nW * wh * ww."""
    (wh, ww), (sh, sw) = _pair(window), _pair(shift)
    ids = np.arange(height * width).reshape(height, width)
    if (sh or sw) and not pad_first:
        ids = np.roll(ids, (-sh, -sw), axis=(0, 1))
    hp, wp = math.ceil(height / wh) * wh, math.ceil(width / ww) * ww
    padded = np.full((hp, wp), -1, dtype=np.int64)
    padded[:height, :width] = ids
    if (sh or sw) and pad_first:
        padded = np.roll(padded, (-sh, -sw), axis=(0, 1))
    return padded.reshape(hp // wh, wh, wp // ww, ww).transpose(0, 2, 1, 3).reshape(-1)


def grid_order(height: int, width: int, grid) -> np.ndarray:
    """MaxViT's grid_partition: window (a, b) holds tokens (i*H/gh + a, j*W/gw + b), slots (i, j) row-major."""
    gh, gw = _pair(grid)
    ids = np.arange(height * width).reshape(gh, height // gh, gw, width // gw)
    return ids.transpose(1, 3, 0, 2).reshape(-1)


def slot_tokens(lay: WindowLayout) -> np.ndarray:
    """[windows, N]: the token each key slot holds (-1: padding)."""
    if lay.partition == 1:
        order = grid_order(lay.height, lay.width, lay.window)
    else:
        order = window_order(lay.height, lay.width, lay.window, lay.shift, lay.pad_first)
    return order.reshape(-1, lay.tokens_per_window)


def output_positions(lay: WindowLayout) -> np.ndarray:
    """[windows, N/q_stride]: the position in the output map (row-major) each query slot's result is written
    to, -1 where it is cropped away. Without query pooling that is the slot's own token."""
    keys = slot_tokens(lay)
    if lay.q_stride == 1:
        return keys
    (wh, ww), qs = lay.window, lay.q_stride
    nwh, nww = lay.height // wh, lay.width // ww
    i = np.arange(lay.queries_per_window)
    a, b = np.divmod(np.arange(nwh * nww), nww)
    rows = a[:, None] * (wh // qs) + (i // ww)[None, :]
    return rows * lay.width + b[:, None] * ww + (i % ww)[None, :]


def pooled_query_rows(keys: np.ndarray, q_stride: int) -> tuple[np.ndarray, np.ndarray]:
    """For key-slot values [windows, N] (row codes), the (max, min) over each pooled query's q_stride slots."""
    chunks = keys.reshape(keys.shape[0], q_stride, -1)
    return chunks.max(axis=1), chunks.min(axis=1)


def region_mismatch(height: int, width: int, window, shift) -> np.ndarray:
    """[nW, N, N] bool: query and key from different regions of the padded, shifted map (timm's
    region ids: slices (0, -w), (-w, -s), (-s, None) per axis)."""
    (wh, ww), (sh, sw) = _pair(window), _pair(shift)
    hp, wp = math.ceil(height / wh) * wh, math.ceil(width / ww) * ww

    def regions(size, w, s):
        idx = np.arange(size)
        return (idx >= size - w).astype(np.int64) + (idx >= size - s)

    ids = regions(hp, wh, sh)[:, None] * 3 + regions(wp, ww, sw)[None, :]
    win = ids.reshape(hp // wh, wh, wp // ww, ww).transpose(0, 2, 1, 3).reshape(-1, wh * ww)
    return win[:, None, :] != win[:, :, None]


def shift_mask(height: int, width: int, window, shift, value: float = MASK_VALUE) -> np.ndarray:
    """timm's SW-MSA mask [nW, N, N]: 0 within a region of the padded, shifted map, `value` (-100) across.

    Same region ids as `vitdeploy.plugins.window_attention.reference.shift_mask` (a test checks it),
    in numpy so the native mode does not need torch.
    """
    return np.where(region_mismatch(height, width, window, shift), value, 0.0).astype(np.float32)


def _factor_pairs(n: int) -> list[tuple[int, int]]:
    return [(d, n // d) for d in range(1, n + 1) if n % d == 0]


def candidate_maps(tokens: int, views: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Maps (H, W) with H*W = tokens to try: the 2-D views the graph itself writes first, then every
    factorisation, squarest first (only equivalent descriptions can then match too)."""
    every = sorted(_factor_pairs(tokens), key=lambda g: (abs(g[0] - g[1]), g[0]))
    return list(dict.fromkeys([v for v in views if v[0] * v[1] == tokens] + every))


def find_layout(keys: np.ndarray, outputs: np.ndarray, tokens: int,
                maps: list[tuple[int, int]]) -> tuple[WindowLayout, np.ndarray | None] | None:
    """The layout whose key slots are exactly `keys` [windows, N] (tokens of one image, -1: padding) and whose
    query results land exactly at `outputs` [windows, N/q_stride] (-1: cropped), on one of `maps`; with the
    slot permutation when only the order *inside* the windows differs.

    Window partitions are tried for every window shape wh x ww = N and grid partitions for every grid;
    the shift is read off the first slot (timm's roll moves token (sh, sw) to the corner), padding and
    pad-first follow. Different descriptions of the same order (a (T, 1) window on a (T, U) map, or a
    stride-U grid on another map) compute the same, so the first exact match is as good as any.

    Attention does not depend on the order of a window's slots, as long as each query's result goes back
    to its own token and the bias is permuted alike: Hiera's first block sees its mask units in Unroll's
    strided order. Without query pooling, a layout whose windows hold the same tokens in one common
    other order matches too: `perm[s]` is the layout's slot that measured slot s holds (None: the same order).
    """
    n, nq = keys.shape[1], outputs.shape[1]
    if n % nq or keys.size == 0:
        return None
    qs = n // nq
    found = _search(keys, outputs, tokens, maps, qs, exact=True)
    if found is None and qs == 1:
        found = _search(keys, outputs, tokens, maps, qs, exact=False)
    return found


def _slot_permutation(keys: np.ndarray, canon: np.ndarray) -> np.ndarray | None:
    """perm with keys == canon[:, perm] (one permutation for every window), else None."""
    first, ref = keys[0], canon[0]
    if sorted(first.tolist()) != sorted(ref.tolist()):
        return None
    where = {}
    for s, t in enumerate(ref.tolist()):
        where.setdefault(t, []).append(s)
    perm = np.array([where[t].pop(0) for t in first.tolist()])
    return perm if np.array_equal(canon[:, perm], keys) else None


def _search(keys, outputs, tokens, maps, qs, exact: bool):
    n = keys.shape[1]
    first = int(keys[0, 0])
    for h, w in maps:
        if h * w != tokens:
            continue
        for wh, ww in _factor_pairs(n):
            trials: list[WindowLayout] = []  # window partitions first: where a grid is the same, it is a window
            shifts = [divmod(first, w)] if exact and first >= 0 else [(0, 0)]
            for sh, sw in shifts:
                if sh < wh and sw < ww and (qs == 1 or not (sh or sw)):
                    trials += [WindowLayout(h, w, (wh, ww), (sh, sw), 0, pad_first, qs) for pad_first in (False, True)]
            if h % wh == 0 and w % ww == 0 and qs == 1:
                trials.append(WindowLayout(h, w, (wh, ww), partition=1))
            for lay in trials:
                if lay.pad_first and not (lay.shifted and lay.padded):
                    continue  # pad-first only differs from roll-first on padded, shifted maps
                if qs > 1 and (lay.padded or h % wh or wh % qs):
                    continue
                if math.ceil(h / wh) * math.ceil(w / ww) != len(keys):
                    continue
                canon = slot_tokens(lay)
                if exact:
                    if np.array_equal(canon, keys) and np.array_equal(output_positions(lay), outputs):
                        return lay, None
                    continue
                perm = _slot_permutation(keys, canon)
                if perm is not None and np.array_equal(output_positions(lay)[:, perm], outputs):
                    return lay, perm
    return None


def split_bias_and_mask(a: np.ndarray, cross: np.ndarray | None) -> tuple[np.ndarray, float]:
    """Additive logit terms a [nW, heads, N, N] -> (relative-position bias [heads, N, N], mask value).

    `cross` [nW, N, N] marks cross-region pairs (None: unshifted). The bias is read in a window with
    no cross-region pair (timm's top-left window, unless one window spans the map), the mask value
    is what the other windows add on their cross-region pairs (timm -100, Hugging Face Swinv2 -200).
    """
    if cross is None:
        return a[0], MASK_VALUE
    clean = [k for k in range(len(cross)) if not cross[k].any()]
    if not clean:  # every window straddles regions (one window row or column): compare windows
        only_k = np.broadcast_to((cross & ~cross[0][None])[:, None], a.shape)  # cross-region in k, not in window 0
        value = float(np.median((a - a[0][None])[only_k])) if only_k.any() else MASK_VALUE
        return a[0] - value * cross[0][None], value
    rel = a[clean[0]]
    added = (a - rel[None])[np.broadcast_to(cross[:, None], a.shape)]
    value = float(np.median(added)) if added.size else MASK_VALUE
    return rel, value


def fit_decomposed(bias: np.ndarray, window) -> tuple[np.ndarray, np.ndarray, float]:
    """SAM's decomposed relative position from its response to unit queries.

    `bias` [hd, N, N]: the additive logits of a window when every query is the unit vector e_c (row c),
    the query-independent part already subtracted. If it is q·R_h[y_i - y_j] + q·R_w[x_i - x_j], then
    bias[c, i, j] = R_h[Δy, c] + R_w[Δx, c]: every pair with the same offsets (Δy, Δx) holds the same
    value, and those values are a row term plus a column term. Returns (R_h [2wh-1, hd], R_w [2ww-1, hd],
    the largest deviation from that form, relative to the largest |bias|). Only R_h + R_w is determined
    (a constant per channel may move between them); any split gives the same logits.
    """
    wh, ww = _pair(window)
    hd, n, _ = bias.shape
    y, x = np.divmod(np.arange(n), ww)
    dy = (y[:, None] - y[None, :]) + wh - 1  # [N, N] indices into 2wh-1
    dx = (x[:, None] - x[None, :]) + ww - 1
    cell = dy * (2 * ww - 1) + dx
    sums = np.zeros((hd, (2 * wh - 1) * (2 * ww - 1)))
    counts = np.bincount(cell.reshape(-1), minlength=sums.shape[1]).astype(np.float64)
    for c in range(hd):
        sums[c] = np.bincount(cell.reshape(-1), weights=bias[c].reshape(-1).astype(np.float64), minlength=sums.shape[1])
    table = (sums / np.maximum(counts, 1)).reshape(hd, 2 * wh - 1, 2 * ww - 1)  # every offset pair occurs
    rh = table.mean(axis=2)  # [hd, 2wh-1]
    rw = table.mean(axis=1) - table.mean(axis=(1, 2))[:, None]
    model = rh[:, :, None] + rw[:, None, :]
    scale = max(float(np.abs(bias).max()), 1e-6)
    separable = float(np.abs(table - model).max())
    consistent = float(np.abs(bias - table.reshape(hd, -1)[:, cell]).max())
    return rh.T.astype(np.float32), rw.T.astype(np.float32), max(separable, consistent) / scale
