"""Issue 23 part 3: an export that tries before it gives up.

When the chosen exporter fails, the error names the operator and the exporter and says what was tried
next; a known failure of popular models (timm Twins / Hiera: SDPA on 5-D tensors under the dynamo
exporter) is patched while exporting, and the patch computes exactly what it replaces.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vitdeploy.deploy.export import export_onnx, plan_attempts
from vitdeploy.errors import VitdeployError
from vitdeploy.onnxrt import session


def test_sdpa_nd_patch_computes_what_sdpa_computes():
    from vitdeploy.deploy.export_patches import patched

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 4, 7, 8, generator=g) for _ in range(3))
    mask = torch.randn(4, 7, 7, generator=g)  # broadcast over the leading dims, as SDPA allows
    ref = F.scaled_dot_product_attention(q, k, v)
    ref_mask = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.expand(2, 3, 4, 7, 7))
    q4 = torch.randn(2, 3, 7, 8, generator=g)
    ref4 = F.scaled_dot_product_attention(q4, q4, q4)
    with patched() as used:
        assert used == []
        torch.testing.assert_close(F.scaled_dot_product_attention(q4, q4, q4), ref4, atol=0, rtol=0)
        assert used == []  # 4-D calls go to the original untouched
        got = F.scaled_dot_product_attention(q, k, v)
        got_mask = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.expand(2, 3, 4, 7, 7))
        assert used == ["sdpa_nd"]
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got_mask, ref_mask, atol=1e-6, rtol=1e-5)
    assert F.scaled_dot_product_attention.__module__ != "vitdeploy.deploy.export_patches"  # uninstalled afterwards


class _Tokens(torch.nn.Module):
    """An image batch [B, C, H, W] through one timm attention module that takes tokens [B, H*W, C]."""

    def __init__(self, attn, hw_arg: bool):
        super().__init__()
        self.attn, self.hw_arg = attn, hw_arg

    def forward(self, x):
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        return self.attn(t, (h, w)) if self.hw_arg else self.attn(t)


def _twins_attention():
    """timm Twins' LocallyGroupedAttn (twins.py): SDPA on [B, windows, heads, tokens, dim]."""
    from timm.models.twins import LocallyGroupedAttn

    torch.manual_seed(0)
    return _Tokens(LocallyGroupedAttn(16, num_heads=2, ws=4), hw_arg=True).eval()


def _hiera_attention():
    """timm Hiera's MaskUnitAttention (hiera.py) with mask-unit windows: SDPA on [B, heads, windows, tokens, dim]."""
    from timm.models.hiera import MaskUnitAttention

    torch.manual_seed(0)
    return _Tokens(MaskUnitAttention(16, 16, heads=2, window_size=4, use_mask_unit_attn=True), hw_arg=False).eval()


@pytest.mark.parametrize("make", [_twins_attention, _hiera_attention], ids=["twins", "hiera"])
def test_5d_sdpa_models_export_with_the_dynamo_exporter_through_the_patch(make, tmp_path):
    model = make()
    x = torch.randn(1, 16, 8, 8)
    assert model.attn.fused_attn  # the SDPA path is the one exported
    res = export_onnx(model, x, tmp_path / "m.onnx", exporter="dynamo", output_names=("out",))
    assert res.exporter == "dynamo" and res.patches == ["sdpa_nd"] and res.fallback_reason is None
    with torch.no_grad():
        ref = model(x).numpy()
    got = session(tmp_path / "m.onnx").run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=1e-4)


def test_without_the_patch_the_error_names_operator_exporter_and_what_is_left(tmp_path, monkeypatch):
    import vitdeploy.deploy.export_patches as patches

    monkeypatch.setattr(patches, "PATCHES", {})
    model = _twins_attention()
    x = torch.randn(1, 16, 8, 8)
    with pytest.raises(VitdeployError) as e:
        export_onnx(model, x, tmp_path / "a.onnx", exporter="dynamo", output_names=("out",))
    assert e.value.message == ("ONNX export failed: dynamo (opset 18) failed on aten.scaled_dot_product_attention: "
                               "AssertionError: only 4D query, key, and value are supported")
    assert e.value.hint == "try --exporter auto (tries both exporters) or another --opset (tried only 18)"
    assert not (tmp_path / "a.onnx").exists()


UNSUPPORTED_PY = '''
import torch


class Median(torch.nn.Module):  # nanmedian has no ONNX translation in either exporter
    def forward(self, x):
        return x.nanmedian(dim=-1).values.flatten(1)


def build():
    return Median()
'''


def test_no_exporter_can_export_an_operator_one_line_naming_each_try(cli_run, tmp_path):
    f = tmp_path / "median.py"
    f.write_text(UNSUPPORTED_PY)
    out = tmp_path / "o"
    r = cli_run("export", "--model", f"{f}:build", "--img-size", "8", "-o", out)
    assert r.exit_code == 2, r.output
    line = r.output.strip().splitlines()[-1]
    assert line.startswith("error: ONNX export failed: dynamo (opset 18) failed on aten.nanmedian: DispatchError: ")
    # TorchScript's message names the opset, so the other opset was tried too; dynamo's does not, so it was not
    assert "; then torchscript (opset 18/20) failed on aten::nanmedian: UnsupportedOperatorError: Exporting the operator " \
           "'aten::nanmedian' to ONNX opset version 20 is not supported" in line
    assert line.endswith("(export the model yourself (torch.onnx.export) and pass --onnx FILE; please report the model "
                         "and operator)")
    assert "Torch IR graph" not in r.output and "Traceback" not in r.output
    assert not out.exists()


def test_attempt_order():
    assert plan_attempts("auto", 18, (20,)) == [(18, "dynamo"), (18, "torchscript"), (20, "dynamo"), (20, "torchscript")]
    assert plan_attempts("torchscript", 18, ()) == [(18, "torchscript")]
    assert plan_attempts("auto", 21, (20,)) == [(21, "dynamo"), (20, "dynamo"), (20, "torchscript")]  # TorchScript <= 20
