"""One process, several plugin families: `vitdeploy.onnxrt.session` must never crash.

onnxruntime-extensions keeps its Python ops in one growing C++ vector and gives sessions pointers
into it; registering an op under an open session used to leave that session dangling (SIGSEGV on
run or on free). Each scenario runs in a fresh child process (tests/ort_families_child.py), so a
segfault fails the test with its exit code instead of killing pytest; every output is compared
with the PyTorch reference there.
"""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from vitdeploy.plugins import ORT_FACES

REPO = Path(__file__).resolve().parents[1]
CHILD = REPO / "tests" / "ort_families_child.py"
FAMILIES = ("swin", "convit", "detr")


def _env():
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def _child(*args, timeout=240) -> dict:
    proc = subprocess.run([sys.executable, str(CHILD), *args], capture_output=True, text=True, timeout=timeout, env=_env())
    assert proc.returncode == 0, f"{' '.join(args)}: exit {proc.returncode}\n{proc.stdout[-1500:]}\n{proc.stderr[-3000:]}"
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("OK "))
    return json.loads(line[3:])


def _expand(order, k):
    """Deformable DETR comes as both node types (--msda-impl vitdeploy and stock), in either order."""
    detr = ["detr_vitdeploy", "detr_stock"] if k % 2 == 0 else ["detr_stock", "detr_vitdeploy"]
    return [f for fam in order for f in (detr if fam == "detr" else [fam])]


ORDERS = list(itertools.permutations(FAMILIES))


@pytest.mark.parametrize("k,order", list(enumerate(ORDERS)), ids=["-".join(o) for o in ORDERS])
def test_every_order_with_sessions_kept_open(k, order):
    """Open all families in this order, keep every session, run each again after the last opened, free them."""
    fams = _expand(order, k)
    res = _child("alive", *fams)
    assert res["checks"] == 2 * len(fams) and res["max_rel_err"] <= 1e-4
    assert res["registered"] == sorted(ORT_FACES)  # every face, whichever family came first


@pytest.mark.parametrize("order", [("convit", "detr", "swin:fp16"), ("halo", "swin:fp16", "detr", "convit")])
def test_sessions_released_between_families(order):
    fams = _expand(order, 1)
    res = _child("released", *fams)
    assert res["checks"] == len(fams)


def test_sessions_created_and_run_concurrently_in_threads():
    fams = ["convit", "detr_stock", "swin", "detr_vitdeploy", "swin:fp16", "convit:fp16", "halo"]
    res = _child("threads", *fams)
    assert res["checks"] == 4 * len(fams)


def test_an_op_registered_after_the_seal_is_refused_not_crashed():
    """A plugin face outside ORT_FACES, or registered late, fails with a message naming the fix."""
    from vitdeploy.plugins.ort import register_ort_faces
    from vitdeploy.plugins.ort import ort_sealed, register_ort_op
    from vitdeploy.plugins.spec import PluginSpec, TensorSpec

    register_ort_faces()
    assert ort_sealed()
    late = PluginSpec("LateAttention", (TensorSpec("x"),), (TensorSpec("y"),))
    with pytest.raises(RuntimeError, match="Give its op type a row in vitdeploy/plugins/registry.py"):
        register_ort_op(late, lambda x: x)


FOREIGN = """
import gc, sys
sys.argv = ["x", "alive", "swin"]
sys.path.insert(0, {tests!r})
import ort_families_child as c
from onnxruntime_extensions import PyCustomOpDef, onnx_op
from vitdeploy.errors import VitdeployError
o = c.Opened("swin", 0); o.check()
onnx_op(op_type="SomeoneElsesOp", inputs=[PyCustomOpDef.dt_float], outputs=[PyCustomOpDef.dt_float])(lambda x: x)
try:
    c.Opened("convit", 1)
except VitdeployError as e:
    print("REFUSED", e)
del o; gc.collect()
c.Opened("convit", 1).check()  # nothing open any more: the new op table is accepted
print("REOPENED")
"""


def test_foreign_op_registered_under_an_open_session_is_named():
    code = FOREIGN.format(tests=str(REPO / "tests"))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "REFUSED 1 onnxruntime-extensions Python op(s) were registered outside vitdeploy while 1" in proc.stdout
    assert "REOPENED" in proc.stdout


# ----------------------------------------------------------------------------- the CLI, real rewritten graphs

def _tiny_rewritten(tmp: Path, family: str) -> Path:
    """A small real model of the family, exported and rewritten into its plugin nodes; 1x3x32x32 -> 10 logits."""
    import onnx
    import timm
    import torch

    from vitdeploy.deploy.export import export_onnx
    from vitdeploy.deploy.rewrite.driver import run_passes

    torch.manual_seed(0)
    if family == "swin":
        model = timm.create_model("swin_tiny_patch4_window7_224", img_size=32, window_size=4, embed_dim=16,
                                  depths=(2,), num_heads=(2,), num_classes=10)
        passes = ["swin"]
    else:
        model = timm.create_model("convit_tiny", img_size=32, patch_size=8, embed_dim=32, num_heads=2, depth=2,
                                  local_up_to_layer=1, num_classes=10)
        passes = ["gpsa"]
    path = tmp / f"{family}.onnx"
    export_onnx(model.eval(), torch.randn(1, 3, 32, 32), path, exporter="torchscript")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rewritten, rep = run_passes(onnx.load(str(path)), passes, "plugin")
    assert rep["passes"][0]["replaced"] == rep["passes"][0]["found"] > 0
    out = tmp / f"{family}.rw.onnx"
    onnx.save(rewritten, str(out))
    return out


@pytest.fixture(scope="module")
def rewritten_pair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("families")
    return _tiny_rewritten(tmp, "swin"), _tiny_rewritten(tmp, "convit")


@pytest.mark.parametrize("first", ["swin", "convit"])
def test_cli_verify_across_families_runs_both_and_reports_the_difference(rewritten_pair, first):
    a, b = rewritten_pair if first == "swin" else rewritten_pair[::-1]
    proc = subprocess.run([sys.executable, "-m", "vitdeploy", "verify", str(a), str(b)], capture_output=True, text=True,
                          timeout=240, env=_env(), cwd=REPO)
    # Both graphs ran (same input and output shapes, different models): exit 3 "differ", never 139.
    assert proc.returncode == 3, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    assert f"{a} and {b} differ: logits" in proc.stdout + proc.stderr


def test_real_rewritten_graphs_kept_open_in_both_orders(rewritten_pair):
    sw, cv = map(str, rewritten_pair)
    for fams in ([sw, cv, "detr_stock"], ["halo", "detr_vitdeploy", cv, sw]):
        assert _child("alive", *fams)["checks"] == 2 * len(fams)
