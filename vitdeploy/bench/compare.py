"""Regression gate between two bench result files.

Runs pair up by (model, backend, precision, device, mode), then must measure the same
thing: every `schema.MUST_MATCH` identity field (input shape, batch profile, resolved
model, weights, threads, FP16-on-CPU, plugins on the CPU reference or not) and the device
must be equal, else the comparison is refused (exit 2) naming the first difference. Only
the code under test may differ, and what it produces: a different artifact sha256 or
plugin node set is reported, not refused.

Per batch size the gate asks whether the candidate's median latency is more than
`max_latency_regression` above the baseline's. It answers with a seeded bootstrap
interval of the median ratio (`stats.median_ratio_ci`), so the spread of both sides
counts, not just two medians:

    interval entirely above 1 + threshold   -> regression   (exit 1)
    interval entirely at or below it        -> ok           (exit 0)
    interval contains the threshold         -> inconclusive (exit 5): the noise is larger
                                               than the difference the gate must resolve

Two separate runs can be shifted as a whole by load that changed between them, which the
interval cannot see. Every /3 batch record carries the machine's conditions while it was timed
(`conditions.py`); a verdict those conditions could have produced by themselves (a regression
when the candidate ran disturbed, an ok when the baseline did) becomes inconclusive, naming
the disturbance. `compare_interleaved` gates a session of `vitdeploy compare --run`, where both
artifacts were timed in alternating blocks in one process window, on the paired ratio of the
blocks (`stats.paired_ratio_ci`): drift hits both sides of a pair alike.

p99 is shown but too noisy to gate on. The accuracy threshold gates the drop of each
run's headline figure in percentage points, when both sides measured the same figure on
the same kind of data with real (non-random) weights.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from vitdeploy.bench.accuracy import headline_label, headline_name, headline_value
from vitdeploy.bench.environment import device_name
from vitdeploy.bench.schema import identity_difference, require_identity, run_environment, run_key, run_label
from vitdeploy.bench import conditions
from vitdeploy.bench.stats import MIN_PAIRS, median_ratio_ci, paired_ratio_ci
from vitdeploy.errors import VitdeployError
from vitdeploy.weights import is_random

REGRESSION, INCONCLUSIVE, OK = "regression", "inconclusive", "ok"
DEFAULT_CONFIDENCE = 0.95
TWO_RUNS, INTERLEAVED = "two runs", "interleaved"
RUN_HINT = "gate in one window with 'vitdeploy compare --run BASELINE CANDIDATE' (docs/benchmarking.md)"


@dataclass
class Row:
    key: tuple
    batch: int
    base: dict
    cand: dict
    acc_base: float | None = None
    acc_cand: float | None = None
    regressions: list[str] = field(default_factory=list)
    ratio: float = 1.0
    ci: tuple[float, float] = (1.0, 1.0)
    latency: str = OK  # the latency verdict: ok / regression / inconclusive
    why: str = ""  # one line for a regression or an inconclusive row

    @property
    def model(self) -> str:
        return self.key[0]

    @property
    def config(self) -> str:
        model, backend, precision, device, mode = self.key
        return f"{backend}/{precision} {device}" + ("" if mode == "compute" else f" {mode}")

    @property
    def verdict(self) -> str:
        if self.regressions:
            return REGRESSION
        return INCONCLUSIVE if self.latency == INCONCLUSIVE else OK

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
    confidence: float = DEFAULT_CONFIDENCE
    notes: list[str] = field(default_factory=list)
    devices: tuple[str, str] = ("", "")
    commits: tuple[str, str] = ("", "")
    accuracy_label: str | None = None  # what the accuracy column holds, when every row holds the same figure
    accuracy_metric: str | None = None
    random_weights: bool = False
    method: str = TWO_RUNS  # or INTERLEAVED: one `compare --run` session, gated on paired blocks
    figure: str = "latency"  # or "cpu-time" (interleaved CPU runs: the CPU time of each block's iterations)

    @property
    def regressed(self) -> bool:
        return any(r.verdict == REGRESSION for r in self.rows)

    @property
    def inconclusive(self) -> bool:
        return any(r.verdict == INCONCLUSIVE for r in self.rows)

    @property
    def verdict(self) -> str:
        return REGRESSION if self.regressed else INCONCLUSIVE if self.inconclusive else OK


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
        entry = out.setdefault(run_key(run), {"results": {}, "accuracy": None, "metric": None, "run": run})
        entry["run"] = run  # a later run of the same config wins
        for r in run["results"]:
            entry["results"][r["batch"]] = r
        acc = headline_value(run)
        if acc is not None:
            head = run["accuracy"]["headline"]
            entry["accuracy"], entry["metric"] = acc, (headline_name(run), head.get("data"))
            entry["label"] = headline_label(run)
    return out


def _commit(doc: dict) -> str:
    git = doc["environment"].get("git") or {}
    sha = git.get("commit", "")[:10]
    return sha + ("+dirty" if sha and git.get("dirty") else "")


def _device(doc: dict) -> str:
    runs = sorted(doc["runs"], key=lambda r: r["device"])
    names = dict.fromkeys(device_name(run_environment(doc, r), r["device"]) for r in runs)
    return ", ".join(names) or device_name(doc["environment"], "cpu")


def _library(doc: dict, run: dict) -> tuple[str, str | None]:
    lib = {"ort": "onnxruntime", "trt": "tensorrt"}.get(run["backend"], "torch")
    return lib, (run_environment(doc, run).get("versions") or {}).get(lib)


def _decide(row: Row, limit: float, confidence: float, what: str, advice: str) -> None:
    """ok / regression / inconclusive from `row.ratio` and `row.ci` against 1 + limit."""
    lo, hi = row.ci
    bound = 1.0 + limit
    ci = f"{confidence:.0%} CI {lo - 1:+.1%}..{hi - 1:+.1%}"
    if lo > bound:
        row.latency = REGRESSION
        row.regressions.append(f"{what} {row.ratio - 1:+.1%} > +{limit:.1%} ({ci})")
    elif hi <= bound:
        row.latency = OK
    else:
        row.latency = INCONCLUSIVE
        cvs = (row.base["latency_ms"]["cv"], row.cand["latency_ms"]["cv"])
        row.why = f"{what} {row.ratio - 1:+.1%}, {ci} contains the +{limit:.1%} limit (CV {cvs[0]:.1%} / {cvs[1]:.1%}): {advice}"


def _latency_verdict(row: Row, limit: float, confidence: float) -> None:
    base, cand = row.base.get("samples_ms") or [], row.cand.get("samples_ms") or []
    if len(base) < 2 or len(cand) < 2:
        row.ratio = (row.cand["latency_ms"]["median"] / row.base["latency_ms"]["median"]) if row.base["latency_ms"]["median"] else 1.0
        row.ci = (0.0, float("inf"))
        row.latency = INCONCLUSIVE
        row.why = "fewer than 2 recorded samples on a side: no interval; raise --min-iters"
        return
    row.ratio, lo, hi = median_ratio_ci(base, cand, confidence)
    row.ci = (lo, hi)
    _decide(row, limit, confidence, "median",
            "measure longer (--duration-s), pin cores and clocks, or " + RUN_HINT.replace(" (docs/benchmarking.md)", ""))


def _conditions_verdict(row: Row, device: str) -> bool:
    """Make a verdict the two runs' conditions could have produced by themselves inconclusive.
    False when a side recorded no conditions (schema /2)."""
    j = conditions.judge(row.base.get("conditions"), row.cand.get("conditions"), device)
    if not j.recorded:
        return False
    if row.latency in j.untrusted:
        was = row.latency
        row.latency = INCONCLUSIVE
        row.regressions = [r for r in row.regressions if not r.startswith("median ")]
        row.why = (f"median {row.ratio - 1:+.1%} would read {was}, but the runs' conditions differ ({j.reason}), "
                   f"which alone can produce that; {RUN_HINT}")
    return True


def compare(base_doc: dict, cand_doc: dict, *, max_latency_regression: float = 0.05,
            max_accuracy_drop: float = 0.3, confidence: float = DEFAULT_CONFIDENCE,
            names: tuple[str, str] = ("baseline", "candidate")) -> Comparison:
    if not 0.5 <= confidence < 1.0:
        raise VitdeployError(f"--confidence {confidence:g} is outside [0.5, 1)", "for example --confidence 0.95")
    require_identity(base_doc, names[0])
    require_identity(cand_doc, names[1])
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
    cmp = Comparison([], max_latency_regression, max_accuracy_drop, confidence,
                     devices=(_device(base_doc), _device(cand_doc)), commits=(_commit(base_doc), _commit(cand_doc)))
    same_setup = "benchmark both with the same setup: only the code under test may differ (docs/benchmarking.md)"
    for k in common:
        b, c = base[k]["run"], cand[k]["run"]
        diff = identity_difference(b, c)
        if diff:
            what, vb, vc = diff
            raise VitdeployError(f"{run_label(b)}: {what} differs ({names[0]} {vb}, {names[1]} {vc})", same_setup)
        db = device_name(run_environment(base_doc, b), b["device"])
        dc = device_name(run_environment(cand_doc, c), c["device"])
        if db != dc:
            raise VitdeployError(f"{run_label(b)}: device differs ({names[0]} {db}, {names[1]} {dc})", same_setup)
    for k in base:
        if k not in cand:
            cmp.notes.append(f"only in {names[0]}: {' '.join(k)}")
    for k in cand:
        if k not in base:
            cmp.notes.append(f"only in {names[1]}: {' '.join(k)}")
    labels = set()
    for k in common:
        b, c = base[k], cand[k]
        ib, ic = b["run"]["identity"], c["run"]["identity"]
        where = " ".join(k)
        if ib.get("artifact_sha256") != ic.get("artifact_sha256"):
            cmp.notes.append(f"{where}: the artifacts differ (sha256 {str(ib.get('artifact_sha256'))[:12]} vs "
                             f"{str(ic.get('artifact_sha256'))[:12]}): the figures include what the code under test changed in them")
        cmp.notes.extend(plugin_notes(where, ib, ic, names))
        lib, vb = _library(base_doc, b["run"])
        _, vc = _library(cand_doc, c["run"])
        if vb != vc:
            cmp.notes.append(f"{where}: {lib} {vb or '?'} in {names[0]}, {vc or '?'} in {names[1]}")
        batches = sorted(set(b["results"]) & set(c["results"]))
        missing = sorted(set(b["results"]) ^ set(c["results"]))
        if missing:
            cmp.notes.append(f"{where}: batch {', '.join(map(str, missing))} measured on one side only")
        acc_b, acc_c = b["accuracy"], c["accuracy"]
        random = is_random(ib.get("weights"))
        cmp.random_weights |= random
        if acc_b is not None and acc_c is not None:
            if b["metric"] != c["metric"]:
                cmp.notes.append(f"{where}: accuracy is {b['label']} in {names[0]} but {c['label']} in {names[1]}, not gated")
                acc_b = acc_c = None
            elif random:
                cmp.notes.append(f"{where}: random weights, so the accuracy figures are noise: shown, not gated")
            else:
                labels.add((b["label"], b["metric"][0]))
        elif (acc_b is None) != (acc_c is None):
            cmp.notes.append(f"{where}: accuracy measured on one side only, not gated")
        unrecorded = False
        for batch in batches:
            row = Row(k, batch, b["results"][batch], c["results"][batch], acc_b, acc_c)
            _latency_verdict(row, max_latency_regression, confidence)
            if row.latency != INCONCLUSIVE and not _conditions_verdict(row, b["run"]["device"]):
                unrecorded = True
            if row.latency == INCONCLUSIVE:
                cmp.notes.append(f"{where} batch {batch}: inconclusive: {row.why}")
            graphs = ((row.base.get("cuda_graph") or {}).get("used"), (row.cand.get("cuda_graph") or {}).get("used"))
            if graphs[0] != graphs[1]:
                cmp.notes.append(f"{where} batch {batch}: CUDA graph replay {'on' if graphs[0] else 'off'} in "
                                 f"{names[0]} but {'on' if graphs[1] else 'off'} in {names[1]}")
            ad = row.accuracy_delta
            if ad is not None and not random and -ad > max_accuracy_drop:
                row.regressions.append(f"accuracy {ad:+.2f} pts < -{max_accuracy_drop:g}")
            cmp.rows.append(row)
        if unrecorded:
            cmp.notes.append(f"{where}: a side recorded no machine conditions (schema /2): load that changed "
                             "between the runs could not be checked")
    if not cmp.rows:
        raise VitdeployError("the two results share no batch size for any matching run",
                             "benchmark both with the same --batch-sizes list")
    if len(labels) == 1:
        cmp.accuracy_label, cmp.accuracy_metric = labels.pop()
    return cmp


def compare_interleaved(doc: dict, *, max_latency_regression: float = 0.05, confidence: float = DEFAULT_CONFIDENCE,
                        names: tuple[str, str] = ("baseline", "candidate"), figure: str = "latency") -> Comparison:
    """The gate over one `compare --run` session (`interleave.session_document`): per batch, the paired
    ratio of the baseline's and candidate's block medians and its signed-rank interval. `figure` is
    "latency" (wall time) or "cpu-time" (the process CPU time of the same iterations)."""
    from vitdeploy.bench.interleave import FIGURES, ROLES, pairs

    if figure not in FIGURES:
        raise VitdeployError(f"unknown gate figure '{figure}'", f"choose from {', '.join(FIGURES)}")

    if not 0.5 <= confidence < 1.0:
        raise VitdeployError(f"--confidence {confidence:g} is outside [0.5, 1)", "for example --confidence 0.95")
    require_identity(doc, "the session")
    by_role = {(r.get("interleaved") or {}).get("role"): r for r in doc["runs"]}
    if set(ROLES) - set(by_role):
        raise VitdeployError("this bench result holds no interleaved baseline/candidate session",
                             "write one with 'vitdeploy compare --run BASELINE CANDIDATE --json FILE'")
    b, c = by_role["baseline"], by_role["candidate"]
    commit = _commit(doc)
    cmp = Comparison([], max_latency_regression, 0.0, confidence, devices=(_device(doc),) * 2, commits=(commit, commit),
                     method=INTERLEAVED, figure=figure)
    if figure == "cpu-time" and b["device"] != "cpu":
        raise VitdeployError("--gate-on cpu-time applies to CPU runs", "gate a GPU run on latency (CUDA events)")
    key = run_key(b)
    where = " ".join(key)
    ib, ic = b["identity"], c["identity"]
    if ib.get("artifact_sha256") == ic.get("artifact_sha256") and ib.get("artifact_sha256"):
        cmp.notes.append(f"{where}: {names[0]} and {names[1]} are the same artifact (sha256 {ib['artifact_sha256'][:12]})")
    cmp.notes.extend(plugin_notes(where, ib, ic, names))
    cmp.random_weights = is_random(ib.get("weights"))
    cres = {r["batch"]: r for r in c["results"]}
    for res in b["results"]:
        if res["batch"] not in cres:
            continue
        row = Row(key, res["batch"], res, cres[res["batch"]])
        blocks_b, blocks_c = pairs(res, row.cand, figure)
        n = len(blocks_b)
        if n < MIN_PAIRS:
            row.ratio = row.cand["latency_ms"]["median"] / row.base["latency_ms"]["median"]
            row.ci = (0.0, float("inf"))
            row.latency = INCONCLUSIVE
            row.why = f"{n} rounds, fewer than the {MIN_PAIRS} an interval needs: raise --duration-s"
        else:
            row.ratio, lo, hi = paired_ratio_ci(blocks_b, blocks_c, confidence)
            row.ci = (lo, hi)
            _decide(row, max_latency_regression, confidence, "paired" + (" CPU time" if figure == "cpu-time" else ""),
                    f"{n} rounds were not enough to resolve the limit: raise --duration-s")
        if row.latency == INCONCLUSIVE:
            cmp.notes.append(f"{where} batch {row.batch}: inconclusive: {row.why}")
        cond = res.get("conditions")
        cmp.notes.append(f"{where} batch {row.batch}: {n} rounds of {res['paired']['block_iters']} iteration(s) a side, "
                         f"interleaved in one window ({conditions.describe(cond)})")
        cmp.rows.append(row)
    for s in b["skipped"]:
        cmp.notes.append(f"{where} batch {s['batch']} skipped: {s['reason']}")
    if not cmp.rows:
        raise VitdeployError("the session measured no batch size", "check --batch-sizes against the artifacts' batch")
    return cmp


def _delta_header(cmp: Comparison) -> str:
    """The gated figure: the ratio of two runs' medians, or the paired ratio of an interleaved session."""
    if cmp.method != INTERLEAVED:
        return "Δ median"
    return "Δ paired CPU" if cmp.figure == "cpu-time" else "Δ paired"


def _pct(v: float) -> str:
    return f"{v:+.1%}"


def _ci(row: Row) -> str:
    lo, hi = row.ci
    if hi == float("inf"):
        return "n/a"
    return f"{lo - 1:+.1%}..{hi - 1:+.1%}"


def _acc(row: Row) -> str:
    if row.accuracy_delta is None:
        return "-"
    return f"{row.acc_base:.2f} → {row.acc_cand:.2f} ({row.accuracy_delta:+.2f})"


def _pairs(rows: list[Row], value, share=()) -> list[str]:
    """"base → candidate" cells of one column. Both sides of every row of one run get the same decimals,
    chosen from that run's values of this column and of the `share` columns (median and p99 alike), so a
    0.5 ms GPU run and a 14 s CPU run in one file do not force "14220.000" or "0"; never an exponent."""
    from vitdeploy.bench.tables import decimals, fixed

    places: dict[tuple, int] = {}
    for key in dict.fromkeys(r.key for r in rows):
        places[key] = decimals([f(res) for r in rows if r.key == key for f in (value, *share) for res in (r.base, r.cand)])
    return [f"{fixed(value(r.base), places[r.key])} → {fixed(value(r.cand), places[r.key])}" for r in rows]


def _median(res: dict) -> float:
    return res["latency_ms"]["median"]


def _p99(res: dict) -> float:
    return res["latency_ms"]["p99"]


def _ips(res: dict) -> float:
    return res["throughput_ips"]


SHORT_METRICS = {"top1_agreement": "top-1 agreement %", "candidate_top1": "top-1 accuracy %",
                 "detection_agreement": "detection agreement %", "candidate_map50": "mAP@0.5 %"}


def _accuracy_header(cmp: Comparison) -> str:
    """A short column name; `accuracy_footnote` says in full what the figure is and on which data."""
    return SHORT_METRICS.get(cmp.accuracy_metric, "accuracy figure %") if cmp.accuracy_label else "accuracy figure %"


def accuracy_footnote(cmp: Comparison) -> str | None:
    if not any(r.accuracy_delta is not None for r in cmp.rows):
        return None
    return f"{_accuracy_header(cmp)}: {cmp.accuracy_label or 'differs per run, see the notes'}"


def regression_lines(cmp: Comparison) -> list[str]:
    """One line per failing row, so the reason survives any table width."""
    return [f"{r.model} {r.config} batch {r.batch}: {'; '.join(r.regressions)}" for r in cmp.rows if r.regressions]


def verdict_line(cmp: Comparison) -> str:
    n_bad = sum(1 for r in cmp.rows if r.verdict == REGRESSION)
    n_unk = sum(1 for r in cmp.rows if r.verdict == INCONCLUSIVE)
    if n_bad:
        return f"{n_bad} regression{'s' if n_bad != 1 else ''}" + (f", {n_unk} inconclusive" if n_unk else "")
    if n_unk:
        return f"inconclusive: {n_unk} of {len(cmp.rows)} comparisons cannot tell (noise larger than the limit)"
    return f"no regression ({len(cmp.rows)} comparisons)"


def to_markdown(cmp: Comparison, names: tuple[str, str] = ("baseline", "candidate")) -> str:
    """A pull-request comment: verdict first, then the per-batch table, then notes."""
    icon = {REGRESSION: "❌", INCONCLUSIVE: "⚠️", OK: "✅"}[cmp.verdict]
    lines = [
        "### vitdeploy bench: compare",
        "",
        f"{icon} **{verdict_line(cmp)}** (limits: {'paired' if cmp.method == INTERLEAVED else 'median'} latency "
        f"+{cmp.max_latency_regression:.1%} at {cmp.confidence:.0%} confidence"
        + (", baseline and candidate interleaved in one window)" if cmp.method == INTERLEAVED
           else f", accuracy -{cmp.max_accuracy_drop:g} pts)"),
        "",
        f"{names[0]}: {cmp.devices[0]} `{cmp.commits[0] or '?'}` · {names[1]}: {cmp.devices[1]} `{cmp.commits[1] or '?'}`",
        "",
        f"| model | config | batch | median ms | {_delta_header(cmp)} | {cmp.confidence:.0%} CI | p99 ms | Δ p99 | img/s | Δ img/s "
        f"| {_accuracy_header(cmp)} | |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    medians, p99s = _pairs(cmp.rows, _median, (_p99,)), _pairs(cmp.rows, _p99, (_median,))
    ips = _pairs(cmp.rows, _ips)
    for i, r in enumerate(cmp.rows):
        mark = {REGRESSION: "❌ " + "; ".join(r.regressions), INCONCLUSIVE: "⚠️ inconclusive", OK: "✅"}[r.verdict]
        dm = _pct(r.ratio - 1)
        lines.append(
            f"| {r.model} | {r.config} | {r.batch} | {medians[i]} | {'**' + dm + '**' if r.regressions else dm} "
            f"| {_ci(r)} | {p99s[i]} | {_pct(r.delta('p99'))} | {ips[i]} | {_pct(r.throughput_delta)} "
            f"| {_acc(r)} | {mark} |"
        )
    foot = accuracy_footnote(cmp)
    if foot:
        lines += ["", foot]
    if cmp.notes:
        lines += ["", *[f"- {n}" for n in cmp.notes]]
    return "\n".join(lines) + "\n"


def to_table(cmp: Comparison, width: int | None = None):
    """The terminal view, fitted to `width` (at most 100 columns) without cutting a number: one block per
    run (model and configuration, with its accuracy figures, on the block's title line) and a row per batch.
    Columns that do not fit are left out, least useful first (Δ img/s is Δ median seen from the other
    side); the Markdown keeps them all."""
    from rich.console import Group
    from rich.text import Text

    from vitdeploy.bench.tables import Column, fit, left_out_note, render

    rows = cmp.rows
    status = {REGRESSION: "[bold red]REGRESSION[/]", INCONCLUSIVE: "[yellow]inconclusive[/]", OK: "[green]ok[/]"}
    columns = [
        Column("batch", [str(r.batch) for r in rows]),
        Column("median ms", _pairs(rows, _median, (_p99,))),
        Column(_delta_header(cmp), [f"[bold red]{_pct(r.ratio - 1)}[/]" if r.latency == REGRESSION else _pct(r.ratio - 1)
                            for r in rows]),
        Column(f"{cmp.confidence:.0%} CI", [_ci(r) for r in rows]),
        Column("p99 ms", _pairs(rows, _p99, (_median,)), drop=3),
        Column("Δ p99", [_pct(r.delta("p99")) for r in rows], drop=2),
        Column("img/s", _pairs(rows, _ips), drop=4),
        Column("Δ img/s", [_pct(r.throughput_delta) for r in rows], drop=5),
        # the reasons follow the table, one line each (`regression_lines`), so no column is squeezed
        Column("status", [status[r.verdict] for r in rows], justify="left"),
    ]
    layout = fit(columns, width)
    parts = [Text("bench compare: candidate vs baseline" + (", interleaved in one window" if cmp.method == INTERLEAVED
                                                            else ""), style="bold")]
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(r.key, []).append(i)
    for idx in groups.values():
        first = rows[idx[0]]
        title = f"{first.model} {first.config}"
        if first.accuracy_delta is not None:
            title += (f" · {_accuracy_header(cmp)}: {first.acc_base:.2f} → {first.acc_cand:.2f} "
                      f"({first.accuracy_delta:+.2f} pts)")
        parts += [Text(""), render(layout, title=title, rows=idx)]
    if layout.left_out:
        parts.append(Text(left_out_note(layout, "--markdown"), style="dim"))
    return Group(*parts)


def plugin_notes(where: str, ib: dict, ic: dict, names) -> list[str]:
    """What the two runs' plugin nodes say about comparing them: different nodes, or both timed on the CPU reference."""
    notes = []
    nb, nc = ib["plugins"]["nodes"], ic["plugins"]["nodes"]
    if nb != nc:
        fmt = lambda n: ", ".join(f"{op}×{cnt}" for op, cnt in sorted(n.items())) or "none"  # noqa: E731
        notes.append(f"{where}: plugin nodes differ ({names[0]}: {fmt(nb)}; {names[1]}: {fmt(nc)})")
    if ib["plugins"]["reference_executed"]:
        notes.append(f"{where}: both sides time plugin nodes on the CPU Python reference, not the plugins")
    return notes
