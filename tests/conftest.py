"""Shared fixtures. Every artifact a test makes goes under pytest's tmp dirs; nothing is downloaded."""
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub


def _has_tensorrt() -> tuple[bool, str]:
    try:
        import tensorrt  # noqa: F401

        return True, ""
    except Exception as e:  # the registry stubs raise at import when the libraries are absent
        return False, f"TensorRT is not importable here ({type(e).__name__}); engine tests need a machine with TensorRT"


def _has_cuda() -> tuple[bool, str]:
    try:
        import torch

        if torch.cuda.is_available():
            return True, ""
    except Exception:
        pass
    return False, "no CUDA GPU on this machine"


def pytest_collection_modifyitems(config, items):
    trt_ok, trt_why = _has_tensorrt()
    gpu_ok, gpu_why = _has_cuda()
    for item in items:
        if "trt" in item.keywords and not trt_ok:
            item.add_marker(pytest.mark.skip(reason=trt_why))
        if "gpu" in item.keywords and not gpu_ok:
            item.add_marker(pytest.mark.skip(reason=gpu_why))


@pytest.fixture
def cli_run():
    """Run the real entry point (error mapping included) and capture output and exit code."""
    from cli_runner import invoke

    def run(*args):
        return invoke(args)

    return run
