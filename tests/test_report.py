"""`vitdeploy report`: PNGs that are real images with content, and a Markdown page embedding them."""
from __future__ import annotations

import re

import numpy as np
import pytest

from bench_fixtures import identity

from vitdeploy.bench import schema
from vitdeploy.bench.runner import Settings, batch_record

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_run(backend, medians, batches=(1, 8, 32), accuracy=None, seed=0):
    rng = np.random.default_rng(seed)
    results = [batch_record(b, list(m * (1 + 0.02 * rng.standard_normal(200))), [], {"used": True})
               for b, m in zip(batches, medians)]
    return {"model": "vit_t", "artifact": None, "backend": backend, "device": "cpu", "precision": "fp32",
            "mode": "compute", "settings": Settings(0, 0.1, 5).to_dict(), "timing": {"clock": "perf_counter"},
            "identity": identity(), "warnings": [],
            "results": results, "skipped": [{"batch": 64, "reason": "out of memory"}],
            "accuracy": None if accuracy is None else {"headline": {
                "name": "candidate_top1", "value": accuracy, "data": "held-out",
                "label": "top-1 accuracy (labels), held-out data"}},
            "interrupted": False}


@pytest.fixture
def results(tmp_path):
    a = tmp_path / "trt.json"
    b = tmp_path / "ort.json"
    schema.write(a, schema.new_document({}, [make_run("trt", (1.0, 4.0, 14.0), accuracy=81.2)]))
    schema.write(b, schema.new_document({}, [make_run("ort", (3.0, 20.0, 75.0), accuracy=81.4, seed=1),
                                            make_run("torch", (5.0, 30.0, 110.0), seed=2)]))
    return str(a), str(b)


def _image(path):
    import matplotlib.image as mpimg

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5000
    return mpimg.imread(str(path))


def test_report_writes_pngs_and_markdown(cli_run, tmp_path, results):
    out = tmp_path / "report"
    res = cli_run("report", *results, "-o", str(out))
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["README.md", "accuracy_latency.png", "latency_vit_t.png", "throughput_vit_t.png"]
    for png in out.glob("*.png"):
        img = _image(png)
        assert img.shape[0] > 300 and img.shape[1] > 500
        assert img[..., :3].std() > 0.05  # drawn on, not a blank canvas
    md = (out / "README.md").read_text()
    assert set(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)) == {n for n in names if n.endswith(".png")}
    assert md.count("| vit_t |") == 3 * 3 + 3  # 3 batches per run + one skipped row each
    assert "skipped: out of memory" in md and "81.40" in md
    assert "| top-1 accuracy (labels), held-out data (%) |" in md  # the column says what the figure is


def test_same_file_names_in_different_folders_get_distinct_labels(cli_run, tmp_path):
    """Issue 15 item 11: main/bench.json and pr/bench.json (the CI layout) were both labelled "[bench]"."""
    from vitdeploy.bench.report import source_labels
    from vitdeploy.errors import VitdeployError

    paths = []
    for i, where in enumerate(("main", "pr")):
        (tmp_path / where).mkdir()
        paths.append(str(tmp_path / where / "bench.json"))
        schema.write(paths[-1], schema.new_document({}, [make_run("ort", (3.0 + i, 20.0, 75.0), seed=i)]))
    assert source_labels(paths) == ["main/bench", "pr/bench"]
    assert source_labels([paths[0], str(tmp_path / "x.json")]) == ["bench", "x"]
    out = tmp_path / "rep"
    assert cli_run("report", *paths, "-o", str(out)).exit_code == 0
    md = (out / "README.md").read_text()
    assert "ort/fp32 cpu [main/bench]" in md and "ort/fp32 cpu [pr/bench]" in md
    assert cli_run("report", *paths, "--label", "main", "--label", "PR 42", "-o", str(tmp_path / "r2")).exit_code == 0
    assert "[PR 42]" in (tmp_path / "r2" / "README.md").read_text()
    res = cli_run("report", *paths, "--label", "only-one", "-o", str(tmp_path / "r3"))
    assert res.exit_code == 2 and "1 --label for 2 result files" in res.output
    with pytest.raises(VitdeployError, match="given twice"):
        source_labels(paths, ["a", "a"])


def test_random_weight_runs_get_a_banner(cli_run, tmp_path):
    run = make_run("ort", (3.0,), batches=(1,))
    run["identity"]["weights"] = {"kind": "random", "seed": 0}
    p = tmp_path / "r.json"
    schema.write(p, schema.new_document({}, [run]))
    res = cli_run("report", str(p), "-o", str(tmp_path / "rep"))
    assert res.exit_code == 0 and "⚠ random weights" in res.output
    assert "random weights: their latency is real, their accuracy figures are noise" in (tmp_path / "rep" / "README.md").read_text()


def test_report_without_accuracy_says_so(cli_run, tmp_path):
    p = tmp_path / "r.json"
    schema.write(p, schema.new_document({}, [make_run("ort", (3.0, 20.0, 75.0))]))
    out = tmp_path / "rep"
    assert cli_run("report", str(p), "-o", str(out)).exit_code == 0
    assert not (out / "accuracy_latency.png").exists()
    assert "No run carries accuracy figures" in (out / "README.md").read_text()


def test_report_rejects_bad_input_and_leaves_nothing(cli_run, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "something/else"}')
    out = tmp_path / "rep"
    res = cli_run("report", str(bad), "-o", str(out))
    assert res.exit_code == 2 and "not a vitdeploy bench result" in res.output
    assert not out.exists()


def test_single_batch_latency_plot_is_not_clipped(cli_run, tmp_path):
    """One batch size makes the narrowest figure: its title and legend must still fit inside the image."""
    p = tmp_path / "one.json"
    schema.write(p, schema.new_document({}, [make_run(b, (3.0,), batches=(1,), seed=i)
                                             for i, b in enumerate(("ort", "torch", "trt", "torch-compile"))]))
    out = tmp_path / "rep"
    assert cli_run("report", str(p), "-o", str(out)).exit_code == 0
    img = _image(out / "latency_vit_t.png")[..., :3]
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    assert border.min() > 0.9, "text touches the image border: the title or legend was cut off"
