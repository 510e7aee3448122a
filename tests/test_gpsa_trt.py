"""TensorRT face of GatedPositionalAttention (needs TensorRT; the engine test also needs a CUDA GPU)."""
from __future__ import annotations

import numpy as np
import pytest


def _tensorrt():
    try:
        import tensorrt  # noqa: F401
        import tensorrt.plugin  # noqa: F401
    except Exception as e:  # ImportError, or a TensorRT without tensorrt.plugin (< 10.9)
        pytest.skip(f"TensorRT with tensorrt.plugin is not available here ({type(e).__name__}: {e})")


@pytest.mark.trt
def test_register_defines_the_plugin_once():
    _tensorrt()
    import tensorrt.plugin as trtp

    from vitdeploy.plugins.gated_positional_attention import trt as face

    face.register()
    face.register()  # idempotent
    assert hasattr(trtp.op.vitdeploy, "GatedPositionalAttention")


@pytest.mark.trt
@pytest.mark.gpu
def test_engine_matches_reference(tmp_path):
    _tensorrt()
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    import onnx
    from onnx import TensorProto
    from polygraphy.backend.trt import CreateConfig, EngineFromNetwork, NetworkFromOnnxPath, TrtRunner

    from test_gpsa_plugin import _plugin_model  # tests/ is on sys.path (pytest rootdir-less import)
    from vitdeploy.plugins.gated_positional_attention import trt as face
    from vitdeploy.plugins.gated_positional_attention.reference import gated_positional_attention

    face.register()
    b, n, c, heads = 2, 196, 192, 4
    rng = np.random.default_rng(0)
    pos = torch.softmax(torch.from_numpy(rng.standard_normal((heads, n, n)).astype(np.float32)), -1).numpy()
    gate = rng.uniform(0, 1, heads).astype(np.float32)
    path = tmp_path / "gpsa.onnx"
    onnx.save(_plugin_model(b, n, c, heads, TensorProto.FLOAT16, pos, gate), str(path))
    qk = rng.standard_normal((b, n, 2 * c)).astype(np.float16)
    v = rng.standard_normal((b, n, c)).astype(np.float16)
    engine = EngineFromNetwork(NetworkFromOnnxPath(str(path), strongly_typed=True), CreateConfig())
    with TrtRunner(engine) as runner:
        got = runner.infer({"qk": qk, "v": v})["out"]
    ref = gated_positional_attention(*(torch.from_numpy(a.astype(np.float32)) for a in (qk, v, pos.astype(np.float16), gate.astype(np.float16))),
                                     num_heads=heads, scale=(c // heads) ** -0.5).numpy()
    assert np.abs(np.asarray(got, dtype=np.float32) - ref).max() < 5e-3
