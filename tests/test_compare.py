"""`vitdeploy compare`: deltas, thresholds, exit codes (0/1/2) and the Markdown for PR comments."""
from __future__ import annotations

import copy
import json

import pytest

from vitdeploy.bench import schema
from vitdeploy.bench.compare import compare, parse_percent, to_markdown
from vitdeploy.bench.runner import Settings, batch_record
from vitdeploy.errors import VitdeployError


def make_run(model="vit_t", backend="ort", precision="fp32", medians=(2.0, 9.0), batches=(1, 8), accuracy=None):
    # Symmetric spread around the median, so the median is exactly the given value.
    results = [batch_record(b, [m * f for f in (0.97, 0.99, 1.0, 1.01, 1.03)], [], {"used": False})
               for b, m in zip(batches, medians)]
    return {"model": model, "artifact": None, "backend": backend, "device": "cpu", "precision": precision,
            "mode": "compute", "settings": Settings(0, 0.1, 5).to_dict(), "timing": {"clock": "perf_counter"},
            "results": results, "skipped": [],
            "accuracy": None if accuracy is None else {"headline": {"name": "top1", "value": accuracy}},
            "interrupted": False}


def write(path, *runs, schema_id=None):
    doc = schema.new_document({"cpu": {"model": "test cpu"}, "versions": {}}, list(runs))
    if schema_id:
        doc["schema"] = schema_id
        path.write_text(json.dumps(doc))
    else:
        schema.write(path, doc)
    return str(path)


@pytest.fixture
def base(tmp_path):
    return write(tmp_path / "base.json", make_run(accuracy=80.0), make_run(backend="torch", medians=(5.0, 30.0)))


def test_no_regression_exits_0(cli_run, tmp_path, base):
    cand = write(tmp_path / "cand.json", make_run(medians=(2.04, 8.5), accuracy=79.9))
    res = cli_run("compare", base, cand)
    assert res.exit_code == 0, res.output
    assert "no regression" in res.output
    assert "+2.0%" in res.output and "-5.6%" in res.output
    assert "only in baseline: vit_t torch fp32 cpu compute" in res.output


def test_latency_regression_exits_1_and_writes_markdown(cli_run, tmp_path, base):
    cand = write(tmp_path / "cand.json", make_run(medians=(2.2, 9.0), accuracy=80.0))
    md = tmp_path / "comments" / "pr.md"  # a folder that does not exist yet: created, not a traceback (exit 1)
    res = cli_run("compare", base, cand, "--max-latency-regression", "5%", "--markdown", str(md))
    assert res.exit_code == 1, res.output
    assert "REGRESSION" in res.output and "+10.0%" in res.output
    text = md.read_text()
    assert "❌ **1 regression**" in text
    rows = [line for line in text.splitlines() if line.startswith("| vit_t |")]
    assert len(rows) == 2
    assert "**+10.0%**" in rows[0] and "❌ median +10.0% > +5.0%" in rows[0]
    assert rows[1].endswith("| ✅ |")
    assert "noisy" not in text  # the synthetic samples have a CV of ~2%
    # An unwritable --markdown is bad input (exit 2, one line), never a traceback whose exit 1 reads as a regression.
    (tmp_path / "a_file").write_text("x")
    res = cli_run("compare", base, cand, "--markdown", str(tmp_path / "a_file" / "pr.md"))
    assert res.exit_code == 2 and "error: " in res.output and "a_file" in res.output
    # The same +10% passes under a looser limit; a plain number means percent too.
    assert cli_run("compare", base, cand, "--max-latency-regression", "12").exit_code == 0


def test_accuracy_drop_threshold(cli_run, tmp_path, base):
    small = write(tmp_path / "small.json", make_run(accuracy=79.8))
    big = write(tmp_path / "big.json", make_run(accuracy=79.5))
    assert cli_run("compare", base, small, "--max-accuracy-drop", "0.3").exit_code == 0
    res = cli_run("compare", base, big, "--max-accuracy-drop", "0.3")
    assert res.exit_code == 1
    assert "accuracy -0.50 pts < -0.3" in res.output


def test_different_accuracy_metrics_are_not_gated(cli_run, tmp_path, base):
    run = make_run(accuracy=10.0)
    run["accuracy"]["headline"]["name"] = "top1_agreement"
    cand = write(tmp_path / "agree.json", run)
    res = cli_run("compare", base, cand)
    assert res.exit_code == 0
    assert "accuracy is top1 in baseline but top1_agreement in candidate, not gated" in res.output


def test_unusable_inputs_exit_2(cli_run, tmp_path, base):
    other = write(tmp_path / "other.json", make_run(model="swin_t"))
    res = cli_run("compare", base, other)
    assert res.exit_code == 2
    assert "different models" in res.output and "swin_t" in res.output and "error:" in res.output
    fp16 = write(tmp_path / "fp16.json", make_run(precision="fp16"))
    res = cli_run("compare", base, fp16)
    assert res.exit_code == 2 and "no run matches" in res.output
    v2 = write(tmp_path / "v2.json", make_run(), schema_id="vitdeploy.bench/2")
    res = cli_run("compare", base, v2)
    assert res.exit_code == 2 and "uses schema vitdeploy.bench/2" in res.output
    nobatch = write(tmp_path / "b64.json", make_run(batches=(64,), medians=(50.0,)))
    res = cli_run("compare", base, nobatch)
    assert res.exit_code == 2 and "share no batch size" in res.output
    res = cli_run("compare", base, str(tmp_path / "missing.json"))
    assert res.exit_code == 2 and "does not exist" in res.output
    assert cli_run("compare", base, base, "--max-latency-regression", "lots").exit_code == 2
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0binary")  # a binary file passed by mistake
    res = cli_run("compare", base, str(tmp_path / "photo.jpg"))
    assert res.exit_code == 2 and "photo.jpg is not a JSON text file" in res.output


def test_compare_api_deltas():
    b = schema.new_document({}, [make_run(medians=(2.0, 10.0))])
    c = copy.deepcopy(b)
    c["runs"][0] = make_run(medians=(2.0, 8.0))
    cmp = compare(b, c, max_latency_regression=0.05, max_accuracy_drop=0.3)
    assert not cmp.regressed
    row = cmp.rows[1]
    assert row.delta("median") == pytest.approx(-0.2)
    assert row.throughput_delta == pytest.approx(0.25)
    assert "✅ **no regression**" in to_markdown(cmp)
    assert parse_percent("5%") == pytest.approx(0.05) and parse_percent("0.5") == pytest.approx(0.005)
    with pytest.raises(VitdeployError):
        parse_percent("-1%")
