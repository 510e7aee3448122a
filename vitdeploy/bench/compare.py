"""Regression gate between two bench result files.

Runs pair up by (model, backend, precision, device, mode) and then by batch
size. Median latency is what the latency threshold gates (p99 is shown but is too
noisy to gate on); the accuracy threshold gates the drop of each run's headline
accuracy in percentage points.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from vitdeploy.bench.accuracy import headline_name, headline_value
from vitdeploy.bench.environment import device_name
from vitdeploy.bench.schema import run_environment, run_key
from vitdeploy.bench.stats import CV_WARN
from vitdeploy.errors import VitdeployError


@dataclass
class Row:
    key: tuple
    batch: int
    base: dict
    cand: dict
    acc_base: float | None = None
    acc_cand: float | None = None
    regressions: list[str] = field(default_factory=list)

    @property
    def model(self) -> str:
        return self.key[0]

    @property
    def config(self) -> str:
        model, backend, precision, device, mode = self.key
        return f"{backend}/{precision} {device}" + ("" if mode == "compute" else f" {mode}")

    def delta(self, stat: str) -> float:
        b, c = self.base["latency_ms"][stat], self.cand["latency_ms"][stat]
        return (c - b) / b if b else 0.0

    @property
    def throughput_delta(self) -> float:
        b, c = self.base["throughput_ips"], self.cand["throughput_ips"]
        return (c - b) / b if b else 0.0

    @property
    def accuracy_delta(self) -> float | None:
        if self.acc_base is None or self.acc_cand is None:
            return None
        return self.acc_cand - self.acc_base


@dataclass
class Comparison:
    rows: list[Row]
    max_latency_regression: float
    max_accuracy_drop: float
    notes: list[str] = field(default_factory=list)
    devices: tuple[str, str] = ("", "")
    commits: tuple[str, str] = ("", "")

    @property
    def regressed(self) -> bool:
        return any(r.regressions for r in self.rows)


def parse_percent(text: str) -> float:
    """'5%' or '5' -> 0.05."""
    t = str(text).strip().rstrip("%").strip()
    try:
        v = float(t)
    except ValueError:
        raise VitdeployError(f"'{text}' is not a percentage", "for example --max-latency-regression 5%") from None
    if v < 0:
        raise VitdeployError(f"'{text}' must not be negative", "for example --max-latency-regression 5%")
    return v / 100.0


def _index(doc: dict) -> dict[tuple, dict]:
    out: dict[tuple, dict] = {}
    for run in doc["runs"]:
        entry = out.setdefault(run_key(run), {"results": {}, "accuracy": None, "metric": None})
        for r in run["results"]:
            entry["results"][r["batch"]] = r  # a later run of the same config wins
        acc = headline_value(run)
        if acc is not None:
            entry["accuracy"], entry["metric"] = acc, headline_name(run)
    return out


def _commit(doc: dict) -> str:
    git = doc["environment"].get("git") or {}
    sha = git.get("commit", "")[:10]
    return sha + ("+dirty" if sha and git.get("dirty") else "")


def _device(doc: dict) -> str:
    runs = sorted(doc["runs"], key=lambda r: r["device"])
    names = dict.fromkeys(device_name(run_environment(doc, r), r["device"]) for r in runs)
    return ", ".join(names) or device_name(doc["environment"], "cpu")


def compare(base_doc: dict, cand_doc: dict, *, max_latency_regression: float = 0.05,
            max_accuracy_drop: float = 0.3, names: tuple[str, str] = ("baseline", "candidate")) -> Comparison:
    base, cand = _index(base_doc), _index(cand_doc)
    common = [k for k in base if k in cand]
    if not common:
        bm, cm = {k[0] for k in base}, {k[0] for k in cand}
        if not bm & cm:
            raise VitdeployError(
                f"{names[0]} measures {', '.join(sorted(bm)) or 'nothing'} and {names[1]} measures "
                f"{', '.join(sorted(cm)) or 'nothing'}: different models, nothing to compare",
                "compare results of the same model")
        raise VitdeployError(
            f"no run matches on model, backend, precision, device and mode ({names[0]}: "
            f"{'; '.join(' '.join(k) for k in base)} | {names[1]}: {'; '.join(' '.join(k) for k in cand)})",
            "benchmark the candidate with the baseline's settings")
    cmp = Comparison([], max_latency_regression, max_accuracy_drop,
                     devices=(_device(base_doc), _device(cand_doc)), commits=(_commit(base_doc), _commit(cand_doc)))
    if cmp.devices[0] != cmp.devices[1]:
        cmp.notes.append(f"different devices: {names[0]} ran on {cmp.devices[0]}, {names[1]} on {cmp.devices[1]}")
    for k in base:
        if k not in cand:
            cmp.notes.append(f"only in {names[0]}: {' '.join(k)}")
    for k in cand:
        if k not in base:
            cmp.notes.append(f"only in {names[1]}: {' '.join(k)}")
    for k in common:
        b, c = base[k], cand[k]
        batches = sorted(set(b["results"]) & set(c["results"]))
        missing = sorted(set(b["results"]) ^ set(c["results"]))
        if missing:
            cmp.notes.append(f"{' '.join(k)}: batch {', '.join(map(str, missing))} measured on one side only")
        acc_b, acc_c = b["accuracy"], c["accuracy"]
        if acc_b is not None and acc_c is not None and b["metric"] != c["metric"]:
            cmp.notes.append(f"{' '.join(k)}: accuracy is {b['metric']} in {names[0]} but {c['metric']} in {names[1]}, not gated")
            acc_b = acc_c = None
        for batch in batches:
            row = Row(k, batch, b["results"][batch], c["results"][batch], acc_b, acc_c)
            d = row.delta("median")
            if d > max_latency_regression:
                row.regressions.append(f"median {d:+.1%} > +{max_latency_regression:.1%}")
                cvs = (row.base["latency_ms"]["cv"], row.cand["latency_ms"]["cv"])
                if max(cvs) > CV_WARN:
                    cmp.notes.append(f"{' '.join(k)} batch {batch}: CV {cvs[0]:.1%} / {cvs[1]:.1%}, noisy: "
                                     "confirm with locked clocks and a longer --duration-s")
            graphs = ((row.base.get("cuda_graph") or {}).get("used"), (row.cand.get("cuda_graph") or {}).get("used"))
            if graphs[0] != graphs[1]:
                cmp.notes.append(f"{' '.join(k)} batch {batch}: CUDA graph replay {'on' if graphs[0] else 'off'} in "
                                 f"{names[0]} but {'on' if graphs[1] else 'off'} in {names[1]}")
            ad = row.accuracy_delta
            if ad is not None and -ad > max_accuracy_drop:
                row.regressions.append(f"accuracy {ad:+.2f} pts < -{max_accuracy_drop:g}")
            cmp.rows.append(row)
        if (b["accuracy"] is None) != (c["accuracy"] is None):
            cmp.notes.append(f"{' '.join(k)}: accuracy measured on one side only, not gated")
    if not cmp.rows:
        raise VitdeployError("the two results share no batch size for any matching run",
                             "benchmark both with the same --batch-sizes list")
    return cmp


def _fmt_ms(v: float) -> str:
    return f"{v:.4g}"


def _pct(v: float) -> str:
    return f"{v:+.1%}"


def _acc(row: Row) -> str:
    if row.accuracy_delta is None:
        return "-"
    return f"{row.acc_base:.2f} → {row.acc_cand:.2f} ({row.accuracy_delta:+.2f})"


def to_markdown(cmp: Comparison, names: tuple[str, str] = ("baseline", "candidate")) -> str:
    """A pull-request comment: verdict first, then the per-batch table, then notes."""
    n_bad = sum(1 for r in cmp.rows if r.regressions)
    verdict = (f"❌ **{n_bad} regression{'s' if n_bad != 1 else ''}**" if n_bad else "✅ **no regression**")
    lines = [
        "### vitdeploy bench: compare",
        "",
        f"{verdict} (limits: median latency +{cmp.max_latency_regression:.1%}, accuracy -{cmp.max_accuracy_drop:g} pts)",
        "",
        f"{names[0]}: {cmp.devices[0]} `{cmp.commits[0] or '?'}` · {names[1]}: {cmp.devices[1]} `{cmp.commits[1] or '?'}`",
        "",
        "| model | config | batch | median ms | Δ median | p99 ms | Δ p99 | img/s | Δ img/s | accuracy % | |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in cmp.rows:
        mark = "❌ " + "; ".join(r.regressions) if r.regressions else "✅"
        dm = _pct(r.delta("median"))
        lines.append(
            f"| {r.model} | {r.config} | {r.batch} "
            f"| {_fmt_ms(r.base['latency_ms']['median'])} → {_fmt_ms(r.cand['latency_ms']['median'])} "
            f"| {'**' + dm + '**' if r.regressions else dm} "
            f"| {_fmt_ms(r.base['latency_ms']['p99'])} → {_fmt_ms(r.cand['latency_ms']['p99'])} | {_pct(r.delta('p99'))} "
            f"| {r.base['throughput_ips']:.1f} → {r.cand['throughput_ips']:.1f} | {_pct(r.throughput_delta)} "
            f"| {_acc(r)} | {mark} |"
        )
    if cmp.notes:
        lines += ["", *[f"- {n}" for n in cmp.notes]]
    return "\n".join(lines) + "\n"


def to_table(cmp: Comparison):
    from rich import box
    from rich.table import Table

    t = Table(box=box.SIMPLE_HEAD, title="bench compare (candidate vs baseline)", title_justify="left")
    for col in ("model", "config", "batch", "median ms", "Δ median", "p99 ms", "Δ p99", "img/s", "Δ img/s", "accuracy %", "status"):
        t.add_column(col, justify="left" if col in ("model", "config", "status") else "right", no_wrap=True)
    for r in cmp.rows:
        bad = bool(r.regressions)
        dm = _pct(r.delta("median"))
        t.add_row(
            r.model, r.config, str(r.batch),
            f"{_fmt_ms(r.base['latency_ms']['median'])} → {_fmt_ms(r.cand['latency_ms']['median'])}",
            f"[bold red]{dm}[/]" if bad and any(x.startswith("median") for x in r.regressions) else dm,
            f"{_fmt_ms(r.base['latency_ms']['p99'])} → {_fmt_ms(r.cand['latency_ms']['p99'])}", _pct(r.delta("p99")),
            f"{r.base['throughput_ips']:.1f} → {r.cand['throughput_ips']:.1f}", _pct(r.throughput_delta),
            _acc(r),
            "[bold red]REGRESSION[/] " + "; ".join(r.regressions) if bad else "[green]ok[/]",
        )
    return t
