"""A plugin's contract: its spec (name, inputs, outputs, attributes) and how its node looks in ONNX.

A plugin has one spec and several faces (vitdeploy/plugins/<name>/): the PyTorch reference (the
truth), an ONNX Runtime CPU custom op that runs the reference so rewritten graphs can be verified
on the CPU (`plugins.ort`), a Triton kernel compiled ahead of time to PTX (`plugins.ptx`), and a
`tensorrt.plugin` registration (`plugins.trt`). The spec is the contract all faces are tested against.

ONNX node convention (what TensorRT's ONNX parser expects for plugins):
op_type = plugin name, attributes `plugin_namespace` and `plugin_version`,
node domain = the namespace (declared in the model's opset imports).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

NAMESPACE = "vitdeploy"
_ATTR_TYPES = (int, float, str)


@dataclass(frozen=True)
class ListAttr:
    """An INTS / FLOATS attribute: `length` values of `item` (None: any length, at least one).

    ONNX stores it as a list; TensorRT's ONNX parser hands it to the plugin as an INT32 /
    FLOAT32 array field (`numpy.typing.NDArray` annotations in the `tensorrt.plugin` face);
    onnxruntime-extensions' Python ops take no list attributes, so `vitdeploy.onnxrt` passes it
    as a comma-separated string (`ort_attribute`). A scalar (a graph written before the
    attribute became a list) reads as that value repeated `length` times.
    """

    item: type
    length: int | None = None

    def coerce(self, name: str, v: Any) -> tuple:
        """The attribute's values as a tuple of `item`, from a list, an array, a scalar or a string."""
        if isinstance(v, bytes):
            v = v.decode()
        if isinstance(v, str):
            parts = [float(x) for x in v.split(",") if x.strip()]
            v = parts[0] if len(parts) == 1 else parts
        vals = [v] * (self.length or 1) if np.ndim(v) == 0 else np.asarray(v).reshape(-1).tolist()
        if not vals or (self.length is not None and len(vals) != self.length):
            raise ValueError(f"{name} must have {self.length or 'at least 1'} values, got {v!r}")
        if self.item is int and any(int(x) != x for x in vals):
            raise ValueError(f"{name} must hold integers, got {v!r}")
        return tuple(self.item(x) for x in vals)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    kind: str = "float"  # float (FP32 or FP16, the plugin follows its input) | int32 | int64
    doc: str = ""


@dataclass(frozen=True)
class PluginSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    attrs: Mapping[str, type | ListAttr] = field(default_factory=dict)
    version: str = "1"
    namespace: str = NAMESPACE
    doc: str = ""
    # Values `read_attrs` assumes for attributes a node lacks (graphs written before they existed).
    # Only the CPU faces read them: TensorRT's `tensorrt.plugin` has no attribute defaults, so the
    # rewrite always writes every attribute.
    defaults: Mapping[str, Any] = field(default_factory=dict)

    @property
    def plugin_id(self) -> str:
        """The id `tensorrt.plugin.register` takes: "namespace::name"."""
        return f"{self.namespace}::{self.name}"

    @property
    def domain(self) -> str:
        return self.namespace

    def node_attrs(self, **values: Any) -> dict:
        """Validated node attributes (every one written, defaults included: TensorRT's `tensorrt.plugin`
        has no defaults) plus the plugin_namespace/plugin_version TensorRT reads."""
        values = {**{k: v for k, v in self.defaults.items() if k not in values}, **values}
        missing = set(self.attrs) - set(values)
        extra = set(values) - set(self.attrs)
        if missing or extra:
            raise ValueError(f"{self.name}: missing attrs {sorted(missing)}, unknown attrs {sorted(extra)}")
        out: dict[str, Any] = {}
        for k, typ in self.attrs.items():
            v = values[k]
            if isinstance(typ, ListAttr):
                item = typ.coerce(f"{self.name}.{k}", v)
                v = [int(x) for x in item] if typ.item is int else [float(x) for x in item]
            elif typ is int:
                if int(v) != v:
                    raise ValueError(f"{self.name}.{k} must be an integer, got {v!r}")
                v = int(v)
            elif typ is float:
                v = float(v)
            else:
                v = str(v)
            out[k] = v
        out["plugin_namespace"] = self.namespace
        out["plugin_version"] = self.version
        return out

    def read_attrs(self, attrs: Mapping[str, Any]) -> dict:
        """The spec's attributes from a node's attribute dict (bytes decoded, plugin_* dropped)."""
        out = {}
        for k, typ in self.attrs.items():
            if k not in attrs and k in self.defaults:
                out[k] = self.defaults[k]
                continue
            v = attrs[k]
            if isinstance(typ, ListAttr):
                out[k] = typ.coerce(f"{self.name}.{k}", v)
                continue
            if isinstance(v, bytes):
                v = v.decode()
            out[k] = typ(v)
        return out

    def ort_attribute(self, attr):
        """An ONNX AttributeProto as the onnxruntime-extensions op receives it (lists as strings)."""
        import onnx

        typ = self.attrs.get(attr.name)
        if not isinstance(typ, ListAttr):
            return attr
        vals = onnx.helper.get_attribute_value(attr)
        vals = [vals] if np.ndim(vals) == 0 else list(vals)
        return onnx.helper.make_attribute(attr.name, ",".join(repr(typ.item(v)) for v in vals))

    def matches(self, op_type: str, domain: str | None = None) -> bool:
        return op_type == self.name and (domain in (None, "", self.domain, ORT_PYOP_DOMAIN))


# onnxruntime-extensions serves Python custom ops from this fixed domain, and only for
# FP32/integer tensors; `vitdeploy.onnxrt` moves plugin nodes there and casts FP16 around them.
ORT_PYOP_DOMAIN = "ai.onnx.contrib"
