"""Issue 2/3: `--opset N` writes opset N, or says plainly why it cannot.

torch's dynamo exporter has no opset-17 translations: it writes 18 and down-converts, and keeps 18
when the conversion fails (it does on Swin). The user asked for 17, so `auto` falls back to the
TorchScript exporter and `dynamo` is a one-line error; TorchScript writes no opset above 20.
"""
import numpy as np
import onnx
import pytest
import torch

from vitdeploy.deploy.export import export_onnx
from vitdeploy.deploy.rewrite.driver import run_passes
from vitdeploy.errors import VitdeployError
from vitdeploy.onnxrt import session


def _reduced_swin():
    import timm

    torch.manual_seed(0)
    return timm.create_model("swin_tiny_patch4_window7_224", depths=(1, 1, 2, 1), embed_dim=32, num_heads=(1, 2, 4, 8),
                             num_classes=10).eval()


def _opset(path) -> int:
    return next(o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx"))


def test_opset_17_swin_is_written_at_17_and_still_rewritten(tmp_path):
    model = _reduced_swin()
    x = torch.randn(1, 3, 224, 224)
    res = export_onnx(model, x, tmp_path / "auto.onnx", opset=17)
    assert res.opset == 17 and _opset(tmp_path / "auto.onnx") == 17
    assert res.exporter == "torchscript" and "not the requested 17" in res.fallback_reason
    # opset-17 Swin is matched by the swin pass (issue 3: "opset 17 and newer")
    out, rep = run_passes(onnx.load(str(tmp_path / "auto.onnx")), ["swin"], "plugin")
    assert rep["passes"][0]["replaced"] == 5
    with torch.no_grad():
        ref = model(x).numpy()
    got = session(out).run(None, {"input": x.numpy()})[0]
    assert np.abs(got - ref).max() < 1e-4

    with pytest.raises(VitdeployError, match="dynamo exporter wrote opset 18, not the requested 17"):
        export_onnx(model, x, tmp_path / "dynamo.onnx", opset=17, exporter="dynamo")


def test_torchscript_above_opset_20_is_refused(cli_run, tmp_path):
    r = cli_run("export", "--model", "vit_t", "--exporter", "torchscript", "--opset", "21", "-o", str(tmp_path / "o"))
    assert r.exit_code == 2, r.output
    assert r.output.strip() == ("error: the TorchScript exporter writes opsets up to 20, not 21 "
                                "(use --opset 20 or less, or --exporter dynamo)")
    assert not (tmp_path / "o").exists()
