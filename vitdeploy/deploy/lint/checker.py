"""ONNX-level consistency: stale value_info and the full ONNX checker.

TensorRT's parser never reads value_info (no reference in onnx-tensorrt's sources), so these do not stop
a build; they stop `onnx.checker.check_model(full_check=True)`, strict shape inference and every tool that
runs them (Polygraphy only downgrades the error to a warning).
"""
from __future__ import annotations

import onnx

from vitdeploy.deploy.lint.core import Finding, GraphIndex, dtype_name
from vitdeploy.onnxgraph import strip_stale_value_info

# Above this the checker needs the model on disk (protobuf's 2 GiB limit); skip it in memory.
CHECKER_MAX_BYTES = 1 << 30


def check_value_info(ix: GraphIndex) -> list[Finding]:
    out = []
    init = {i.name: i.data_type for i in ix.model.graph.initializer}
    for vi in ix.model.graph.value_info:
        want = init.get(vi.name)
        got = vi.type.tensor_type.elem_type if vi.type.HasField("tensor_type") else 0
        if want is not None and got and got != want:
            out.append(Finding(
                "warning", "value-info", f"value_info declares {dtype_name(got)} for initializer {vi.name}, which is "
                f"{dtype_name(want)}: onnx.checker (full_check) and strict shape inference fail",
                "drop the value_info entry (vitdeploy convert/build strip stale entries)", vi.name))
    return out


def check_onnx(model: onnx.ModelProto) -> list[Finding]:
    """onnx.checker with full_check (strict shape inference), on a copy without stale value_info (reported apart)."""
    if model.ByteSize() > CHECKER_MAX_BYTES:
        return [Finding("note", "onnx-checker", "model too large to check in memory", "run onnx.checker on the file")]
    m = onnx.ModelProto()
    m.CopyFrom(model)
    strip_stale_value_info(m)
    try:
        onnx.checker.check_model(m, full_check=True)
    except Exception as e:  # ValidationError, InferenceError
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:240]
        return [Finding("warning", "onnx-checker", f"onnx.checker full_check fails: {first}",
                        "fix the graph (the TensorRT parser may still accept it)")]
    return []
