"""Findings, the report, and the graph index every rule reads."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import onnx

from vitdeploy.errors import VitdeployError
from vitdeploy.deploy.lint.tables import NAMED, OLDEST, Version

SEVERITIES = ("error", "warning", "note")  # error: the parser/builder refuses it or the result is wrong;
# warning: it builds, but a fusion or a tool fails; note: worth knowing, nothing to fix


def parse_trt(text: str) -> Version:
    """'10.3' / '10.3.0.26' -> (10, 3); a one-line error for anything else or anything before 10.0."""
    m = re.fullmatch(r"\s*(\d+)\.(\d+)(?:\.\d+)*\s*", str(text or ""))
    if not m:
        raise VitdeployError(f"--trt '{text}' is not a TensorRT version", f"use one of {', '.join(NAMED)} or auto")
    v = (int(m.group(1)), int(m.group(2)))
    if v < OLDEST:
        raise VitdeployError(f"TensorRT {text} predates TensorRT 10, which vitdeploy targets",
                             f"use one of {', '.join(NAMED)}")
    return v


def fmt(v: Version | None) -> str:
    return "" if v is None else f"{v[0]}.{v[1]}"


def newest_described() -> Version:
    """The newest TensorRT release the tables hold a fact for (their rows carry over to later versions,
    which is an extrapolation: a later parser may accept more, or differ)."""
    from vitdeploy.deploy.lint import tables

    versions = [v for v, *_ in tables.OPSET_MAX] + [v for v, *_ in tables.IR_MAX] + list(tables.ONNX_OPS_ADDED.values())
    versions += [v for plugin in tables.STOCK_PLUGINS.values() for span in plugin.values() for v in span if v]
    versions += [tuple(map(int, n.split("."))) for n in NAMED]
    return max(versions)


def extrapolated(v: Version) -> Version | None:
    """The newest described version when `v` is beyond it (its figures are extrapolated), else None."""
    newest = newest_described()
    return newest if v > newest else None


@dataclass
class Finding:
    severity: str
    rule: str
    message: str
    fix: str
    node: str | None = None  # node (or tensor) name
    op: str | None = None
    fixed_in: Version | None = None  # the first TensorRT on which this finding goes away, when one does

    def line(self) -> str:
        where = f"{self.node} ({self.op}): " if self.node and self.op else (f"{self.node}: " if self.node else "")
        return f"{self.severity:<7} [{self.rule}] {where}{self.message} -> fix: {self.fix}"

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if v is not None}
        if self.fixed_in is not None:
            d["fixed_in"] = fmt(self.fixed_in)
        return d

    def same_as(self) -> tuple:
        """What identical findings on different nodes share (the node name aside)."""
        return self.severity, self.rule, self.op, self.message, self.fix


SHOWN_NODES = 2


def grouped_lines(findings: list[Finding], shown: int = SHOWN_NODES) -> list[tuple[str, str]]:
    """(severity, line) per group of identical findings, in first-seen order: one line with the count
    and the first node names instead of the same line once per node (12 WindowAttention nodes)."""
    groups: dict[tuple, list[Finding]] = {}
    for f in findings:
        groups.setdefault(f.same_as(), []).append(f)
    out = []
    for same, fs in groups.items():
        if len(fs) == 1:
            out.append((fs[0].severity, fs[0].line()))
            continue
        severity, rule, op, message, fix = same
        names = [f.node for f in fs if f.node]
        more = len(names) - shown
        where = ", ".join(names[:shown]) + (f", … {more} more" if more > 0 else "")
        what = f"{op} ×{len(fs)}" if op else f"×{len(fs)}"
        out.append((severity, f"{severity:<7} [{rule}] {what} ({where}): {message} -> fix: {fix}"))
    return out


@dataclass
class LintReport:
    tensorrt: Version
    opset: int | None
    ir_version: int
    findings: list[Finding] = field(default_factory=list)
    attention: list[dict] = field(default_factory=list)  # one record per attention block (rules/attention.py)
    qdq: dict = field(default_factory=dict)  # Q/DQ counts per consumer op type (rules/qdq.py)

    @property
    def extrapolated_from(self) -> Version | None:
        """Set when `tensorrt` is newer than every release the tables describe: checked with those rules."""
        return extrapolated(self.tensorrt)

    def of(self, severity: str) -> list[Finding]:
        return [f for f in self.findings if f.severity == severity]

    @property
    def errors(self) -> list[Finding]:
        return self.of("error")

    @property
    def warnings(self) -> list[Finding]:
        return self.of("warning")

    def summary(self) -> str:
        n = {s: len(self.of(s)) for s in SEVERITIES}
        fusible = sum(1 for a in self.attention if a.get("form") == "fusible")
        plain = sum(1 for a in self.attention if a.get("form") in ("fusible", "not fusible"))
        att = f"; {plain} attention block(s), {fusible} in TensorRT's fusible form" if plain else ""
        version = fmt(self.tensorrt)
        if self.extrapolated_from:
            version += f" (extrapolated from {fmt(self.extrapolated_from)}'s tables)"
        return (f"TensorRT {version}: {n['error']} error(s), {n['warning']} warning(s), "
                f"{n['note']} note(s){att}")

    def to_dict(self) -> dict:
        return {
            "tensorrt": fmt(self.tensorrt), "opset": self.opset, "ir_version": self.ir_version,
            "errors": len(self.errors), "warnings": len(self.warnings), "notes": len(self.of("note")),
            "findings": [f.to_dict() for f in self.findings], "attention": self.attention, "qdq": self.qdq,
            "extrapolated_from": fmt(self.extrapolated_from) or None,
        }


class GraphIndex:
    """Producers, consumers, constants and element types of one graph (shape inference run once)."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        g = model.graph
        self.nodes = list(g.node)
        self.init = {i.name: i for i in g.initializer}
        self.producer = {o: n for n in self.nodes for o in n.output if o}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in self.nodes:
            for i in n.input:
                if i:
                    self.consumers.setdefault(i, []).append(n)
        self.graph_inputs = {i.name for i in g.input if i.name not in self.init}
        self.graph_outputs = {o.name for o in g.output}
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
        self._typed: tuple[dict[str, int], dict[str, list]] | None = None

    @property
    def types(self) -> dict[str, int]:
        """Element type of every tensor known after (non-strict) shape inference, computed on first use."""
        if self._typed is None:
            self._typed = self._types()
        return self._typed[0]

    @property
    def shapes(self) -> dict[str, list]:
        if self._typed is None:
            self._typed = self._types()
        return self._typed[1]

    def _types(self) -> tuple[dict[str, int], dict[str, list]]:
        try:  # a copy: inference must not add value_info to the graph being linted
            inferred = onnx.shape_inference.infer_shapes(self.model, check_type=False, strict_mode=False)
        except Exception:
            inferred = self.model
        types: dict[str, int] = {}
        shapes: dict[str, list] = {}
        for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
            t = vi.type.tensor_type
            if vi.type.HasField("tensor_type") and t.elem_type:
                types[vi.name] = t.elem_type
                if t.HasField("shape"):
                    shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                                       for d in t.shape.dim]
        for name, i in self.init.items():
            types[name] = i.data_type
            shapes[name] = list(i.dims)
        for n in self.nodes:
            if n.op_type == "Constant" and n.output:
                for a in n.attribute:
                    if a.name == "value":
                        types[n.output[0]] = a.t.data_type
                        shapes[n.output[0]] = list(a.t.dims)
        return types, shapes

    def dtype(self, name: str) -> int | None:
        """Element type of a constant without shape inference; of anything else through it."""
        if name in self.init:
            return self.init[name].data_type
        p = self.producer.get(name)
        if p is not None and p.op_type == "Constant":
            for a in p.attribute:
                if a.name == "value":
                    return a.t.data_type
        return self.types.get(name)

    def const(self, name: str) -> np.ndarray | None:
        """The value of an initializer or Constant output (through Identity), else None."""
        if not name:
            return None
        if name in self.init:
            return onnx.numpy_helper.to_array(self.init[name])
        p = self.producer.get(name)
        if p is not None and p.op_type == "Constant":
            for a in p.attribute:
                if a.name == "value":
                    return onnx.numpy_helper.to_array(a.t)
                if a.name in ("value_float", "value_int"):
                    return np.asarray(onnx.helper.get_attribute_value(a))
                if a.name in ("value_floats", "value_ints"):
                    return np.asarray(onnx.helper.get_attribute_value(a))
        if p is not None and p.op_type == "Identity":
            return self.const(p.input[0])
        return None

    def is_const(self, name: str) -> bool:
        return bool(name) and (name in self.init or self.const(name) is not None)

    def users(self, name: str) -> list[onnx.NodeProto]:
        return self.consumers.get(name, [])


def node_label(n: onnx.NodeProto, index: int | None = None) -> str:
    return n.name or (n.output[0] if n.output and n.output[0] else f"{n.op_type}#{index}")


def attr(n: onnx.NodeProto, name: str, default=None):
    for a in n.attribute:
        if a.name == name:
            v = onnx.helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


def dtype_name(t: int | None) -> str:
    if t is None:
        return "?"
    try:
        return onnx.TensorProto.DataType.Name(t)
    except ValueError:
        return str(t)
