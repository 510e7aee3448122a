"""One TensorRT logger per process, and TensorRT imported only inside functions.

`trt.init_libnvinfer_plugins` keeps a raw pointer to the logger it is given, so every caller must pass the
process-wide one (`vitdeploy.tensorrt_session.logger`). These checks read the source (no TensorRT here):
only `tensorrt_session.py` creates loggers or initialises the stock plugin library, and no module imports
tensorrt at import time. `load_plan` is then checked with a recording stand-in for the three TensorRT
calls it makes (what it passes them, not what TensorRT does with them: that needs TensorRT).
"""
from __future__ import annotations

import ast
from pathlib import Path

import vitdeploy

ROOT = Path(vitdeploy.__file__).resolve().parent


def _sources():
    for path in sorted(ROOT.rglob("*.py")):
        yield path, ast.parse(path.read_text(), str(path))


def test_only_tensorrt_session_makes_loggers_or_initialises_the_stock_plugins():
    offenders = []
    for path, tree in _sources():
        if path.name == "tensorrt_session.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in ("init_libnvinfer_plugins", "Logger", "get_trt_logger"):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.func.attr}")
    assert not offenders, offenders


def test_no_module_imports_tensorrt_at_import_time():
    offenders = []
    for path, tree in _sources():
        body = list(tree.body)
        while body:  # module level, including under if/try at module level; not inside functions or classes
            node = body.pop()
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n == "tensorrt" or n.startswith("tensorrt.") for n in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            for field in ("body", "orelse", "finalbody", "handlers"):
                body.extend(getattr(node, field, []) or [])
    assert not offenders, offenders


class _RecordingTrt:
    """Records what load_plan hands TensorRT's three calls."""

    def __init__(self):
        self.calls = []
        rec = self

        class Runtime:
            def __init__(self, logger):
                rec.calls.append(("Runtime", logger))
                self.engine_host_code_allowed = False

            def deserialize_cuda_engine(self, blob):
                rec.calls.append(("deserialize", bytes(blob), self.engine_host_code_allowed))
                return None if blob == b"bad" else "engine"

        self.Runtime = Runtime

    def init_libnvinfer_plugins(self, logger, namespace):
        self.calls.append(("init_libnvinfer_plugins", logger, namespace))


def test_load_plan_gives_every_call_the_one_logger(tmp_path, monkeypatch):
    from vitdeploy import tensorrt_session

    one = object()
    monkeypatch.setattr(tensorrt_session, "_LOGGER", one)
    trt = _RecordingTrt()
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"plan")
    runtime, engine = tensorrt_session.load_plan(trt, plan, version_compatible=True)
    assert engine == "engine" and isinstance(runtime, trt.Runtime)
    assert trt.calls == [("init_libnvinfer_plugins", one, ""), ("Runtime", one), ("deserialize", b"plan", True)]
    assert tensorrt_session.load_plan(trt, b"bad")[1] is None
    assert tensorrt_session.logger() is tensorrt_session.logger() is one
