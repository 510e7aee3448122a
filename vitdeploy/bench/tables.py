"""Terminal tables for `bench`, `compare` and `report` that never cut a number.

rich shrinks a table that is wider than the console by truncating cells ("med… 16.…"),
which turns figures into lies. Here the layout is decided before rich sees the table:

- every number in a column gets the same number of decimals, chosen from the column's
  values (`decimals`), in fixed notation (never "1.386e+04");
- a column whose cells are all empty ("-") is left out;
- when the columns do not fit `MAX_WIDTH` (or a narrower console), whole columns are left
  out, least important first, and the caption names them (the JSON and the Markdown keep
  every figure).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

MAX_WIDTH = 100  # what a table may take, even on a wider terminal or in a CI log
EMPTY = "-"
GAP = 2  # between columns: one cell of padding and the (blank) divider
SIG_DIGITS = 3
MAX_DECIMALS = 3


def decimals(values, sig: int = SIG_DIGITS, max_decimals: int = MAX_DECIMALS) -> int:
    """Decimals that give the column's smallest non-zero magnitude `sig` significant digits
    (larger values get more), at most `max_decimals`: 0.0123 -> 3, 1.234 -> 2, 97.9 -> 1, 13860 -> 0."""
    mags = [abs(float(v)) for v in values if v is not None and math.isfinite(float(v)) and float(v) != 0.0]
    if not mags:
        return 0
    return max(0, min(max_decimals, sig - 1 - math.floor(math.log10(min(mags)))))


def fixed(v: float | None, places: int) -> str:
    """A number in fixed notation with `places` decimals ("-" for a missing value)."""
    if v is None:
        return EMPTY
    v = float(v)
    if not math.isfinite(v):
        return "inf" if v > 0 else "-inf" if v < 0 else "nan"
    return f"{v:.{places}f}"


def number_column(values) -> list[str]:
    """Cells for one column of numbers, all with the same decimals."""
    places = decimals(values)
    return [fixed(v, places) for v in values]


def percent(v: float, signed: bool = False) -> str:
    return f"{v:+.1%}" if signed else f"{v:.1%}"


@dataclass
class Column:
    header: str
    cells: list[str]  # rich markup allowed; the width is measured on the rendered text
    justify: str = "right"
    drop: int = 0  # 0: always shown; higher numbers are left out first when the table is too wide


@dataclass
class Layout:
    """The columns that fit, and the names of those left out to make them fit."""

    columns: list[Column]
    left_out: list[str] = field(default_factory=list)
    width: int = MAX_WIDTH


def cell_width(text: str) -> int:
    from rich.text import Text

    return max((Text.from_markup(line).cell_len for line in text.split("\n")), default=0)


def table_width(columns: list[Column]) -> int:
    if not columns:
        return 0
    return sum(max([cell_width(c.header), *map(cell_width, c.cells)]) for c in columns) + GAP * (len(columns) - 1)


def fit(columns: list[Column], width: int | None = None) -> Layout:
    """Leave out all-empty columns, then the most droppable ones until the table fits `width`."""
    width = min(width or MAX_WIDTH, MAX_WIDTH)
    cols = [c for c in columns if not (c.cells and all(plain(x) in (EMPTY, "") for x in c.cells))]
    left_out: list[str] = []
    while table_width(cols) > width:
        victims = [c for c in cols if c.drop > 0]
        if not victims:
            break  # nothing optional left: the essentials are chosen to fit 80 columns
        victim = max(victims, key=lambda c: (c.drop, cols.index(c)))  # a tie: the later column goes first
        cols.remove(victim)
        left_out.append(victim.header)
    return Layout(cols, left_out, width)


def plain(markup: str) -> str:
    """The text a cell shows, without its markup."""
    from rich.text import Text

    return Text.from_markup(markup).plain.strip()


def render(layout: Layout, title: str | None = None, caption: str | None = None, rows: list[int] | None = None):
    """The fitted columns as a rich Table (no cell can be cut: the widths were measured), with the
    title above and the caption below as lines of their own, so a long one wraps at the console's
    width instead of the table's. `rows` picks some rows; every column keeps the width measured over
    all of them, so tables rendered from one layout line up."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    t = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0), pad_edge=False)
    for c in layout.columns:
        t.add_column(c.header, justify=c.justify, no_wrap=True, overflow="fold",
                     width=max([cell_width(c.header), *map(cell_width, c.cells)]))
    n = max((len(c.cells) for c in layout.columns), default=0)
    for i in range(n) if rows is None else rows:
        t.add_row(*(c.cells[i] if i < len(c.cells) else "" for c in layout.columns))
    parts = [Text(title, style="bold")] if title else []
    parts.append(t)
    if caption:
        parts.append(Text(caption, style="dim"))
    return Group(*parts)


def left_out_note(layout: Layout, where: str = "--json") -> str:
    if not layout.left_out:
        return ""
    return f"{', '.join(layout.left_out)} left out at {layout.width} columns (in {where})"


def console_width() -> int:
    """The width tables are laid out for: the console's, at most `MAX_WIDTH`."""
    from vitdeploy.console import console

    return min(console.width, MAX_WIDTH)


# -- `vitdeploy bench`: one table per run ---------------------------------------------------------

LATENCY_COLUMNS = (("median", 0), ("mean", 5), ("p90", 4), ("p99", 1), ("min", 3), ("max", 3))


def run_columns(run: dict) -> list[Column]:
    """The bench table of one run: a row per measured batch, latencies in ms."""
    from vitdeploy.bench.stats import CV_WARN

    res = run["results"]
    cols = [Column("batch", [str(r["batch"]) for r in res]), Column("iters", [str(r["iterations"]) for r in res], drop=6)]
    # the latency columns share their decimals (chosen from all of them), so 96.6 never sits beside 106
    places = decimals([r["latency_ms"][stat] for r in res for stat, _ in LATENCY_COLUMNS])
    for stat, drop in LATENCY_COLUMNS:
        cols.append(Column(stat, [fixed(r["latency_ms"][stat], places) for r in res], drop=drop))
    cvs = [r["latency_ms"]["cv"] for r in res]
    cols.append(Column("CV", [f"[yellow]{percent(v)}[/]" if v > CV_WARN else percent(v) for v in cvs]))
    cols.append(Column("img/s", number_column([r["throughput_ips"] for r in res])))
    enq = [(r.get("host_enqueue_ms") or {}).get("median") for r in res]
    cols.append(Column("enqueue", number_column(enq), drop=2))
    graphs = [r.get("cuda_graph") or {} for r in res]
    cols.append(Column("graph", ["yes" if g.get("used") else ("failed" if g.get("error") else EMPTY) for g in graphs], drop=4))
    return cols


def run_table(run: dict, title: str, width: int | None = None):
    layout = fit(run_columns(run), width)
    caption = "latencies in ms" + (f"; {left_out_note(layout)}" if layout.left_out else "")
    return render(layout, title=title, caption=caption)


# -- `vitdeploy matrix`: every finished cell in one table ------------------------------------------

def latency_columns(runs: list[dict]) -> list[Column]:
    """One row per run and batch size: model, configuration, median / p99 latency, img/s, CV; a ⚠ marks a
    run whose figures do not measure what its label says (plugins on the CPU reference, FP16 on the CPU)."""
    from vitdeploy.bench.schema import run_caveats as caveats
    from vitdeploy.bench.schema import run_device
    from vitdeploy.bench.stats import CV_WARN

    rows = [(run, r) for run in runs for r in sorted(run["results"], key=lambda r: r["batch"])]
    med, p99 = [], []
    for run in runs:  # one run's rows share decimals (median and p99 alike), as in compare and report
        res = sorted(run["results"], key=lambda r: r["batch"])
        places = decimals([r["latency_ms"][k] for r in res for k in ("median", "p99")])
        med += [fixed(r["latency_ms"]["median"], places) for r in res]
        p99 += [fixed(r["latency_ms"]["p99"], places) for r in res]
    config = [f"{run['backend']}/{run['precision']} {run_device(run)}" + (" ⚠" if caveats(run) else "") for run, _ in rows]
    cvs = [r["latency_ms"]["cv"] for _, r in rows]
    return [Column("model", [run["model"] for run, _ in rows], justify="left"),
            Column("config", config, justify="left"),
            Column("batch", [str(r["batch"]) for _, r in rows]),
            Column("median ms", med), Column("p99 ms", p99, drop=2),
            Column("img/s", number_column([r["throughput_ips"] for _, r in rows]), drop=1),
            Column("CV", [f"[yellow]{percent(v)}[/]" if v > CV_WARN else percent(v) for v in cvs], drop=3)]


def latency_table(runs: list[dict], title: str, width: int | None = None):
    layout = fit(latency_columns(runs), width)
    caption = "latency of one batch; ⚠: see 'vitdeploy report' (plugins timed on the CPU reference, or FP16 on the CPU)" \
        if any("⚠" in c for c in layout.columns[1].cells) else None
    if layout.left_out:
        caption = (caption + "; " if caption else "") + left_out_note(layout)
    return render(layout, title=title, caption=caption)
