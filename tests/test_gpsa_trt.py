"""TensorRT face of GatedPositionalAttention (needs TensorRT; the engine test also needs a CUDA GPU)."""
from __future__ import annotations

import numpy as np
import pytest


def _tensorrt():
    import importlib

    try:
        importlib.import_module("tensorrt.plugin")
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
    from polygraphy.backend.trt import CreateConfig, EngineFromNetwork, NetworkFromOnnxPath, Profile, TrtRunner

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
    # the batch is symbolic ("B"): without a profile Polygraphy would build min=opt=max=1 and refuse batch 2
    profile = Profile().add("qk", min=(1, n, 2 * c), opt=(b, n, 2 * c), max=(b, n, 2 * c)) \
                       .add("v", min=(1, n, c), opt=(b, n, c), max=(b, n, c))
    engine = EngineFromNetwork(NetworkFromOnnxPath(str(path), strongly_typed=True), CreateConfig(profiles=[profile]))
    with TrtRunner(engine) as runner:
        got = runner.infer({"qk": qk, "v": v})["out"]
    ref = gated_positional_attention(*(torch.from_numpy(a.astype(np.float32)) for a in (qk, v, pos.astype(np.float16), gate.astype(np.float16))),
                                     num_heads=heads, scale=(c // heads) ** -0.5).numpy()
    assert np.abs(np.asarray(got, dtype=np.float32) - ref).max() < 5e-3


@pytest.mark.trt
@pytest.mark.gpu
@pytest.mark.parametrize("batch", [1, 5])
def test_network_api_aot_plugin_fp32(batch):
    """The plugin added through the network API with aot=True (no ONNX parser), FP32 I/O."""
    _tensorrt()
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    import tensorrt as trt
    import tensorrt.plugin as trtp

    from vitdeploy.plugins.gated_positional_attention import trt as face
    from vitdeploy.plugins.gated_positional_attention.reference import gated_positional_attention

    face.register()
    n, c, heads = 100, 192, 4
    g = torch.Generator().manual_seed(batch)
    feeds = {
        "qk": torch.randn(batch, n, 2 * c, generator=g),
        "v": torch.randn(batch, n, c, generator=g),
        "pos": torch.softmax(torch.randn(heads, n, n, generator=g), -1),
        "gate": torch.rand(heads, generator=g),
    }
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    tensors = [network.add_input(k, trt.float32, tuple(t.shape)) for k, t in feeds.items()]
    layer = network.add_plugin(trtp.op.vitdeploy.GatedPositionalAttention(*tensors, num_heads=heads, scale=48 ** -0.5), aot=True)
    network.mark_output(layer.get_output(0))
    blob = builder.build_serialized_network(network, builder.create_builder_config())
    assert blob is not None, "TensorRT could not build the one-node network"
    context = trt.Runtime(logger).deserialize_cuda_engine(blob).create_execution_context()
    dev = {k: t.cuda().contiguous() for k, t in feeds.items()}
    out = torch.empty(batch, n, c, device="cuda")
    for k, t in dev.items():
        context.set_tensor_address(k, t.data_ptr())
    context.set_tensor_address(layer.get_output(0).name, out.data_ptr())
    stream = torch.cuda.current_stream()
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    ref = gated_positional_attention(*feeds.values(), num_heads=heads, scale=48 ** -0.5)
    assert (out.cpu() - ref).abs().max().item() < 1e-4
