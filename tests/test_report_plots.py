"""`vitdeploy report`'s figures, measured with matplotlib's renderer: pixel sizes that embed in a PR
comment, value axes from zero, every label inside the canvas, point numbers inside the axes and
apart, n in the latency tick labels, bars (not a lone dot) for one batch size. Drawn with 1, 3 and
8 configurations, one and three batch sizes."""
from __future__ import annotations

import itertools

import matplotlib
import matplotlib.text
import pytest

from bench_fixtures import make_doc, make_run

from vitdeploy.bench import plots
from vitdeploy.bench.report import entries

matplotlib.use("Agg", force=True)

CONFIGS = [("trt", "fp16", "cuda", 1.0, 81.2), ("ort", "fp32", "cpu", 12.0, 81.4), ("torch", "fp32", "cpu", 15.0, None),
           ("trt", "int8+fp16", "cuda", 0.7, 80.6), ("torch-compile", "fp32", "cpu", 11.0, 81.4),
           ("torch", "fp16", "cuda", 2.2, 81.3), ("ort", "fp16", "cpu", 40.0, 81.35), ("trt", "fp32", "cuda", 1.9, 81.4)]
TOL_IN = 0.02  # a fiftieth of an inch: antialiasing, not a label off the canvas


def items(n: int, batches=(1,), sources=("bench",), accuracy=True):
    docs = []
    for s, source in enumerate(sources):
        runs = [make_run(backend=be, precision=prec, device=dev, medians=[m * (1 + 0.04 * s) * b ** 0.8 for b in batches],
                         batches=batches, accuracy=acc if accuracy else None, cv=0.03, n=(10, 200, 2000)[i % 3], seed=i)
                for i, (be, prec, dev, m, acc) in enumerate(CONFIGS[:n])]
        docs.append((source, make_doc(*runs)))
    return entries(docs)


def renderer(fig):
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def assert_fits(fig):
    """Width for a PR comment, and nothing drawn outside the canvas (tick labels, titles, legends)."""
    w, h = fig.get_size_inches()
    assert round(w * fig.dpi) == plots.WIDTH_PX == 900 and fig.dpi == plots.DPI
    box = fig.get_tightbbox(renderer(fig))
    assert box.x0 >= -TOL_IN and box.y0 >= -TOL_IN and box.x1 <= w + TOL_IN and box.y1 <= h + TOL_IN, (box, w, h)


def text_box(t, r):
    """The text's own box (an Annotation's extent also covers its leader line, which meets the point)."""
    return matplotlib.text.Text.get_window_extent(t, r)


def inside(inner, outer, pad=1.0) -> bool:
    return inner.x0 >= outer.x0 - pad and inner.x1 <= outer.x1 + pad and inner.y0 >= outer.y0 - pad and inner.y1 <= outer.y1 + pad


GRID = list(itertools.product((1, 3, 8), ((1,), (1, 8, 32))))


@pytest.mark.parametrize("n,batches", GRID)
def test_latency_boxes_start_at_zero_and_name_each_configuration_with_its_n(n, batches):
    its = items(n, batches)
    fig = plots.latency_figure("vit_t", its)
    assert_fits(fig)
    assert len(fig.axes) == len(batches) and not fig.legends  # configurations are tick labels, not a legend
    for ax, batch in zip(fig.axes, batches):
        assert ax.get_xlim()[0] == 0  # the value axis starts at zero
        labels = [t.get_text() for t in ax.get_yticklabels()]
        assert len(labels) == n and ax.get_legend() is None
        for e, text in zip(its, labels):
            res = next(r for r in e.run["results"] if r["batch"] == batch)
            assert text.startswith(e.label) and f"n={len(res['samples_ms'])}" in text
            assert "e+" not in text and "e-" not in text
        assert ax.get_title(loc="left") == f"batch {batch}"
    matplotlib.pyplot.close(fig)


@pytest.mark.parametrize("n,batches", GRID)
def test_throughput_is_bars_for_one_batch_and_lines_from_zero_otherwise(n, batches):
    fig = plots.throughput_figure("vit_t", items(n, batches))
    assert_fits(fig)
    (ax,) = fig.axes
    if len(batches) == 1:
        bars = [p for p in ax.patches if isinstance(p, matplotlib.patches.Rectangle)]
        assert len(bars) == n and not ax.get_lines()
        assert ax.get_xlim()[0] == 0
        assert [t.get_text() for t in ax.get_yticklabels()] == [e.label for e in items(n, batches)]
        r = renderer(fig)
        axes_box = ax.get_window_extent(r)
        assert len(ax.texts) == n and all(inside(t.get_window_extent(r), axes_box) for t in ax.texts)  # values at the bars
        assert "only batch size measured" in ax.get_title()
    else:
        assert len(ax.get_lines()) == n and ax.get_ylim()[0] == 0
        assert [t.get_text() for t in fig.legends[0].get_texts()] == [e.label for e in items(n, batches)]
    matplotlib.pyplot.close(fig)


@pytest.mark.parametrize("n", (1, 3, 8))
def test_accuracy_numbers_stay_inside_the_axes_and_apart(n):
    its = items(n)
    fig = plots.accuracy_latency_figure(its)
    assert_fits(fig)
    (ax,) = fig.axes
    assert ax.get_xlim()[0] == 0 and ax.get_ylim() == (0.0, 100.0)
    with_acc = [e for e in its if e.run["accuracy"]]
    keys = [t.get_text() for t in fig.legends[0].get_texts()]
    assert [k.split(":")[0] for k in keys] == [str(i + 1) for i in range(len(with_acc))]
    assert all(e.label in k and f"{e.run['accuracy']['headline']['value']:.2f} %" in k for e, k in zip(with_acc, keys))
    r = renderer(fig)
    numbers = [t for t in ax.texts if t.get_text()]
    assert sorted(t.get_text() for t in numbers) == sorted(str(i + 1) for i in range(len(with_acc)))
    boxes = [text_box(t, r) for t in numbers]
    axes_box = ax.get_window_extent(r)
    assert all(inside(b, axes_box) for b in boxes)
    assert not any(a.overlaps(b) for a, b in itertools.combinations(boxes, 2))
    matplotlib.pyplot.close(fig)


def test_coincident_points_at_the_top_still_get_separate_numbers_inside():
    """Eight runs at the same latency and 100 %: the numbers ring the point, none leaves the axes."""
    its = items(8)
    for e in its:
        e.run["results"][0]["latency_ms"]["median"] = 3.0
        e.run["accuracy"] = {"headline": {"name": "top1_agreement", "value": 100.0, "data": "held-out",
                                          "label": "top-1 agreement vs the FP32 export, held-out data"}}
    fig = plots.accuracy_latency_figure(its)
    assert_fits(fig)
    (ax,) = fig.axes
    r = renderer(fig)
    boxes = [text_box(t, r) for t in ax.texts if t.get_text()]
    assert len(boxes) == 8
    assert all(inside(b, ax.get_window_extent(r)) for b in boxes)
    assert not any(a.overlaps(b) for a, b in itertools.combinations(boxes, 2))
    matplotlib.pyplot.close(fig)


def test_long_labels_from_two_files_wrap_inside_the_canvas():
    its = items(8, (1, 4), sources=("main/bench", "pr/bench"))
    for e in its:
        e.run["mode"] = "end-to-end"
    its = entries([(s, make_doc(*[e.run for e in its if e.source == s])) for s in ("main/bench", "pr/bench")])
    assert any(len(e.label) > plots.LABEL_CHARS for e in its)
    for fig in (plots.latency_figure("vit_t", its), plots.throughput_figure("vit_t", its),
                plots.accuracy_latency_figure(its)):
        assert_fits(fig)
        matplotlib.pyplot.close(fig)


def test_report_pngs_are_900_px_wide(cli_run, tmp_path):
    import matplotlib.image as mpimg

    from vitdeploy.bench import schema

    p = tmp_path / "r.json"
    schema.write(p, make_doc(*[e.run for e in items(3, (1, 8))]))
    out = tmp_path / "rep"
    assert cli_run("report", str(p), "-o", str(out)).exit_code == 0
    pngs = sorted(out.glob("*.png"))
    assert [x.name for x in pngs] == ["accuracy_latency.png", "latency_vit_t.png", "throughput_vit_t.png"]
    for png in pngs:
        h, w = mpimg.imread(str(png)).shape[:2]
        assert w == 900 and 200 <= h <= 2000, (png.name, w, h)
