"""Issue 5: the CUDA side of `vitdeploy.Engine` (buffers, copies, one stream), without TensorRT.

Marked `gpu`: runs on a CUDA machine (cuda-python installed), skips elsewhere.
"""
import numpy as np
import pytest

pytestmark = pytest.mark.gpu


def test_cuda_python_round_trip():
    from vitdeploy.deploy.runtime import _CudaPython

    cuda = _CudaPython()
    x = np.random.default_rng(0).standard_normal((3, 5, 7)).astype(np.float32)
    a, b = cuda.malloc(x.nbytes), cuda.malloc(x.nbytes)
    out = np.empty_like(x)
    try:
        cuda.h2d(a, x)
        cuda.d2d(b, a, x.nbytes)
        cuda.d2h(out, b)
        cuda.sync()
    finally:
        cuda.free(a)
        cuda.free(b)
        cuda.close()
    np.testing.assert_array_equal(out, x)


def test_device_copy_from_a_torch_tensor():
    import torch

    from vitdeploy.deploy.runtime import _CudaPython

    cuda = _CudaPython()
    t = torch.arange(24, dtype=torch.float32, device="cuda").reshape(2, 12) * 0.5
    buf = cuda.malloc(t.numel() * 4)
    out = np.empty((2, 12), np.float32)
    try:
        cuda.d2d(buf, t.data_ptr(), t.numel() * 4)
        cuda.d2h(out, buf)
        cuda.sync()
    finally:
        cuda.free(buf)
        cuda.close()
    np.testing.assert_array_equal(out, t.cpu().numpy())


def test_gpu_probe_reads_compute_capability():
    import torch

    from vitdeploy import machine

    env = machine.probe()
    major, minor = torch.cuda.get_device_capability()
    assert env["gpus"][0]["compute_capability"] == f"{major}.{minor}"
    assert env.get("driver")
