"""Issue 5 with TensorRT: vitdeploy plugins register, AOT engines build and run without Python plugins.

Marked `trt` (and `gpu` where an engine is built); skipped with the reason where TensorRT is absent.
"""
import json
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.trt


def test_plugins_register_with_tensorrt():
    """Every TensorRT face that exists registers `vitdeploy::<op>` in TensorRT's plugin registry."""
    import importlib
    import importlib.util

    import tensorrt as trt

    from vitdeploy.machine import supports_aot_plugins
    from vitdeploy.plugins import TRT_FACES

    if not supports_aot_plugins(trt.__version__):
        pytest.skip(f"TensorRT {trt.__version__} has no ahead-of-time plugins (needs >= 10.9)")
    faces = [(op, mod) for op, mod in TRT_FACES.items() if importlib.util.find_spec(mod) is not None]
    assert faces
    for op, mod in faces:
        importlib.import_module(mod).register()
        assert trt.get_plugin_registry().get_creator(op, "1", "vitdeploy") is not None, f"vitdeploy::{op} not registered"


def test_plugin_mode_follows_the_installed_tensorrt(cli_run, tmp_path):
    import tensorrt as trt

    from vitdeploy.machine import supports_aot_plugins

    if supports_aot_plugins(trt.__version__):
        pytest.skip("AOT-capable TensorRT: --plugins on is allowed here")
    res = cli_run("build", "--model", "swin_t", "--plugins", "on", "-o", str(tmp_path / "x"))
    assert res.exit_code == 2 and "--plugins on needs TensorRT >= 10.9" in res.output


@pytest.mark.gpu
def test_swin_aot_engine_runs_without_python_plugins(tmp_path):
    """Build swin_t with WindowAttention AOT plugins, compare with ONNX Runtime, then load the plan in
    a fresh process that registers no vitdeploy plugin: the PTX is inside the engine."""
    import tensorrt as trt

    import vitdeploy
    from vitdeploy.machine import supports_aot_plugins
    from vitdeploy.onnxrt import session
    from vitdeploy.parity import random_images
    from vitdeploy.pipeline import BuildOptions, run_build

    if not supports_aot_plugins(trt.__version__):
        pytest.skip(f"TensorRT {trt.__version__} has no ahead-of-time plugins")
    res = run_build(BuildOptions(out_dir=tmp_path, alias="swin_t", fp16=True, plugins="on"))
    assert any(p["op"] == "WindowAttention" for p in res.manifest["plugins"])
    assert res.manifest["engine"]["plugins_registered"] == ["WindowAttention"]
    x = random_images(1, (224, 224), seed=3)
    ref = session(res.final_onnx).run(None, {"input": x})[0]
    with vitdeploy.Engine(res.out_dir) as engine:
        got = engine(x)["logits"]
    cos = float(np.dot(ref.ravel(), got.ravel()) / (np.linalg.norm(ref) * np.linalg.norm(got)))
    assert cos > 0.999, cos
    code = (
        "import sys, tensorrt as trt\n"
        "rt = trt.Runtime(trt.Logger(trt.Logger.ERROR))\n"
        f"e = rt.deserialize_cuda_engine(open({str(res.engine)!r}, 'rb').read())\n"
        "print('ok' if e is not None else 'fail')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]
    assert json.loads((res.out_dir / "manifest.json").read_text())["engine"]["built"] is True
