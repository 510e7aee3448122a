"""`vitdeploy report`: PNG plots and a Markdown summary from one or more bench result files.

Plots (matplotlib, Agg backend, so no display is needed):
  latency_<model>.png     latency distribution per batch size, one violin per configuration
  throughput_<model>.png  images/s against batch size, one line per configuration
  accuracy_latency.png    headline accuracy against median latency (runs with accuracy only)
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from vitdeploy.bench.accuracy import headline_label, headline_value
from vitdeploy.bench.environment import device_name
from vitdeploy.bench.schema import run_device, run_environment
from vitdeploy.errors import VitdeployError


def source_labels(paths: list[str], labels: tuple[str, ...] | list[str] | None = None) -> list[str]:
    """One distinct label per result file: the given `--label`s, else the shortest path suffix that
    tells the files apart ("main/bench" and "pr/bench" for main/bench.json and pr/bench.json)."""
    if labels:
        if len(labels) != len(paths):
            raise VitdeployError(f"{len(labels)} --label for {len(paths)} result files", "give one --label per file, in order")
        if len(set(labels)) != len(labels):
            dup = next(lab for lab in labels if list(labels).count(lab) > 1)
            raise VitdeployError(f"--label '{dup}' is given twice", "give each result file its own label")
        return list(labels)
    parts = [Path(p).resolve().with_suffix("").parts for p in paths]
    for k in range(1, max((len(x) for x in parts), default=1) + 1):
        out = ["/".join(x[-k:]) for x in parts]
        if len(set(out)) == len(out):
            return out
    # the same file twice: number the repeats
    seen: dict[str, int] = {}
    out = []
    for x in parts:
        name = "/".join(x[-2:])
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out


@dataclass
class Entry:
    """One run with the label it carries in legends (source file added when several are plotted)."""

    run: dict
    label: str
    source: str
    device: str


def entries(docs: list[tuple[str, dict]]) -> list[Entry]:
    many = len(docs) > 1
    out = []
    for source, doc in docs:
        for run in doc["runs"]:
            label = f"{run['backend']}/{run['precision']} {run_device(run)}"
            if run["mode"] != "compute":
                label += f" {run['mode']}"
            if many:
                label += f" [{source}]"
            out.append(Entry(run, label, source, device_name(run_environment(doc, run), run["device"])))
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "model"


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_latency(model: str, items: list[Entry], path: Path) -> bool:
    """One subplot per batch size; in each, a violin of per-iteration latencies per configuration."""
    plt = _plt()
    batches = sorted({r["batch"] for e in items for r in e.run["results"]})
    if not batches:
        return False
    cols = min(len(batches), 4)
    rows = (len(batches) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.8 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    labels = [e.label for e in items]
    for ax, batch in zip(axes.flat, batches):
        data, pos, cols_used = [], [], []
        for i, e in enumerate(items):
            res = next((r for r in e.run["results"] if r["batch"] == batch), None)
            if res and res["samples_ms"]:
                data.append(res["samples_ms"])
                pos.append(i)
                cols_used.append(colors[i % len(colors)])
        if not data:
            ax.set_visible(False)
            continue
        parts = ax.violinplot(data, positions=pos, showmedians=True, showextrema=True, widths=0.8)
        for body, c in zip(parts["bodies"], cols_used):
            body.set_facecolor(c)
            body.set_alpha(0.55)
        for key in ("cmedians", "cmins", "cmaxes", "cbars"):
            if key in parts:
                parts[key].set_color("black" if key == "cmedians" else "0.35")
                parts[key].set_linewidth(1.6 if key == "cmedians" else 0.9)
        lo = min(min(d) for d in data)
        hi = max(max(d) for d in data)
        if lo > 0 and hi / lo > 20:
            ax.set_yscale("log")
        ax.set_xticks(range(len(items)))
        ax.set_xticklabels([str(i + 1) for i in range(len(items))])
        ax.set_title(f"batch {batch}")
        ax.set_ylabel("latency (ms)")
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(batches):]:
        ax.set_visible(False)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[i % len(colors)], alpha=0.55) for i in range(len(items))]
    fig.legend(handles, [f"{i + 1}: {lab}" for i, lab in enumerate(labels)], loc="lower center",
               ncol=min(len(items), 3), fontsize=8, frameon=False)
    fig.suptitle(f"{model}: latency distribution per batch (median line, extrema whiskers)")
    fig.tight_layout(rect=(0, 0.04 + 0.03 * ((len(items) - 1) // 3), 1, 0.95))
    fig.savefig(path, dpi=110, bbox_inches="tight")  # suptitle and legend may overhang a narrow figure
    plt.close(fig)
    return True


def plot_throughput(model: str, items: list[Entry], path: Path) -> bool:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    drawn = False
    all_batches: set[int] = set()
    markers = "osD^vP*X"
    for i, e in enumerate(items):
        res = sorted(e.run["results"], key=lambda r: r["batch"])
        if not res:
            continue
        xs = [r["batch"] for r in res]
        all_batches.update(xs)
        # Distinct markers and dashes keep overlapping lines visible.
        ax.plot(xs, [r["throughput_ips"] for r in res], marker=markers[i % len(markers)],
                linestyle=("-", "--", ":", "-.")[(i // len(markers)) % 4], label=e.label, alpha=0.85)
        drawn = True
    if not drawn:
        plt.close(fig)
        return False
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(all_batches))
    ax.set_xticklabels([str(b) for b in sorted(all_batches)])
    ax.set_xlabel("batch size")
    ax.set_ylabel("throughput (images/s, at median latency)")
    ax.set_title(f"{model}: throughput vs batch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # suptitle and legend may overhang a narrow figure
    plt.close(fig)
    return True


def accuracy_points(items: list[Entry]) -> list[tuple[str, float, float, int, str]]:
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


def plot_accuracy_latency(items: list[Entry], path: Path) -> bool:
    pts = accuracy_points(items)
    if not pts:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    metrics = {p[4] for p in pts}
    for label, lat, acc, batch, metric in pts:
        ax.scatter([lat], [acc], s=40)
        extra = f", {metric}" if len(metrics) > 1 else ""
        ax.annotate(f"{label} (b{batch}{extra})", (lat, acc), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("median latency (ms, smallest measured batch)")
    ax.set_ylabel(f"{metrics.pop() if len(metrics) == 1 else 'accuracy figure (see labels)'} (%)", fontsize=8)
    ax.set_title("accuracy vs latency")
    ax.grid(alpha=0.3)
    ax.margins(x=0.25, y=0.2)
    ax.set_xlim(left=0)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # suptitle and legend may overhang a narrow figure
    plt.close(fig)
    return True


def _summary_table(items: list[Entry]) -> list[str]:
    labels = {headline_label(e.run) for e in items if headline_value(e.run) is not None}
    header = f"{labels.pop()} (%)" if len(labels) == 1 else "accuracy figure (%)"
    lines = [f"| model | configuration | device | batch | median ms | p99 ms | CV | img/s | {header} |",
             "|---|---|---|--:|--:|--:|--:|--:|--:|"]
    many = len({headline_label(e.run) for e in items if headline_value(e.run) is not None}) > 1
    for e in items:
        acc = headline_value(e.run)
        cell = "-" if acc is None else f"{acc:.2f}" + (f" ({headline_label(e.run)})" if many else "")
        for r in sorted(e.run["results"], key=lambda r: r["batch"]):
            s = r["latency_ms"]
            lines.append(f"| {e.run['model']} | {e.label} | {e.device} | {r['batch']} | {s['median']:.4g} | {s['p99']:.4g} "
                         f"| {s['cv']:.1%} | {r['throughput_ips']:.1f} | {cell} |")
        for sk in e.run["skipped"]:
            lines.append(f"| {e.run['model']} | {e.label} | {e.device} | {sk['batch']} | skipped: {sk['reason']} | | | | |")
    return lines


def random_weight_runs(docs: list[tuple[str, dict]]) -> list[str]:
    """'source: model backend' for every run whose identity records random weights."""
    from vitdeploy.weights import is_random

    return [f"{source}: {run['model']} {run['backend']}" for source, doc in docs for run in doc["runs"]
            if is_random((run.get("identity") or {}).get("weights"))]


def build(docs: list[tuple[str, dict]], out_dir: Path) -> list[Path]:
    """Write the PNGs and README.md into `out_dir` (already created); returns the files written."""
    items = entries(docs)
    by_model: dict[str, list[Entry]] = defaultdict(list)
    for e in items:
        by_model[e.run["model"]].append(e)
    written: list[Path] = []
    md = ["# vitdeploy benchmark report", ""]
    for source, doc in docs:
        env = doc["environment"]
        git = env.get("git") or {}
        md.append(f"- `{source}`: created {doc.get('created', '?')}, commit `{git.get('commit', '?')[:10]}`"
                  f"{' (dirty)' if git.get('dirty') else ''}, vitdeploy {doc.get('vitdeploy', '?')}, schema {doc.get('schema')}")
    if random_weight_runs(docs):
        md += ["", "> ⚠ Some runs use random weights: their latency is real, their accuracy figures are noise."]
    md += ["", "## Summary", "", *_summary_table(items), ""]
    for model, group in by_model.items():
        md += [f"## {model}", ""]
        for kind, fn in (("throughput", plot_throughput), ("latency", plot_latency)):
            path = out_dir / f"{kind}_{_slug(model)}.png"
            if fn(model, group, path):
                written.append(path)
                md += [f"![{model} {kind}]({path.name})", ""]
    acc_path = out_dir / "accuracy_latency.png"
    md += ["## Accuracy vs latency", ""]
    if plot_accuracy_latency(items, acc_path):
        written.append(acc_path)
        md += [f"![accuracy vs latency]({acc_path.name})", ""]
    else:
        md += ["No run carries accuracy figures (run `vitdeploy bench --accuracy-data DIR`).", ""]
    readme = out_dir / "README.md"
    readme.write_text("\n".join(md))
    written.append(readme)
    return written
