"""The smallest stand-in for TensorRT's compiled core that TensorRT's real Python plugin layer needs.

`tensorrt.plugin` (QDP) is pure Python; it ships in the bindings wheel
(`tensorrt-cu13-bindings`, `tensorrt_bindings/plugin/*.py`) next to a compiled `tensorrt.so`
that cannot load without libnvinfer. This module supplies, as a module named `tensorrt`, only
what that plugin layer and vitdeploy's faces touch of the compiled core:

* enums: DataType (+ the `float16`/`int32` aliases used), TensorFormat, PluginFieldType,
  DimensionOperation, PluginArgType/PluginArgDataType, QuickPluginCreationRequest,
  TensorRTPhase, ILogger.Severity;
* data holders: PluginField / PluginFieldCollection (`data` typed by field type, as the
  bindings' getter does), Dims, DimsExprs, PluginTensorDesc, DynamicPluginTensorDesc;
* interface bases QDP subclasses (IPluginV3, IPluginV3Quick*, IPluginCreatorV3Quick, ISymExpr);
* the plugin registry: `register_creator(creator, namespace)`, `get_creator(name, version, namespace)`;
* a symbolic dimension-expression builder (`IExprBuilder.constant/operation`, `IDimensionExpr.
  is_constant/get_constant_value`) with the operations NvInferRuntime.h documents;
* `Logger` (QDP logs one warning at import).

Two things here are decisions the tests rely on: `IDimensionExpr.evaluate` (a symbolic
dimension's value at a concrete batch, with the operations NvInferRuntime.h documents; output
shapes, grids and extra scalars are read back through it) and `is_constant` (whether an
expression is a build-time constant). Everything else the tests assert on is what the real
plugin layer and the vitdeploy face return (PTX, launch expressions, field values, tactics).
Never used to build or run an engine; see `vitdeploy.testing.contract`.
"""
from __future__ import annotations

import enum
import types
from typing import Any

import numpy as np


class DataType(enum.IntEnum):  # NvInferRuntimeBase.h
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    FP8 = 6
    BF16 = 7
    INT64 = 8
    INT4 = 9
    FP4 = 10
    E8M0 = 11


class TensorFormat(enum.IntEnum):  # NvInferRuntimeBase.h
    LINEAR = 0
    CHW2 = 1
    HWC8 = 2
    CHW4 = 3
    CHW16 = 4
    CHW32 = 5
    DHWC8 = 6
    CDHW32 = 7
    HWC = 8
    DLA_LINEAR = 9
    DLA_HWC4 = 10
    HWC16 = 11
    DHWC = 12


class PluginFieldType(enum.IntEnum):  # NvInferRuntimePlugin.h
    FLOAT16 = 0
    FLOAT32 = 1
    FLOAT64 = 2
    INT8 = 3
    INT16 = 4
    INT32 = 5
    CHAR = 6
    DIMS = 7
    UNKNOWN = 8
    BF16 = 9
    INT64 = 10
    FP8 = 11
    INT4 = 12
    FP4 = 13


_FIELD_DTYPES = {  # what the bindings' PluginField.data getter returns per type (pyPlugin.cpp)
    PluginFieldType.INT32: np.int32, PluginFieldType.UNKNOWN: np.int8, PluginFieldType.INT8: np.int8,
    PluginFieldType.INT16: np.int16, PluginFieldType.FLOAT32: np.float32, PluginFieldType.FLOAT64: np.float64,
    PluginFieldType.INT64: np.int64, PluginFieldType.CHAR: np.int8,
}


class DimensionOperation(enum.IntEnum):  # NvInferRuntime.h
    SUM = 0
    PROD = 1
    MAX = 2
    MIN = 3
    SUB = 4
    EQUAL = 5
    LESS = 6
    FLOOR_DIV = 7
    CEIL_DIV = 8


class PluginArgType(enum.IntEnum):
    INT = 0


class PluginArgDataType(enum.IntEnum):
    INT8 = 0
    INT16 = 1
    INT32 = 2


class QuickPluginCreationRequest(enum.IntEnum):
    UNKNOWN = 0
    PREFER_JIT = 1
    PREFER_AOT = 2
    STRICT_JIT = 3
    STRICT_AOT = 4


class TensorRTPhase(enum.IntEnum):
    BUILD = 0
    RUNTIME = 1


class _Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class ILogger:
    Severity = _Severity


class Logger(ILogger):
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = tuple(_Severity)
    messages: list[tuple[int, str]] = []

    def __init__(self, min_severity: int = _Severity.WARNING):
        self.min_severity = min_severity

    def log(self, severity, msg: str) -> None:
        Logger.messages.append((int(severity), msg))


# --- symbolic dimensions ------------------------------------------------------------------------


class IDimensionExpr:
    """A node of a symbolic dimension expression: a constant, a named symbol, or an operation."""

    def __init__(self, op: DimensionOperation | None = None, args: tuple = (), value: int | None = None,
                 symbol: str | None = None):
        self.op, self.args, self.value, self.symbol = op, args, value, symbol

    def is_constant(self) -> bool:
        if self.symbol is not None:
            return False
        return self.value is not None or all(a.is_constant() for a in self.args)

    def get_constant_value(self) -> int:
        if not self.is_constant():
            raise RuntimeError("not a build-time constant")
        return self.evaluate({})

    def is_size_tensor(self) -> bool:
        return False

    def evaluate(self, symbols: dict[str, int]) -> int:
        """The expression's value with `symbols` (e.g. {"batch": 2}) bound."""
        if self.symbol is not None:
            return int(symbols[self.symbol])
        if self.value is not None:
            return self.value
        a, b = (x.evaluate(symbols) for x in self.args)
        op = self.op
        if op == DimensionOperation.SUM:
            return a + b
        if op == DimensionOperation.PROD:
            return a * b
        if op == DimensionOperation.MAX:
            return max(a, b)
        if op == DimensionOperation.MIN:
            return min(a, b)
        if op == DimensionOperation.SUB:
            return a - b
        if op == DimensionOperation.EQUAL:
            return int(a == b)
        if op == DimensionOperation.LESS:
            return int(a < b)
        if op == DimensionOperation.FLOOR_DIV:
            return a // b
        if op == DimensionOperation.CEIL_DIV:
            return -(-a // b)
        raise ValueError(f"unknown dimension operation {op}")

    def __repr__(self) -> str:
        if self.symbol is not None:
            return self.symbol
        if self.value is not None:
            return str(self.value)
        return f"{self.op.name}({self.args[0]!r}, {self.args[1]!r})"


class IExprBuilder:
    def constant(self, value: int) -> IDimensionExpr:
        return IDimensionExpr(value=int(value))

    def operation(self, op: DimensionOperation, first: IDimensionExpr, second: IDimensionExpr) -> IDimensionExpr:
        return IDimensionExpr(DimensionOperation(op), (first, second))

    def declare_size_tensor(self, *args):
        raise NotImplementedError("size tensors are not used by vitdeploy's plugins")

    def symbol(self, name: str) -> IDimensionExpr:
        """A runtime dimension (what TensorRT hands a plugin for a -1 network dimension)."""
        return IDimensionExpr(symbol=name)


class DimsExprs(list):
    def __init__(self, arg: Any = 0):
        super().__init__(arg if isinstance(arg, (list, tuple)) else [None] * int(arg))


class Dims(tuple):
    MAX_DIMS = 8

    def __new__(cls, shape: Any = ()):
        return super().__new__(cls, () if isinstance(shape, int) and shape == 0 else tuple(shape))


class PluginTensorDesc:
    def __init__(self):
        self.dims, self.type, self.format, self.scale = Dims(), DataType.FLOAT, TensorFormat.LINEAR, 1.0


class DynamicPluginTensorDesc:
    def __init__(self):
        self.desc, self.min, self.opt, self.max = PluginTensorDesc(), Dims(), Dims(), Dims()


# --- plugin fields, interfaces, registry -------------------------------------------------------


class PluginField:
    def __init__(self, name: str = "", data: Any = None, type: PluginFieldType = PluginFieldType.UNKNOWN):
        self.name, self.type = name, PluginFieldType(type)
        if data is None or isinstance(data, (bytes, bytearray)):
            arr = np.frombuffer(bytes(data or b""), dtype=np.int8)  # CHAR / UNKNOWN: raw bytes
        else:
            arr = np.asarray(data)
        dtype = _FIELD_DTYPES.get(self.type)
        self._data = arr.astype(dtype) if dtype is not None and arr.dtype != dtype else arr
        self.size = int(self._data.size)

    @property
    def data(self) -> np.ndarray:
        return self._data


class PluginFieldCollection(list):
    pass


class IPluginV3:
    def __init__(self):
        pass


class IPluginV3QuickCore:
    def __init__(self):
        pass


class IPluginV3QuickBuild:
    def __init__(self):
        pass


class IPluginV3QuickRuntime:
    def __init__(self):
        pass


class IPluginV3QuickAOTBuild:
    def __init__(self):
        pass


class IPluginCreatorV3Quick:
    def __init__(self):
        pass


class ISymExpr:
    def __init__(self):
        self.type = self.dtype = self.expr = None


class ITensor:  # only named in an annotation of QDP's PluginDef.__call__
    pass


class KernelLaunchParams:
    """What TensorRT's IKernelLaunchParams receives in getLaunchParams (QDP sets each field)."""

    def __init__(self):
        self.grid_x = self.grid_y = self.grid_z = self.block_x = self.block_y = self.block_z = self.shared_mem = None


class SymExprs:
    """What TensorRT's ISymExprs receives: nbSymExprs, then one ISymExpr per extra kernel argument."""

    def __init__(self):
        self.nbSymExprs = 0
        self._items: dict[int, ISymExpr] = {}

    def __setitem__(self, i: int, expr: ISymExpr) -> None:
        if not 0 <= i < self.nbSymExprs:
            raise IndexError(i)
        self._items[i] = expr

    def __getitem__(self, i: int) -> ISymExpr:
        return self._items[i]

    def __len__(self) -> int:
        return self.nbSymExprs


class _Registry:
    def __init__(self):
        self._creators: dict[tuple[str, str, str], Any] = {}

    def register_creator(self, creator, plugin_namespace: str = "") -> bool:
        key = (creator.name, creator.plugin_version, plugin_namespace)
        if key in self._creators:
            return False
        self._creators[key] = creator
        return True

    def get_creator(self, type: str, version: str, plugin_namespace: str = ""):
        return self._creators.get((type, version, plugin_namespace))


def module() -> types.ModuleType:
    """A fresh `tensorrt` module with the stand-in's names (its own registry)."""
    mod = types.ModuleType("tensorrt", "stand-in for TensorRT's compiled core (vitdeploy contract tests)")
    names = dict(
        DataType=DataType, TensorFormat=TensorFormat, PluginFieldType=PluginFieldType,
        DimensionOperation=DimensionOperation, PluginArgType=PluginArgType, PluginArgDataType=PluginArgDataType,
        QuickPluginCreationRequest=QuickPluginCreationRequest, TensorRTPhase=TensorRTPhase,
        ILogger=ILogger, Logger=Logger,
        IDimensionExpr=IDimensionExpr, IExprBuilder=IExprBuilder, DimsExprs=DimsExprs, Dims=Dims,
        PluginTensorDesc=PluginTensorDesc, DynamicPluginTensorDesc=DynamicPluginTensorDesc,
        PluginField=PluginField, PluginFieldCollection=PluginFieldCollection, IPluginV3=IPluginV3,
        IPluginV3QuickCore=IPluginV3QuickCore, IPluginV3QuickBuild=IPluginV3QuickBuild,
        IPluginV3QuickRuntime=IPluginV3QuickRuntime, IPluginV3QuickAOTBuild=IPluginV3QuickAOTBuild,
        IPluginCreatorV3Quick=IPluginCreatorV3Quick, ISymExpr=ISymExpr, ITensor=ITensor,
        float16=DataType.HALF, int32=DataType.INT32,
    )
    for k, v in names.items():
        setattr(mod, k, v)
    registry = _Registry()
    mod.get_plugin_registry = lambda: registry
    mod.nptype = lambda t: {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8,
                            DataType.INT32: np.int32, DataType.INT64: np.int64, DataType.BOOL: np.bool_,
                            DataType.UINT8: np.uint8}[t]
    mod.__standin__ = True
    return mod


__all__ = ["module", "IExprBuilder", "KernelLaunchParams", "SymExprs", "PluginTensorDesc", "DynamicPluginTensorDesc"]
