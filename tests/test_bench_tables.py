"""What `bench`, `compare` and `build` print: tables rendered by rich at 100 and 80 columns and read
back (no number cut, no scientific notation, one precision per column, no all-"-" column), one noise
line per run, and the build's cached and engine lines."""
from __future__ import annotations

import io
import re

import pytest
from bench_fixtures import make_doc, make_run

from vitdeploy.bench import tables
from vitdeploy.bench.compare import compare, to_markdown, to_table

NUMBER = re.compile(r"^[+-]?\d+(\.\d+)?%?$")


def render(renderable, width: int) -> list[str]:
    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None, highlight=False).print(renderable)
    return buf.getvalue().splitlines()


def table_block(lines: list[str], header_start: str) -> tuple[list[str], list[list[str]]]:
    """(header cells, body rows as cells) of the first table whose header starts with `header_start`."""
    i = next(k for k, line in enumerate(lines) if line.lstrip().startswith(header_start))
    assert set(lines[i + 1].strip()) == {"─"}
    body = []
    for line in lines[i + 2:]:
        if not line.strip() or not re.match(r"^\s*\d", line):
            break
        body.append(line)
    return re.split(r"\s{2,}", lines[i].strip()), body


def decimals_of(cell: str) -> int:
    cell = cell.rstrip("%")
    return len(cell.split(".")[1]) if "." in cell else 0


def gpu_run():
    """Latencies from 0.0123 ms to 13.9 s in one run, host enqueue and CUDA graphs recorded."""
    run = make_run(backend="trt", precision="fp16", device="cuda", medians=(0.0123, 0.5, 41.3, 13860.0),
                   batches=(1, 8, 64, 256), cv=0.05)
    for r in run["results"]:
        r["host_enqueue_ms"] = {"median": r["latency_ms"]["median"] * 0.3, "mean": 0.0, "p99": 0.0}
        r["cuda_graph"] = {"used": True}
    return run


@pytest.mark.parametrize("width", [100, 80])
@pytest.mark.parametrize("kind", ["gpu", "cpu"])
def test_bench_table_fits_and_reads_back_exactly(width, kind):
    run = gpu_run() if kind == "gpu" else make_run(medians=(113.6, 97.88, 6279.0), batches=(1, 2, 4))
    lines = render(tables.run_table(run, "title", width), width)
    assert max(map(len, lines)) <= width
    text = "\n".join(lines)
    assert "…" not in text and not re.search(r"\de[+-]\d", text)
    header, body = table_block(lines, "batch")
    assert len(body) == len(run["results"])
    rows = [line.split() for line in body]
    assert all(len(r) == len(header) for r in rows)
    if kind == "cpu":  # no host enqueue and no CUDA graph on the CPU: no columns of "-"
        assert "enqueue" not in header and "graph" not in header
    caption = " ".join(lines[lines.index(body[-1]) + 1:])  # it may wrap at 80 columns
    for col, name in enumerate(header):
        cells = [r[col] for r in rows]
        assert EMPTY_FREE(cells), name
        if name == "graph":
            assert cells == ["yes"] * len(rows)
            continue
        assert all(NUMBER.match(c) for c in cells), (name, cells)
        assert len({decimals_of(c) for c in cells}) == 1, (name, cells)  # one precision per column
    lat = [decimals_of(r[header.index(c)]) for r in rows for c in ("median", "mean", "p90", "p99", "min", "max")
           if c in header]
    assert len(set(lat)) == 1  # the latency columns share their precision too
    # the numbers read back are the run's, to the printed precision
    for r, cells in zip(run["results"], rows):
        got = dict(zip(header, cells))
        assert int(got["batch"]) == r["batch"]
        for stat in ("median", "mean", "p90", "p99", "min", "max"):
            if stat in got:
                assert float(got[stat]) == pytest.approx(r["latency_ms"][stat], abs=0.51 * 10 ** -decimals_of(got[stat]))
        assert float(got["img/s"]) == pytest.approx(r["throughput_ips"], abs=0.51 * 10 ** -decimals_of(got["img/s"]),
                                                    rel=1e-9)
        assert got["CV"] == f"{r['latency_ms']['cv']:.1%}"
    shown = {"median", "CV", "img/s", "batch"}
    assert shown <= set(header)
    left_out = [c for c in ("iters", "mean", "p90", "p99", "min", "max", "enqueue", "graph") if c not in header]
    if kind == "gpu" and left_out:
        assert caption.startswith("latencies in ms; ") and all(c in caption for c in left_out)
        assert f"left out at {width} columns (in --json)" in caption


def EMPTY_FREE(cells):  # noqa: N802 - reads as a predicate in the assert
    return not all(c == tables.EMPTY for c in cells)


def test_decimals_follow_the_columns_values_and_never_use_exponents():
    assert tables.decimals([0.0123, 0.5]) == 3 and tables.decimals([1.234, 9.0]) == 2
    assert tables.decimals([97.88, 125.9]) == 1 and tables.decimals([13860.0, 20000.0]) == 0
    assert tables.decimals([None, 0.0]) == 0
    assert tables.number_column([13860.4, 20000.0]) == ["13860", "20000"]
    assert tables.number_column([1.5, None]) == ["1.50", "-"]
    assert tables.fixed(float("inf"), 2) == "inf"


def compare_docs():
    base = make_doc(make_run(accuracy=80.0, medians=(2.0, 13860.0), batches=(1, 64)),
                    make_run(model="deformable_detr", precision="int8+fp16", medians=(0.512, 41.3), cv=0.1, n=30),
                    make_run(backend="torch", medians=(5.0, 30.0)))
    cand = make_doc(make_run(accuracy=79.5, medians=(2.2, 14220.0), batches=(1, 64)),
                    make_run(model="deformable_detr", precision="int8+fp16", medians=(0.498, 44.0), cv=0.1, n=30),
                    make_run(backend="torch", medians=(5.1, 29.0)))
    return base, cand


@pytest.mark.parametrize("width", [100, 80])
def test_compare_table_fits_and_keeps_every_verdict(width):
    base, cand = compare_docs()
    cmp = compare(base, cand)
    lines = render(to_table(cmp, width), width)
    text = "\n".join(lines)
    assert max(map(len, lines)) <= width
    assert "…" not in text and not re.search(r"\de[+-]\d", text)
    # one block per run, titled with the run and (where measured) its accuracy
    assert "vit_t ort/fp32 cpu · top-1 agreement %: 80.00 → 79.50 (-0.50 pts)" in text
    assert "deformable_detr ort/int8+fp16 cpu" in text and "vit_t torch/fp32 cpu" in text
    body = [line for line in lines if re.match(r"^\s*\d+\s", line)]
    assert len(body) == len(cmp.rows)
    for row, line in zip(cmp.rows, body):
        cells = re.split(r"\s{2,}", line.strip())
        assert cells[0] == str(row.batch)
        b, c = (float(x) for x in cells[1].split(" → "))  # median ms, both sides with the same decimals
        places = decimals_of(cells[1].split(" → ")[0])
        assert places == decimals_of(cells[1].split(" → ")[1])
        assert b == pytest.approx(row.base["latency_ms"]["median"], abs=0.51 * 10 ** -places)
        assert c == pytest.approx(row.cand["latency_ms"]["median"], abs=0.51 * 10 ** -places)
        assert cells[2] == f"{row.ratio - 1:+.1%}"
        assert cells[3] == f"{row.ci[0] - 1:+.1%}..{row.ci[1] - 1:+.1%}"
        assert cells[-1] == {"regression": "REGRESSION", "inconclusive": "inconclusive", "ok": "ok"}[row.verdict]
    # rows of one run share their decimals: "13860.00" next to "2.00", never 13860 next to 2.2
    vit = [re.split(r"\s{2,}", line.strip())[1] for line in body[:2]]
    assert vit == ["2.00 → 2.20", "13860.00 → 14220.00"]
    if width == 80:
        assert "left out at 80 columns (in --markdown)" in text
    md = to_markdown(cmp)
    assert not re.search(r"\de[+-]\d", md) and "| 13860.00 → 14220.00 |" in md


def test_compare_cli_tables_fit_100_columns(cli_run, tmp_path):
    from bench_fixtures import write

    base, cand = compare_docs()
    b = write(tmp_path / "b.json", *base["runs"])
    c = write(tmp_path / "c.json", *cand["runs"])
    res = cli_run("compare", b, c)
    assert res.exit_code == 1, res.output
    lines = res.output.splitlines()
    table = lines[lines.index("bench compare: candidate vs baseline"):]
    table = table[:next(i for i, line in enumerate(table) if re.match(r"^  [^\s\d]", line))]  # up to the notes
    assert len(table) > 10 and max(map(len, table)) <= 100 and "…" not in "\n".join(table)


def test_noise_warning_once_per_run(capsys):
    from vitdeploy.commands.bench import print_run

    run = make_run(medians=(2.0, 9.0, 30.0), batches=(1, 8, 32), cv=0.2)
    assert all(any(w.startswith("latency CV") for w in r["warnings"]) for r in run["results"])  # the JSON keeps them
    print_run(run, {"cpu": {"model": "test cpu"}})
    out = capsys.readouterr().out
    assert out.count("results are noisy") == 1
    assert re.search(r"latency CV above 2\.5% at batch 1 \(\d+\.\d%\), 8 \(\d+\.\d%\), 32 \(\d+\.\d%\)", out)
    quiet = make_run(medians=(2.0,), batches=(1,), cv=0.001)
    print_run(quiet, {"cpu": {"model": "test cpu"}})
    assert "noisy" not in capsys.readouterr().out


def test_cached_build_lines_say_what_was_reused(cli_run, tmp_path):
    """The rerun's rewrite line named a replacement that did not happen ("5/5 subgraphs replaced (cached)");
    'engine skipped' is said once, on the last line."""
    import timm
    import torch

    from vitdeploy.deploy.export import BatchSpec, export_onnx

    torch.manual_seed(0)
    model = timm.create_model("swin_tiny_patch4_window7_224", depths=(1, 1, 2, 1), embed_dim=32,
                              num_heads=(1, 2, 4, 8), num_classes=10).eval()
    src = tmp_path / "swin.onnx"
    export_onnx(model, torch.randn(1, 3, 224, 224), src, exporter="torchscript", batch=BatchSpec(1, 2, 4))
    out = tmp_path / "b"
    first = cli_run("build", "--onnx", str(src), "-o", str(out), "--dynamic-batch", "1:2:4")
    assert first.exit_code == 0, first.output
    assert re.search(r"^✔ rewrite .*: 5/5 subgraphs replaced  \d+\.\d s$", first.output, re.M)
    again = cli_run("build", "--onnx", str(src), "-o", str(out), "--dynamic-batch", "1:2:4")
    assert again.exit_code == 0, again.output
    rewrite = next(line for line in again.output.splitlines() if line.startswith("✔ rewrite"))
    assert "swin.rewritten.onnx (cached): " in rewrite and "5/5 subgraphs replaced when it was built" in rewrite
    accuracy = next(line for line in again.output.splitlines() if re.match(r"^[✔•] accuracy", line))
    assert "cached figures: top-1 agreement" in accuracy and ")) (cached)" not in accuracy
    for text in (first.output, again.output):
        assert len(re.findall(r"engine\s+skipped", text)) == 1
        assert text.strip().splitlines()[-1].startswith("engine skipped: TensorRT is not installed here")
        assert re.search(r"^– engine +not built: no TensorRT here", text, re.M)
