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
    from click.testing import CliRunner

    from vitdeploy.cli import main

    def run(*args):
        runner = CliRunner()
        return runner.invoke(_Entry(main), list(args), catch_exceptions=False)

    return run


class _Entry:
    """Adapter so CliRunner can drive `vitdeploy.cli.main` (which maps errors to exit codes)."""

    def __init__(self, fn):
        self.fn = fn
        self.name = "vitdeploy"

    def main(self, args=None, prog_name=None, standalone_mode=True, **extra):
        import sys

        rc = 0
        try:
            self.fn(args)
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        sys.exit(rc)
