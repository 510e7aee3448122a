"""TensorRT's AOT plugin launch, done by hand with the CUDA driver (cuda-python).

TensorRT loads the PTX an `aot_impl` returned and launches its entry with the returned grid,
block and dynamic shared memory, passing the tensor inputs, then the extra int32 scalars, then
the outputs. `AotKernel` does exactly that: `cuModuleLoadData` (the driver JIT-compiles the
pinned-ISA PTX, as it would inside a plan), `cuModuleGetFunction`, `cuLaunchKernel` with the
parameter array packed from the PTX entry's own parameter list and *no* shared-memory opt-in
(no `cuFuncSetAttribute`), so a kernel that needs more than 48 KiB fails to launch here as it
would in TensorRT. Only a GPU can run this; `pack_params` (the argument packing) is pure Python.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass

from vitdeploy.plugins import ptx as ptxinfo

_CTYPES = {".u64": ctypes.c_uint64, ".s64": ctypes.c_int64, ".b64": ctypes.c_uint64,
           ".u32": ctypes.c_uint32, ".s32": ctypes.c_int32, ".b32": ctypes.c_uint32,
           ".u16": ctypes.c_uint16, ".s16": ctypes.c_int16, ".f32": ctypes.c_float, ".f64": ctypes.c_double}
_INT_RANGE = {".u32": (0, 2**32 - 1), ".s32": (-(2**31), 2**31 - 1), ".b32": (-(2**31), 2**32 - 1),
              ".u16": (0, 2**16 - 1), ".s16": (-(2**15), 2**15 - 1), ".u64": (0, 2**64 - 1),
              ".b64": (0, 2**64 - 1), ".s64": (-(2**63), 2**63 - 1)}


@dataclass
class PackedParams:
    """`void* kernelParams[]` for cuLaunchKernel, and the values it points at (kept alive here)."""

    values: list
    array: object  # ctypes array of c_void_p

    @property
    def address(self) -> int:
        return ctypes.addressof(self.array)

    def __len__(self) -> int:
        return len(self.values)


def pack_params(param_types: tuple[str, ...], args: list) -> PackedParams:
    """One ctypes value per PTX entry parameter, in order; refuses a count, type or range mismatch.

    TensorRT passes pointers for `.u64` parameters and the extra SymInt32 values for `.u32`; a
    kernel whose entry disagrees with that order would read garbage, so mismatches are errors here.
    """
    if len(param_types) != len(args):
        raise ValueError(f"kernel takes {len(param_types)} parameters {list(param_types)}, got {len(args)} arguments")
    values = []
    for i, (t, a) in enumerate(zip(param_types, args)):
        ct = _CTYPES.get(t)
        if ct is None:
            raise ValueError(f"parameter {i}: PTX type {t} is not supported")
        if t in _INT_RANGE:
            if isinstance(a, bool) or not isinstance(a, int):
                raise TypeError(f"parameter {i} ({t}) needs an int, got {type(a).__name__}")
            lo, hi = _INT_RANGE[t]
            if not lo <= a <= hi:
                raise ValueError(f"parameter {i} ({t}): {a} is out of range")
        values.append(ct(a))
    array = (ctypes.c_void_p * len(values))(*[ctypes.addressof(v) for v in values])
    return PackedParams(values, array)


def _check(result):
    from cuda.bindings import driver as cu

    err, *rest = result if isinstance(result, tuple) else (result,)
    if err != cu.CUresult.CUDA_SUCCESS:
        _, name = cu.cuGetErrorName(err)
        raise RuntimeError(f"CUDA driver: {name.decode() if isinstance(name, bytes) else name}")
    return rest[0] if len(rest) == 1 else rest


class AotKernel:
    """One PTX kernel loaded through the driver into the current (primary) context, launched as TensorRT does."""

    def __init__(self, ptx: str | bytes, name: str):
        from cuda.bindings import driver as cu

        self.cu = cu
        text = ptx.decode() if isinstance(ptx, bytes) else ptx
        self.info = ptxinfo.parse(text, name)
        _check(cu.cuInit(0))
        ctx = _check(cu.cuCtxGetCurrent())
        if not int(ctx):  # torch (and the CUDA runtime) use the primary context: share it
            dev = _check(cu.cuDeviceGet(0))
            _check(cu.cuCtxSetCurrent(_check(cu.cuDevicePrimaryCtxRetain(dev))))
        self.module = _check(cu.cuModuleLoadData(text.encode() + b"\0"))
        self.function = _check(cu.cuModuleGetFunction(self.module, name.encode()))

    def launch(self, grid: tuple[int, int, int], block: tuple[int, int, int], shared: int, args: list, stream: int = 0):
        params = pack_params(self.info.params, args)
        _check(self.cu.cuLaunchKernel(self.function, *grid, *block, shared, stream, params.address, 0))
        return params

    def close(self) -> None:
        if getattr(self, "module", None) is not None:
            self.cu.cuModuleUnload(self.module)
            self.module = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
