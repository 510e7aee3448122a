"""The weights record every JSON repeats (issue 15 item 2), and the one-line banner for random weights."""
import json

from vitdeploy.weights import beside, describe, for_model, from_manifest, is_random


def test_records_from_manifests():
    assert from_manifest({"model": {"weights": "random"}}) == {"kind": "random", "seed": 0}
    ck = {"model": {"weights": "checkpoint", "checkpoint": {"path": "/w.pth", "sha256": "ab" * 32}}}
    assert from_manifest(ck) == {"kind": "checkpoint", "sha256": "ab" * 32}
    pre = {"model": {"weights": "pretrained", "name": "vit_tiny_patch16_224", "pretrained_tag": "timm/vit_tiny_patch16_224.augreg_in21k"}}
    assert from_manifest(pre) == {"kind": "pretrained", "tag": "timm/vit_tiny_patch16_224.augreg_in21k"}
    assert from_manifest(None) == from_manifest({}) == {"kind": "unknown"}
    assert for_model("vit_t") == {"kind": "random", "seed": 0} and is_random(for_model("vit_t"))
    assert describe(from_manifest(ck)) == "checkpoint sha256 " + "ab" * 6 and describe(None) == "unknown"


def test_beside_reads_the_manifest_next_to_a_file(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"schema": 1, "model": {"weights": "random"}}))
    assert beside(tmp_path / "model.onnx") == beside(tmp_path) == {"kind": "random", "seed": 0}
    (tmp_path / "manifest.json").write_text("{broken")
    assert beside(tmp_path / "model.onnx") == {"kind": "unknown"}
    assert beside(None) == {"kind": "unknown"}


def test_export_banner_and_record(cli_run, tmp_path):
    out = tmp_path / "vit"
    res = cli_run("export", "--model", "vit_t", "--img-size", "32", "--exporter", "torchscript", "-o", str(out))
    assert res.exit_code == 0, res.output
    assert sum("⚠ random weights: vit_t" in line for line in res.output.splitlines()) == 1
    m = json.loads((out / "manifest.json").read_text())
    assert from_manifest(m) == {"kind": "random", "seed": 0}
    assert m["postprocessing"]["task"] == "classification" and m["labels"]["num_classes"] == 1000
