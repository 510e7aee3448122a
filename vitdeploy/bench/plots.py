"""The PNGs `vitdeploy report` writes, drawn to be read in a pull-request comment.

Every figure is `WIDTH_PX` wide at any number of configurations (it grows in height only),
laid out by matplotlib's constrained layout so no label leaves the canvas, and every value
axis starts at zero, so a gap between two configurations is drawn at its true size:

  latency_<model>.png     per batch size, a box (quartiles, whiskers at 1.5 IQR) over a strip of
                          every recorded iteration, one row per configuration; the tick label names
                          the configuration with its median and its n
  throughput_<model>.png  images/s against batch size, one line per configuration; with a single
                          batch size, one bar per configuration instead of a lone dot
  accuracy_latency.png    headline accuracy (0-100 %) against median latency; points are numbered
                          (numbers placed where they overlap nothing) and the key under the plot
                          names each number with its exact figures

A run whose figures do not measure what its label suggests (plugin nodes timed on the CPU
reference, FP16 on the CPU: `report.caveats`) gets a ⚠ caption line at the top of every figure
it appears in.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from vitdeploy.bench.accuracy import headline_label, headline_value
from vitdeploy.bench.tables import decimals, fixed

DPI = 100
WIDTH_IN = 9.0
WIDTH_PX = int(WIDTH_IN * DPI)  # 900 px: full width in a GitHub comment, no downscaling of the text
LABEL_CHARS = 34  # configuration names (tick labels) wrap after this many characters
KEY_CHARS_1COL, KEY_CHARS_2COL = 140, 72  # legend entries, at the legend's font size
KEY_LINE_IN = 0.17  # height of one legend text line
STRIP_SEED = 0  # the strip's jitter is seeded: the same results draw the same PNG


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _colors(n: int) -> list:
    plt = _plt()
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return [cycle[i % len(cycle)] for i in range(n)]


def _wrap(label: str, chars: int = LABEL_CHARS) -> str:
    return "\n".join(textwrap.wrap(label, chars, break_on_hyphens=False)) or label


def _subplots(height_in: float, rows: int = 1, **kw):
    """A `WIDTH_PX`-wide figure under constrained layout, with a margin of about 8 px all round."""
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    plt = _plt()
    return plt.subplots(rows, 1, figsize=(WIDTH_IN, height_in), squeeze=False,
                        layout=ConstrainedLayoutEngine(w_pad=0.08, h_pad=0.08), **kw)


def _key_lines(labels: list[str]) -> tuple[list[str], int, int]:
    """Legend labels wrapped to fit, the number of legend columns, and the text lines the key needs."""
    ncol = 2 if len(labels) > 4 and max(map(len, labels)) <= KEY_CHARS_2COL else 1
    wrapped = [_wrap(lab, KEY_CHARS_2COL if ncol == 2 else KEY_CHARS_1COL) for lab in labels]
    heights = [w.count("\n") + 1 for w in wrapped]
    per_col = (len(wrapped) + ncol - 1) // ncol
    lines = max(sum(heights[c * per_col:(c + 1) * per_col]) for c in range(ncol))
    return wrapped, ncol, lines


def _save(fig, path: Path) -> bool:
    """At `DPI` and the figure's own size (no tight bbox: constrained layout has made everything fit)."""
    if fig is None:
        return False
    plt = _plt()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return True


CAVEAT_CHARS = 120


def caption(fig, caveats: list[str] | None) -> None:
    """The runs' caveats at the top of the figure (under its title, wrapped to its width; the figure
    grows by their height), so a PNG seen alone still says what `bench` warned about."""
    if not caveats:
        return
    lines = "\n".join(_wrap("⚠ " + c, CAVEAT_CHARS) for c in caveats)
    title = fig._suptitle.get_text() + "\n" if fig._suptitle is not None else ""
    fig.set_figheight(fig.get_figheight() + 0.17 * (lines.count("\n") + 1))
    fig.suptitle(title + lines, fontsize=8.5 if not title else 10)


def _n(res: dict) -> str:
    shown, total = len(res["samples_ms"]), res.get("samples_total") or len(res["samples_ms"])
    return f"n={shown}" if total <= shown else f"n={shown} of {total}"


def latency_figure(model: str, items: list, caveats: list[str] | None = None):
    """One panel per batch size, stacked; in each, one row per configuration that measured it (None: no samples)."""
    batches = sorted({r["batch"] for e in items for r in e.run["results"] if r["samples_ms"]})
    if not batches:
        return None
    colors = _colors(len(items))
    panels = []
    for batch in batches:
        rows = []
        for i, e in enumerate(items):
            res = next((r for r in e.run["results"] if r["batch"] == batch and r["samples_ms"]), None)
            if res is not None:
                rows.append((i, e, res))
        panels.append((batch, rows))
    # rows are evenly spaced: each must hold the tallest tick label (its wrapped name and the median/n line)
    line_in = 0.135  # one line of 8 pt text
    heights = [max(1.0, len(rows) * (max(_wrap(e.label).count("\n") + 2 for _, e, _ in rows) * line_in + 0.14) + 0.15)
               for _, rows in panels]
    fig, axes = _subplots(sum(heights) + 0.9 + 0.55 * len(panels), len(panels), gridspec_kw={"height_ratios": heights})
    rng = np.random.default_rng(STRIP_SEED)
    for ax, (batch, rows) in zip(axes[:, 0], panels):
        data = [np.asarray(res["samples_ms"], dtype=float) for _, _, res in rows]
        pos = np.arange(len(rows))
        for y, d, (i, _, _) in zip(pos, data, rows):  # the strip under the box, so the quartiles stay visible
            jitter = rng.uniform(-0.22, 0.22, size=d.size)
            ax.scatter(d, y + jitter, s=7, color=colors[i], alpha=float(np.clip(10 / np.sqrt(d.size), 0.12, 0.8)),
                       linewidths=0, zorder=2)
        ax.boxplot(data, positions=pos, orientation="horizontal", widths=0.6, showfliers=False, patch_artist=True,
                   boxprops={"facecolor": "none", "edgecolor": "0.1", "linewidth": 1.1, "zorder": 3},
                   medianprops={"color": "black", "linewidth": 2.0, "zorder": 4},
                   whiskerprops={"color": "0.2", "zorder": 3}, capprops={"color": "0.2", "zorder": 3})
        medians = [float(np.median(d)) for d in data]
        places = decimals(medians)
        ax.set_yticks(pos)
        ax.set_yticklabels([f"{_wrap(e.label)}\nmedian {fixed(m, places)} ms, {_n(res)}"
                            for (_, e, res), m in zip(rows, medians)], fontsize=8)
        ax.set_ylim(len(rows) - 0.5, -0.5)  # the first configuration on top
        ax.set_xlim(0, max(float(d.max()) for d in data) * 1.05)
        ax.set_title(f"batch {batch}", loc="left", fontsize=10)
        ax.set_xlabel("latency of one batch (ms)", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"{model}: latency per batch size\nbox: quartiles and median, whiskers: 1.5 IQR, "
                 "dots: every recorded iteration", fontsize=10)
    caption(fig, caveats)
    return fig


def throughput_figure(model: str, items: list, caveats: list[str] | None = None):
    """Images/s per configuration: lines over batch sizes, or bars when only one batch size was measured."""
    series = [(i, e, sorted(e.run["results"], key=lambda r: r["batch"])) for i, e in enumerate(items)]
    series = [s for s in series if s[2]]
    if not series:
        return None
    colors = _colors(len(items))
    batches = sorted({r["batch"] for _, _, res in series for r in res})
    if len(batches) == 1:  # one batch size: a bar per configuration, not a dot on a zoomed axis
        labels = [_wrap(e.label) for _, e, _ in series]
        values = [res[0]["throughput_ips"] for _, _, res in series]
        height = max(2.2, sum(lab.count("\n") + 1.3 for lab in labels) * 0.28 + 1.3)
        fig, axes = _subplots(height)
        ax = axes[0, 0]
        pos = np.arange(len(series))
        ax.barh(pos, values, color=[colors[i] for i, _, _ in series], alpha=0.8, height=0.6)
        places = decimals(values)
        for y, v in zip(pos, values):
            ax.text(v, y, f" {fixed(v, places)}", va="center", ha="left", fontsize=8)
        ax.set_yticks(pos)
        ax.set_yticklabels(labels, fontsize=8)
        ax.set_ylim(len(series) - 0.5, -0.5)
        ax.set_xlim(0, max(values) * 1.2 if max(values) > 0 else 1)  # room for the value after the longest bar
        ax.set_xlabel("throughput (images/s, at median latency)")
        ax.set_title(f"{model}: throughput at batch {batches[0]} (the only batch size measured)", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        caption(fig, caveats)
        return fig
    markers = "osD^vP*X"
    labels, ncol, key_lines = _key_lines([e.label for _, e, _ in series])
    fig, axes = _subplots(4.4 + KEY_LINE_IN * 1.15 * key_lines)
    ax = axes[0, 0]
    for k, ((i, e, res), label) in enumerate(zip(series, labels)):
        # distinct markers and dashes keep overlapping lines visible
        ax.plot([r["batch"] for r in res], [r["throughput_ips"] for r in res], marker=markers[k % len(markers)],
                linestyle=("-", "--", ":", "-.")[(k // len(markers)) % 4], color=colors[i], label=label, alpha=0.85)
    ax.set_xscale("log", base=2)
    ax.set_xticks(batches)
    ax.set_xticklabels([str(b) for b in batches])
    ax.minorticks_off()
    ax.set_ylim(bottom=0, top=max(r["throughput_ips"] for _, _, res in series for r in res) * 1.08)
    ax.set_xlabel("batch size")
    ax.set_ylabel("throughput (images/s, at median latency)")
    ax.set_title(f"{model}: throughput vs batch size", fontsize=10)
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncol=ncol, fontsize=8, frameon=False)
    caption(fig, caveats)
    return fig


def accuracy_points(items: list) -> list[tuple[str, float, float, int, str]]:
    """(label, median latency at the smallest measured batch, headline accuracy %, that batch, what the figure is)."""
    pts = []
    for e in items:
        acc = headline_value(e.run)
        if acc is None or not e.run["results"]:
            continue
        first = min(e.run["results"], key=lambda r: r["batch"])
        pts.append((f"{e.run['model']} {e.label}", first["latency_ms"]["median"], acc, first["batch"],
                    headline_label(e.run) or "accuracy"))
    return pts


# Offsets (in points) tried in order for a point's number: close first, then further out with a leader line.
_RINGS = (7, 13, 20, 28, 38)
_DIRECTIONS = ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1))


def _overlaps(a, b, pad: float = 1.0) -> bool:
    return not (a.x1 + pad <= b.x0 or b.x1 + pad <= a.x0 or a.y1 + pad <= b.y0 or b.y1 + pad <= a.y0)


def place_labels(ax, xy: list[tuple[float, float]], texts: list[str], colors: list | None = None,
                 fontsize: float = 9) -> list:
    """Annotate each point with its text at the first offset (`_RINGS` x `_DIRECTIONS`, nearest first)
    where the text lies inside the axes and overlaps no other label and no point. Deterministic: the
    same points always get the same places. Where no offset is free, the first one inside the axes
    is used. A text away from its point gets a leader line; a text in its point's colour says whose
    it is in a cluster. Call after the layout is final."""
    from matplotlib.transforms import Bbox

    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    half = 4 * fig.dpi / 72  # about half a marker, in pixels
    points = []
    for x, y in xy:
        px, py = ax.transData.transform((x, y))
        points.append(Bbox.from_extents(px - half, py - half, px + half, py + half))

    def attempt(x, y, text, offset, leader, color):
        dx, dy = offset
        return ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                           color=color, fontweight="bold",
                           ha="left" if dx > 0 else "right" if dx < 0 else "center",
                           va="bottom" if dy > 0 else "top" if dy < 0 else "center",
                           arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.6, "shrinkA": 1, "shrinkB": 3}
                           if leader else None)

    placed, out = [], []
    colors = colors or ["black"] * len(xy)
    for (x, y), text, color in zip(xy, texts, colors):
        chosen = first_inside = None
        for r in _RINGS:
            for dx, dy in _DIRECTIONS:
                ann = attempt(x, y, text, (dx * r, dy * r), False, color)
                box = ann.get_window_extent(renderer)
                ann.remove()
                if not (box.x0 >= inside.x0 and box.x1 <= inside.x1 and box.y0 >= inside.y0 and box.y1 <= inside.y1):
                    continue
                if first_inside is None:
                    first_inside = ((dx * r, dy * r), box, r)
                if not any(_overlaps(box, b) for b in placed + points):
                    chosen = ((dx * r, dy * r), box, r)
                    break
            if chosen:
                break
        offset, box, r = chosen or first_inside or ((0, 0), None, 0)
        ann = attempt(x, y, text, offset, r > _RINGS[0], color)
        placed.append(box if box is not None else ann.get_window_extent(renderer))
        out.append(ann)
    return out


def accuracy_latency_figure(items: list, caveats: list[str] | None = None):
    """Headline accuracy against median latency, numbered points and a key (None: no run has accuracy)."""
    pts = accuracy_points(items)
    if not pts:
        return None
    metrics = list(dict.fromkeys(p[4] for p in pts))
    lat_places = decimals([p[1] for p in pts])
    keys = [f"{k + 1}: {label}: {acc:.2f} % at {fixed(lat, lat_places)} ms (batch {batch}"
            + (f", {metric})" if len(metrics) > 1 else ")") for k, (label, lat, acc, batch, metric) in enumerate(pts)]
    keys, ncol, key_lines = _key_lines(keys)
    fig, axes = _subplots(4.2 + KEY_LINE_IN * key_lines)
    ax = axes[0, 0]
    colors = _colors(len(pts))
    handles = [ax.scatter([lat], [acc], s=40, color=colors[k], zorder=3, label=key)
               for k, ((_, lat, acc, _, _), key) in enumerate(zip(pts, keys))]
    ax.set_xlim(0, (max(p[1] for p in pts) * 1.12) or 1.0)
    ax.set_ylim(0, max(100.0, max(p[2] for p in pts) * 1.02))
    ax.set_xlabel("median latency (ms, at each run's smallest measured batch)")
    ax.set_ylabel(_wrap(f"{metrics[0]} (%)" if len(metrics) == 1 else "accuracy figure (%), see the key"), fontsize=8)
    ax.set_title("accuracy vs latency (numbers: see the key below)", fontsize=10)
    ax.grid(alpha=0.3)
    fig.legend(handles=handles, loc="outside lower center", ncol=ncol, fontsize=7.5, frameon=False, handletextpad=0.3)
    caption(fig, caveats)
    fig.canvas.draw()  # lay the figure out, then freeze it: the numbers are placed against the final axes
    fig.set_layout_engine("none")
    place_labels(ax, [(p[1], p[2]) for p in pts], [str(k + 1) for k in range(len(pts))], colors)
    return fig


def plot_latency(model: str, items: list, path: Path, caveats: list[str] | None = None) -> bool:
    return _save(latency_figure(model, items, caveats), path)


def plot_throughput(model: str, items: list, path: Path, caveats: list[str] | None = None) -> bool:
    return _save(throughput_figure(model, items, caveats), path)


def plot_accuracy_latency(items: list, path: Path, caveats: list[str] | None = None) -> bool:
    return _save(accuracy_latency_figure(items, caveats), path)
