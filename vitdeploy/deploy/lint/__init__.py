"""Graph lint: would this ONNX parse on a given TensorRT, and is it in the shape TensorRT's fusions need?

Offline and TensorRT-free: the rules read the graph against tables taken from onnx-tensorrt's operator
docs and importers and TensorRT's headers and changelog (`tables.py`, with sources). Each finding is
one line naming the node and the fix; `error` means the parser or builder refuses it (or the result would
be wrong), `warning` that it builds but loses a fusion or fails a tool, `note` that it is worth knowing.

    report = lint_file("model.fp16.onnx", "10.3")
    for f in report.findings: print(f.line())

`vitdeploy lint` is the command; `vitdeploy build` runs it on its final graph for its target (`targets.py`).
"""
from __future__ import annotations

from pathlib import Path

import onnx

from vitdeploy.deploy.lint.core import Finding, GraphIndex, LintReport, fmt, parse_trt
from vitdeploy.deploy.lint.tables import NAMED, Version

__all__ = ["Finding", "LintReport", "NAMED", "fmt", "lint_file", "lint_model", "parse_trt"]


def lint_model(model: onnx.ModelProto, trt: Version | str, checker: bool = True) -> LintReport:
    """Every rule against TensorRT `trt` ("10.3" or (10, 3)); `checker` adds onnx.checker's full check."""
    from vitdeploy.deploy.lint import attention, parser_rules, qdq
    from vitdeploy.deploy.lint.checker import check_onnx, check_value_info

    v = parse_trt(trt) if isinstance(trt, str) else tuple(trt)
    ix = GraphIndex(model)
    report = LintReport(v, ix.opset, model.ir_version)
    report.findings += parser_rules.check_model_header(ix, v)
    report.findings += parser_rules.check_operators(ix, v)
    report.findings += parser_rules.check_plugins(ix, v)
    report.findings += parser_rules.check_dtypes(ix, v)
    qdq_findings, report.qdq = qdq.check_qdq(ix)
    report.findings += qdq_findings
    report.attention, att = attention.analyse(ix)
    report.findings += att
    report.findings += check_value_info(ix)
    if checker:
        report.findings += check_onnx(model)
    order = {"error": 0, "warning": 1, "note": 2}
    report.findings.sort(key=lambda f: order[f.severity])  # stable: graph order within a severity
    return report


def lint_file(path: str | Path, trt: Version | str, checker: bool = True) -> LintReport:
    from vitdeploy.artifact import load_onnx

    return lint_model(load_onnx(Path(path), hint="pass an .onnx file"), trt, checker=checker)
