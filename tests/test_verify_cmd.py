"""`vitdeploy rewrite` and `vitdeploy verify` through the real entry point (exit codes, files, JSON)."""
import json
import re

import numpy as np
import onnx
import pytest
import torch

from vitdeploy.artifact import atomic_write_json, new_manifest, sha256_file
from vitdeploy.deploy.export import BatchSpec, export_onnx


@pytest.fixture(scope="module")
def swin_onnx(tmp_path_factory):
    """A reduced timm Swin (one shifted block) exported with a dynamic batch."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("swin_tiny_patch4_window7_224", depths=(1, 1, 2, 1), embed_dim=32,
                              num_heads=(1, 2, 4, 8), num_classes=10).eval()
    path = tmp_path_factory.mktemp("cli") / "swin.onnx"
    export_onnx(model, torch.randn(1, 3, 224, 224), path, exporter="torchscript", batch=BatchSpec(1, 2, 4))
    return path


@pytest.fixture
def artifact_dir(tmp_path, swin_onnx):
    """What `vitdeploy export` leaves: model.onnx next to a manifest naming the model."""
    (tmp_path / "model.onnx").write_bytes(swin_onnx.read_bytes())
    manifest = new_manifest()
    manifest["model"] = {"alias": "swin_t", "family": "swin"}
    manifest["files"] = {"onnx": {"path": "model.onnx", "sha256": sha256_file(tmp_path / "model.onnx")}}
    atomic_write_json(tmp_path / "manifest.json", manifest)
    return tmp_path


def test_rewrite_in_artifact_dir_uses_family_passes_and_records_manifest(cli_run, artifact_dir):
    out = artifact_dir / "model.rewritten.onnx"
    r = cli_run("rewrite", str(artifact_dir / "model.onnx"), "-o", str(out))
    assert r.exit_code == 0, r.output
    assert "✔ rewrite" in r.output and "swin (plugin): 5/5 subgraphs replaced" in r.output
    assert "gpsa" not in r.output  # only the family's passes
    m = onnx.load(str(out))
    assert sum(n.op_type == "WindowAttention" for n in m.graph.node) == 5
    manifest = json.loads((artifact_dir / "manifest.json").read_text())
    assert manifest["files"]["rewritten"] == {"path": out.name, "sha256": sha256_file(out)}
    assert manifest["rewrite"]["passes"][0]["replaced"] == 5 and manifest["rewrite"]["whole_graph"]["passed"]
    assert manifest["model"]["alias"] == "swin_t"  # the rest of the manifest is kept


def test_rewrite_json_native_mode_outside_an_artifact_dir(cli_run, swin_onnx, tmp_path):
    out = tmp_path / "native.onnx"
    r = cli_run("rewrite", str(swin_onnx), "-o", str(out), "--passes", "swin", "--plugins", "off", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    sw = report["passes"][0]
    assert (sw["pass"], sw["mode"], sw["found"], sw["replaced"]) == ("swin", "native", 5, 5)
    assert sw["nodes_after"] < sw["nodes_before"] and report["whole_graph"]["passed"]
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert "WindowAttention" not in ops and ops.count("Softmax") == 5
    assert not (tmp_path / "manifest.json").exists()


def test_rewrite_of_a_graph_without_matches_writes_it_unchanged(cli_run, tmp_path):
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    src = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), str(src))
    r = cli_run("rewrite", str(src), "-o", str(tmp_path / "out.onnx"), "--passes", "swin")
    assert r.exit_code == 0, r.output
    assert onnx.load(str(tmp_path / "out.onnx")).graph == onnx.load(str(src)).graph


def test_rewrite_bad_inputs_are_one_line_errors(cli_run, swin_onnx, tmp_path):
    r = cli_run("rewrite", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "o.onnx"))
    assert r.exit_code == 2 and "error: ONNX file" in r.output and "Traceback" not in r.output
    r = cli_run("rewrite", str(swin_onnx), "-o", str(tmp_path / "o.onnx"), "--passes", "swim")
    assert r.exit_code == 2 and "unknown rewrite pass 'swim'" in r.output
    r = cli_run("rewrite", str(swin_onnx), "-o", str(tmp_path / "nodir" / "o.onnx"))
    assert r.exit_code == 2 and "does not exist" in r.output
    assert not (tmp_path / "o.onnx").exists()


def test_rewrite_exits_3_and_writes_nothing_when_the_whole_graph_differs(cli_run, swin_onnx, tmp_path, monkeypatch):
    """The end-to-end check is the last line of defence: a failed one must not publish a file."""
    import vitdeploy.deploy.rewrite.driver as driver

    real = driver.whole_graph_parity

    def stricter(original, rewritten, feeds, tol=None):  # a real comparison, at a tolerance nothing meets
        return real(original, rewritten, feeds, driver.Tolerance(atol=-1.0, rtol=0.0))

    monkeypatch.setattr(driver, "whole_graph_parity", stricter)
    out = tmp_path / "o.onnx"
    r = cli_run("rewrite", str(swin_onnx), "-o", str(out), "--passes", "swin", "--plugins", "off")
    assert r.exit_code == 3 and "the rewritten graph differs" in r.output
    assert not out.exists()


def test_verify_same_computation_passes_and_different_graphs_fail(cli_run, swin_onnx, tmp_path):
    out = tmp_path / "rw.onnx"
    assert cli_run("rewrite", str(swin_onnx), "-o", str(out), "--passes", "swin", "--plugins", "off").exit_code == 0
    r = cli_run("verify", str(swin_onnx), str(out), "--run-batch", "3")
    assert r.exit_code == 0, r.output
    assert "logits" in r.output and "match" in r.output
    assert re.search(r"✔ verify .* match .*  \d+\.\d s$", r.output, re.M), r.output  # a stage line with its time
    r = cli_run("verify", str(swin_onnx), str(out), "--json")
    res = json.loads(r.output)
    assert res["passed"] and res["inputs"]["input"] == [2, 3, 224, 224] and res["outputs"][0]["max_abs"] < 1e-4

    # a real difference: the classifier bias shifted by 0.01
    m = onnx.load(str(swin_onnx))
    init = next(i for i in m.graph.initializer if onnx.numpy_helper.to_array(i).shape == (10,))
    init.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init) + 0.01, init.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(m, str(bad))
    r = cli_run("verify", str(swin_onnx), str(bad))
    assert r.exit_code == 3 and "differ: logits max-abs 0.01" in r.output
    # Issue 15 item 6: the effective bound (atol + rtol * max|A|) and the worst element against it, not just atol/rtol
    bound = re.search(r"max-abs ([\d.e-]+) at \[(\d+), (\d+)\] \(A ([-\d.e]+), B ([-\d.e]+)\) vs bound ([\d.e-]+) = "
                      r"atol 0\.0001 \+ rtol 0\.001 x max\|A\| ([\d.e-]+)", r.output)
    assert bound, r.output
    worst, a_val, b_val, eff, ref_max = (float(bound.group(k)) for k in (1, 4, 5, 6, 7))
    assert eff == pytest.approx(1e-4 + 1e-3 * ref_max, rel=1e-2) and worst > eff
    assert abs(a_val - b_val) == pytest.approx(worst, rel=1e-3)
    res = json.JSONDecoder().raw_decode(cli_run("verify", str(swin_onnx), str(bad), "--json").output)[0]  # + the error line
    o = res["outputs"][0]
    assert o["bound"] == pytest.approx(1e-4 + 1e-3 * o["ref_max"]) and len(o["worst_index"]) == 2
    assert cli_run("verify", str(swin_onnx), str(bad), "--atol", "0.02", "--min-cosine", "0").exit_code == 0


def test_verify_with_npz_inputs(cli_run, swin_onnx, tmp_path):
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    np.savez(tmp_path / "in.npz", input=x)
    r = cli_run("verify", str(swin_onnx), str(swin_onnx), "--inputs", str(tmp_path / "in.npz"), "--json")
    assert r.exit_code == 0 and json.loads(r.output)["inputs"]["input"] == [1, 3, 224, 224]
    np.savez(tmp_path / "wrong.npz", image=x)
    r = cli_run("verify", str(swin_onnx), str(swin_onnx), "--inputs", str(tmp_path / "wrong.npz"))
    assert r.exit_code == 2 and "has no array named 'input'" in r.output


def test_verify_static_vs_dynamic_batch_says_which_shapes(cli_run, swin_onnx, tmp_path):
    m = onnx.load(str(swin_onnx))
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1  # the same graph, batch fixed to 1
    static = tmp_path / "static.onnx"
    onnx.save(m, str(static))
    r = cli_run("verify", str(swin_onnx), str(static))  # random inputs default to batch 2
    assert r.exit_code == 2 and "Expected: 1" in r.output
    assert "input ?x3x224x224 vs input 1x3x224x224" in r.output and "--run-batch" in r.output
    assert cli_run("verify", str(swin_onnx), str(static), "--run-batch", "1").exit_code == 0


def test_help_shows_examples(cli_run):
    for cmd, example in (("rewrite", "vitdeploy rewrite out/swin_t/model.onnx"), ("verify", "vitdeploy verify out/swin_t/model.onnx")):
        r = cli_run(cmd, "--help")
        assert r.exit_code == 0 and example in r.output
