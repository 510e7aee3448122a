"""`vitdeploy compare`: deltas, thresholds, exit codes (0/1/2/5), identity refusals and the Markdown for PR comments."""
from __future__ import annotations

import copy

import pytest
from bench_fixtures import make_doc, make_run, write

from vitdeploy.bench import schema
from vitdeploy.bench.compare import INCONCLUSIVE, OK, REGRESSION, compare, parse_percent, to_markdown
from vitdeploy.errors import EXIT_INCONCLUSIVE, EXIT_REGRESSION, EXIT_USAGE, VitdeployError


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
    assert res.exit_code == EXIT_REGRESSION, res.output
    assert "REGRESSION" in res.output and "+10.0%" in res.output
    text = md.read_text()
    assert "❌ **1 regression**" in text
    rows = [line for line in text.splitlines() if line.startswith("| vit_t |")]
    assert len(rows) == 2
    assert "**+10.0%**" in rows[0] and "❌ median +10.0% > +5.0% (95% CI +9." in rows[0]
    assert rows[1].endswith("| ✅ |")
    # An unwritable --markdown is bad input (exit 2, one line), never a traceback whose exit 1 reads as a regression.
    (tmp_path / "a_file").write_text("x")
    res = cli_run("compare", base, cand, "--markdown", str(tmp_path / "a_file" / "pr.md"))
    assert res.exit_code == 2 and "error: " in res.output and "a_file" in res.output
    # The same +10% passes under a looser limit; a plain number means percent too.
    assert cli_run("compare", base, cand, "--max-latency-regression", "12").exit_code == 0


def test_noisy_runs_are_inconclusive_not_a_regression(cli_run, tmp_path):
    """Issue 15 item 9: median +11.4% with CV ~12% used to read REGRESSION (exit 1); the noise exceeds the 5% limit."""
    b = write(tmp_path / "b.json", make_run(medians=(10.0,), batches=(1,), cv=0.12, n=41, seed=1))
    c = write(tmp_path / "c.json", make_run(medians=(11.14,), batches=(1,), cv=0.12, n=41, seed=2))
    res = cli_run("compare", b, c, "--markdown", str(tmp_path / "pr.md"))
    assert res.exit_code == EXIT_INCONCLUSIVE, res.output
    assert "inconclusive" in res.output and "REGRESSION" not in res.output
    assert "contains the +5.0% limit" in res.output and "--duration-s" in res.output
    assert "⚠️ **inconclusive" in (tmp_path / "pr.md").read_text()
    # The same medians measured quietly are a regression; the decision follows the spread, not the medians.
    b2 = write(tmp_path / "b2.json", make_run(medians=(10.0,), batches=(1,), cv=0.005, n=401, seed=1))
    c2 = write(tmp_path / "c2.json", make_run(medians=(11.14,), batches=(1,), cv=0.005, n=401, seed=2))
    assert cli_run("compare", b2, c2).exit_code == EXIT_REGRESSION


def test_gate_statistic_is_a_seeded_interval():
    base = make_doc(make_run(medians=(10.0,), batches=(1,), cv=0.05, n=101, seed=3))
    cand = make_doc(make_run(medians=(10.3,), batches=(1,), cv=0.05, n=101, seed=4))
    one = compare(base, cand).rows[0]
    two = compare(base, cand).rows[0]
    assert one.ci == two.ci  # deterministic: same files, same verdict
    lo, hi = one.ci
    assert one.ratio == pytest.approx(1.03) and lo < one.ratio < hi
    wide = compare(make_doc(make_run(medians=(10.0,), batches=(1,), cv=0.05, n=21, seed=3)),
                   make_doc(make_run(medians=(10.3,), batches=(1,), cv=0.05, n=21, seed=4))).rows[0]
    assert wide.ci[1] - wide.ci[0] > hi - lo  # fewer samples, wider interval
    assert {one.verdict, wide.verdict} <= {OK, INCONCLUSIVE, REGRESSION}


@pytest.mark.parametrize("field,change,words", [
    ("input", {"name": "input", "shape": [3, 160, 160], "dtype": "float32"}, "input shape differs (baseline 3x224x224 float32, candidate 3x160x160 float32)"),
    ("model", {"alias": "vit_t", "name": None, "reduced": True}, "resolved model differs (baseline vit_t (full size), candidate vit_t (reduced))"),
    ("weights", {"kind": "random", "seed": 0}, "weights differs (baseline checkpoint sha256 cccccccccccc, candidate random (seed 0))"),
    ("threads", {"intra_op": 2, "usable_cores": 4}, "backend threads differs"),
    ("batch_profile", {"kind": "static", "batch": 1}, "batch profile differs (baseline dynamic batch, candidate static batch 1)"),
    ("plugins", {"nodes": {"WindowAttention": 12}, "reference_executed": 12}, "plugin nodes on the CPU reference differs (baseline no, candidate yes)"),
    ("fp16_on_cpu", True, "FP16 on the CPU differs"),
])
def test_runs_of_different_things_are_refused(cli_run, tmp_path, field, change, words):
    """Issue 15 item 7/10: a 224 vs 160 vit_t, a full vs reduced DETR, a reference-plugin run vs a real one
    used to compare on the alias alone ("-40.4% ok"); now exit 2 with one line naming the difference."""
    b = write(tmp_path / "b.json", make_run())
    c = write(tmp_path / "c.json", make_run(medians=(1.2, 5.4), ident={field: change}))
    res = cli_run("compare", b, c)
    assert res.exit_code == EXIT_USAGE, res.output
    assert words in res.output and "only the code under test may differ" in res.output
    assert len([line for line in res.output.splitlines() if line.startswith("error:")]) == 1


def test_different_devices_are_refused(cli_run, tmp_path):
    b = write(tmp_path / "b.json", make_run(), env={"cpu": {"model": "Xeon A"}, "versions": {}})
    c = write(tmp_path / "c.json", make_run(), env={"cpu": {"model": "EPYC B"}, "versions": {}})
    res = cli_run("compare", b, c)
    assert res.exit_code == EXIT_USAGE and "device differs (baseline Xeon A, candidate EPYC B)" in res.output


def test_what_the_code_under_test_changes_is_reported_not_refused(cli_run, tmp_path):
    b = write(tmp_path / "b.json", make_run())
    c = write(tmp_path / "c.json", make_run(ident={"artifact_sha256": "b" * 64, "plugins": {"nodes": {"WindowAttention": 2},
                                                                                            "reference_executed": 0}}))
    res = cli_run("compare", b, c)
    assert res.exit_code == 0, res.output
    assert "the artifacts differ (sha256 aaaaaaaaaaaa vs bbbbbbbbbbbb)" in res.output
    assert "plugin nodes differ (baseline: none; candidate: WindowAttention×2)" in res.output


def test_schema_1_files_are_refused_by_compare_and_read_by_report(cli_run, tmp_path):
    run = make_run()
    del run["identity"], run["warnings"]
    old = write(tmp_path / "old.json", run, schema_id="vitdeploy.bench/1")
    new = write(tmp_path / "new.json", make_run())
    res = cli_run("compare", old, new)
    assert res.exit_code == EXIT_USAGE
    assert "old.json uses schema vitdeploy.bench/1, whose runs lack the identity fields compare needs" in res.output
    assert cli_run("report", old, new, "-o", str(tmp_path / "rep")).exit_code == 0


def test_accuracy_drop_threshold(cli_run, tmp_path, base):
    small = write(tmp_path / "small.json", make_run(accuracy=79.8))
    big = write(tmp_path / "big.json", make_run(accuracy=79.5))
    assert cli_run("compare", base, small, "--max-accuracy-drop", "0.3").exit_code == 0
    res = cli_run("compare", base, big, "--max-accuracy-drop", "0.3")
    assert res.exit_code == 1
    assert "accuracy -0.50 pts < -0.3" in res.output
    assert "top-1 agreement %: top-1 agreement vs the FP32 export, held-out data" in res.output  # what the column holds


def test_random_weight_accuracy_is_shown_not_gated(cli_run, tmp_path):
    rnd = {"kind": "random", "seed": 0}
    b = write(tmp_path / "b.json", make_run(accuracy=80.0, ident={"weights": rnd}))
    c = write(tmp_path / "c.json", make_run(accuracy=60.0, ident={"weights": rnd}))
    res = cli_run("compare", b, c)
    assert res.exit_code == 0, res.output
    assert "random weights, so the accuracy figures are noise: shown, not gated" in res.output
    assert "⚠ random weights" in res.output


def test_different_accuracy_metrics_are_not_gated(cli_run, tmp_path, base):
    run = make_run(accuracy=10.0)
    run["accuracy"]["headline"].update(name="candidate_top1", label="top-1 accuracy (labels), held-out data")
    cand = write(tmp_path / "agree.json", run)
    res = cli_run("compare", base, cand)
    assert res.exit_code == 0
    assert ("accuracy is top-1 agreement vs the FP32 export, held-out data in baseline but "
            "top-1 accuracy (labels), held-out data in candidate, not gated") in res.output


def test_unusable_inputs_exit_2(cli_run, tmp_path, base):
    other = write(tmp_path / "other.json", make_run(model="swin_t"))
    res = cli_run("compare", base, other)
    assert res.exit_code == 2
    assert "different models" in res.output and "swin_t" in res.output and "error:" in res.output
    fp16 = write(tmp_path / "fp16.json", make_run(precision="fp16"))
    res = cli_run("compare", base, fp16)
    assert res.exit_code == 2 and "no run matches" in res.output
    v9 = write(tmp_path / "v9.json", make_run(), schema_id="vitdeploy.bench/9")
    res = cli_run("compare", base, v9)
    assert res.exit_code == 2 and "uses schema vitdeploy.bench/9" in res.output
    nobatch = write(tmp_path / "b64.json", make_run(batches=(64,), medians=(50.0,)))
    res = cli_run("compare", base, nobatch)
    assert res.exit_code == 2 and "share no batch size" in res.output
    res = cli_run("compare", base, str(tmp_path / "missing.json"))
    assert res.exit_code == 2 and "does not exist" in res.output
    assert cli_run("compare", base, base, "--max-latency-regression", "lots").exit_code == 2
    assert cli_run("compare", base, base, "--confidence", "1.5").exit_code == 2
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0binary")  # a binary file passed by mistake
    res = cli_run("compare", base, str(tmp_path / "photo.jpg"))
    assert res.exit_code == 2 and "photo.jpg is not a JSON text file" in res.output


def test_compare_api_deltas():
    b = make_doc(make_run(medians=(2.0, 10.0)))
    c = copy.deepcopy(b)
    c["runs"][0] = make_run(medians=(2.0, 8.0))
    cmp = compare(b, c, max_latency_regression=0.05, max_accuracy_drop=0.3)
    assert not cmp.regressed and cmp.verdict == OK
    row = cmp.rows[1]
    assert row.delta("median") == pytest.approx(-0.2) and row.ratio == pytest.approx(0.8)
    assert row.throughput_delta == pytest.approx(0.25)
    assert "✅ **no regression" in to_markdown(cmp)
    assert parse_percent("5%") == pytest.approx(0.05) and parse_percent("0.5") == pytest.approx(0.005)
    with pytest.raises(VitdeployError):
        parse_percent("-1%")
    assert schema.SCHEMA == "vitdeploy.bench/3"
