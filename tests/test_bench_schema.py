"""The versioned bench JSON: round trip, validation messages, version gate, merge."""
from __future__ import annotations

import json

import pytest

from bench_fixtures import make_run as fixture_run

from vitdeploy.bench import schema
from vitdeploy.errors import VitdeployError


def make_run(accuracy=None, **kw):
    run = fixture_run(accuracy=accuracy, **kw)
    run["skipped"] = [{"batch": 64, "reason": "static batch of 1"}]
    if accuracy is not None:
        run["accuracy"]["headline"]["name"] = "top1"
    return run


def make_doc(*runs):
    return schema.new_document({"cpu": {"model": "test cpu"}, "versions": {}}, list(runs) or [make_run()])


def test_round_trip(tmp_path):
    doc = make_doc(make_run(), make_run(backend="torch", accuracy=80.5))
    p = tmp_path / "sub" / "r.json"
    schema.write(p, doc)
    assert json.loads(p.read_text())["schema"] == schema.SCHEMA == "vitdeploy.bench/3"
    back = schema.read(p)
    assert back == json.loads(json.dumps(doc))
    assert back["runs"][0]["results"][1]["latency_ms"]["median"] == pytest.approx(9.0)
    assert back["runs"][1]["accuracy"]["headline"]["value"] == 80.5


def test_validate_names_the_broken_field(tmp_path):
    doc = make_doc()
    del doc["runs"][0]["results"][1]["latency_ms"]["p99"]
    with pytest.raises(VitdeployError, match=r"runs\[0\]\.results\[1\]\.latency_ms: lacks p99"):
        schema.validate(doc)
    doc = make_doc()
    doc["runs"][0]["results"][0]["batch"] = "1"
    with pytest.raises(VitdeployError, match=r"results\[0\]\.batch: has the wrong type"):
        schema.validate(doc)
    doc = make_doc()
    doc["runs"][0]["interrupted"] = 0
    with pytest.raises(VitdeployError, match="interrupted"):
        schema.validate(doc)
    with pytest.raises(VitdeployError):  # nothing half-valid is ever written
        schema.write(tmp_path / "bad.json", doc)
    assert not (tmp_path / "bad.json").exists()


def test_identity_is_required_in_v2_and_v1_is_still_read(tmp_path):
    doc = make_doc()
    del doc["runs"][0]["identity"]["weights"]
    with pytest.raises(VitdeployError, match=r"runs\[0\]\.identity: lacks weights"):
        schema.validate(doc)
    old = make_doc()
    for run in old["runs"]:
        del run["identity"], run["warnings"]
    old["schema"] = "vitdeploy.bench/1"
    (tmp_path / "v1.json").write_text(json.dumps(old))
    back = schema.read(tmp_path / "v1.json")  # report can still plot it
    assert not schema.has_identity(back)
    with pytest.raises(VitdeployError, match="lack the identity fields compare needs"):
        schema.require_identity(back, "v1.json")
    with pytest.raises(VitdeployError, match="refusing to write schema vitdeploy.bench/1"):
        schema.write(tmp_path / "again.json", old)  # nothing writes the old layout
    with pytest.raises(VitdeployError, match="cannot merge bench results of schemas"):
        schema.merge([back, make_doc()])


def test_identity_difference_names_the_field():
    a, b = make_run(), make_run(ident={"input": {"name": "input", "shape": [3, 160, 160], "dtype": "float32"}})
    assert schema.identity_difference(a, a) is None
    assert schema.identity_difference(a, b) == ("input shape", "3x224x224 float32", "3x160x160 float32")
    c = make_run(ident={"artifact_sha256": "f" * 64})  # what the code under test produces may differ
    assert schema.identity_difference(a, c) is None
    assert set(schema.MUST_MATCH) - {"reference_executed"} <= set(schema.IDENTITY_FIELDS)


def test_read_rejects_other_versions_and_other_files(tmp_path):
    doc = make_doc()
    doc["schema"] = "vitdeploy.bench/4"
    (tmp_path / "v4.json").write_text(json.dumps(doc))
    with pytest.raises(VitdeployError, match="uses schema vitdeploy.bench/4, this vitdeploy reads vitdeploy.bench/1, "
                                             "vitdeploy.bench/2 and vitdeploy.bench/3"):
        schema.read(tmp_path / "v4.json")
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(VitdeployError, match="not a vitdeploy bench result"):
        schema.read(tmp_path / "other.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(VitdeployError, match="not valid JSON"):
        schema.read(tmp_path / "broken.json")
    with pytest.raises(VitdeployError, match="does not exist"):
        schema.read(tmp_path / "missing.json")


def test_merge_keeps_every_run():
    merged = schema.merge([make_doc(make_run()), make_doc(make_run(backend="torch"), make_run(precision="fp16"))])
    assert [schema.run_key(r)[1:3] for r in merged["runs"]] == [("ort", "fp32"), ("torch", "fp32"), ("ort", "fp16")]
