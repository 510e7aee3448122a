"""The versioned bench JSON: round trip, validation messages, version gate, merge."""
from __future__ import annotations

import json

import pytest

from vitdeploy.bench import schema
from vitdeploy.bench.runner import Settings, batch_record
from vitdeploy.errors import VitdeployError


def make_run(model="vit_t", backend="ort", precision="fp32", medians=(2.0, 9.0), batches=(1, 8), accuracy=None):
    results = [batch_record(b, [m * f for f in (0.98, 1.0, 1.0, 1.02, 1.05)], [], {"used": False})
               for b, m in zip(batches, medians)]
    return {"model": model, "artifact": None, "backend": backend, "device": "cpu", "precision": precision,
            "mode": "compute", "settings": Settings(0, 0.1, 5).to_dict(), "timing": {"clock": "perf_counter"},
            "results": results, "skipped": [{"batch": 64, "reason": "static batch of 1"}],
            "accuracy": None if accuracy is None else {"headline": {"name": "top1", "value": accuracy}},
            "interrupted": False}


def make_doc(*runs):
    return schema.new_document({"cpu": {"model": "test cpu"}, "versions": {}}, list(runs) or [make_run()])


def test_round_trip(tmp_path):
    doc = make_doc(make_run(), make_run(backend="torch", accuracy=80.5))
    p = tmp_path / "sub" / "r.json"
    schema.write(p, doc)
    assert json.loads(p.read_text())["schema"] == schema.SCHEMA == "vitdeploy.bench/1"
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


def test_read_rejects_other_versions_and_other_files(tmp_path):
    doc = make_doc()
    doc["schema"] = "vitdeploy.bench/2"
    (tmp_path / "v2.json").write_text(json.dumps(doc))
    with pytest.raises(VitdeployError, match="uses schema vitdeploy.bench/2, this vitdeploy reads vitdeploy.bench/1"):
        schema.read(tmp_path / "v2.json")
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
