"""`vitdeploy report`: PNG plots and a Markdown summary from one or more bench result files.

Plots (matplotlib, Agg backend, so no display is needed; drawn by `plots`):
  latency_<model>.png     latency per batch size: box and strip per configuration, with its n
  throughput_<model>.png  images/s against batch size (bars when only one batch size was measured)
  accuracy_latency.png    headline accuracy against median latency (runs with accuracy only)
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from vitdeploy.bench.accuracy import headline_label, headline_value
from vitdeploy.bench.environment import device_name
from vitdeploy.bench.plots import plot_accuracy_latency, plot_latency, plot_throughput
from vitdeploy.bench.schema import run_caveats as caveats
from vitdeploy.bench.schema import run_device, run_environment
from vitdeploy.bench.tables import decimals, fixed, number_column
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
    config: str = ""  # the label without the source: the same configuration measured in several files


def entries(docs: list[tuple[str, dict]]) -> list[Entry]:
    many = len(docs) > 1
    out = []
    for source, doc in docs:
        for run in doc["runs"]:
            config = f"{run['backend']}/{run['precision']} {run_device(run)}"
            if run["mode"] != "compute":
                config += f" {run['mode']}"
            role = (run.get("interleaved") or {}).get("role")
            if role:  # a `compare --run` session: the same configuration twice, baseline and candidate
                config += f" ({role})"
            label = f"{config} [{source}]" if many else config
            out.append(Entry(run, label, source, device_name(run_environment(doc, run), run["device"]), config))
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "model"


def _summary_table(items: list[Entry]) -> list[str]:
    labels = {headline_label(e.run) for e in items if headline_value(e.run) is not None}
    header = f"{labels.pop()} (%)" if len(labels) == 1 else "accuracy figure (%)"
    lines = [f"| model | configuration | device | batch | median ms | p99 ms | CV | img/s | {header} |",
             "|---|---|---|--:|--:|--:|--:|--:|--:|"]
    many = len({headline_label(e.run) for e in items if headline_value(e.run) is not None}) > 1
    for e in items:
        acc = headline_value(e.run)
        flag = " ⚠" if caveats(e.run) else ""
        cell = "-" if acc is None else f"{acc:.2f}" + (f" ({headline_label(e.run)})" if many else "")
        res = sorted(e.run["results"], key=lambda r: r["batch"])
        # one run's rows share decimals (median and p99 alike, chosen from its values), never an exponent
        places = decimals([r["latency_ms"][k] for r in res for k in ("median", "p99")])
        med = [fixed(r["latency_ms"]["median"], places) for r in res]
        p99 = [fixed(r["latency_ms"]["p99"], places) for r in res]
        ips = number_column([r["throughput_ips"] for r in res])
        for i, r in enumerate(res):
            lines.append(f"| {e.run['model']} | {e.label}{flag} | {e.device} | {r['batch']} | {med[i]} | {p99[i]} "
                         f"| {r['latency_ms']['cv']:.1%} | {ips[i]} | {cell} |")
        for sk in e.run["skipped"]:
            lines.append(f"| {e.run['model']} | {e.label} | {e.device} | {sk['batch']} | skipped: {sk['reason']} | | | | |")
    return lines


def caveat_lines(items: list[Entry]) -> list[str]:
    """One line per configuration with caveats: 'model config: caveat; caveat'."""
    return [f"{e.run['model']} {e.label}: {'; '.join(c)}" for e in items if (c := caveats(e.run))]


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
    notes = caveat_lines(items)
    if notes:  # what the terminal warned about travels with the figures (⚠ in the table, a caption in each PNG)
        md += ["", "> ⚠ These figures do not measure what their labels suggest:", ">",
               *[f"> - {n}" for n in notes]]
    md += ["", "## Summary", "", *_summary_table(items), ""]
    for model, group in by_model.items():
        # one configuration from several files side by side (main next to pr), in first-seen order
        order = {c: k for k, c in enumerate(dict.fromkeys(e.config for e in group))}
        group = sorted(group, key=lambda e: order[e.config])
        md += [f"## {model}", ""]
        for kind, fn in (("throughput", plot_throughput), ("latency", plot_latency)):
            path = out_dir / f"{kind}_{_slug(model)}.png"
            if fn(model, group, path, caveat_lines(group)):
                written.append(path)
                md += [f"![{model} {kind}]({path.name})", ""]
    acc_path = out_dir / "accuracy_latency.png"
    md += ["## Accuracy vs latency", ""]
    if plot_accuracy_latency(items, acc_path, caveat_lines([e for e in items if headline_value(e.run) is not None])):
        written.append(acc_path)
        md += [f"![accuracy vs latency]({acc_path.name})", ""]
    else:
        md += ["No run carries accuracy figures (run `vitdeploy bench --accuracy-data DIR`).", ""]
    readme = out_dir / "README.md"
    readme.write_text("\n".join(md))
    written.append(readme)
    return written
