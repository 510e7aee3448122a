"""PTX for the TensorRT faces: compiling a Triton kernel ahead of time (`triton_ptx`, no GPU needed),
what a PTX module says about itself, and the rules TensorRT's AOT launcher imposes on it.

TensorRT loads the PTX an `aot_impl` returns through the driver's PTX JIT and launches its
entry with the returned grid, block and dynamic shared memory, passing exactly the tensor
inputs, then the extra int32 scalars, then the outputs (`tensorrt.plugin.aot_impl`'s
docstring). This module reads those facts back from the PTX text (`.version`, `.target`,
the entry's parameter list, `.reqntid`, static shared arrays) and checks them, with no GPU,
no Triton and no TensorRT: the same checks run where the PTX is produced
(`plugins.trt.finish_for_tensorrt`), in the CPU contract tests, and before a driver launch.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

# Dynamic + static shared memory a block may use without cuFuncSetAttribute(
# CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES); nothing says TensorRT's AOT launcher opts in.
SHARED_LIMIT = 48 * 1024

_ENTRY = re.compile(r"\.visible\s+\.entry\s+([A-Za-z_$][\w$]*)\s*\(")
_VERSION = re.compile(r"^\s*\.version\s+(\d+)\.(\d+)", re.M)
_TARGET = re.compile(r"^\s*\.target\s+([\w, ]+)", re.M)
_SHARED = re.compile(r"^\s*(?!\.extern)(?:\.visible\s+)?\.shared\s+(?:\.align\s+\d+\s+)?\.(?:b|u|s|f)(\d+)\s+\w+\[(\d+)\]", re.M)


@dataclass(frozen=True)
class PtxInfo:
    entry: str
    isa: int  # PTX ISA x10, e.g. 80 for `.version 8.0`
    target: str  # e.g. "sm_90a"
    params: tuple[str, ...]  # PTX types of the entry's parameters, e.g. (".u64", ".u32")
    reqntid: tuple[int, ...] | None  # `.reqntid` of the entry, None when absent
    static_shared: int  # bytes of non-extern `.shared` arrays

    @property
    def arch(self) -> int:
        return int(re.sub(r"\D", "", self.target.split("_", 1)[1]))

    @property
    def arch_specific(self) -> bool:
        """sm_XXa / sm_XXf PTX runs on that architecture (family) only; plain sm_XX JITs forward."""
        return self.target[-1] in "af"

    @property
    def isa_text(self) -> str:
        return isa_text(self.isa)


def isa_text(isa: int) -> str:
    return f"{isa // 10}.{isa % 10}"


def parse(ptx: str | bytes, entry: str | None = None) -> PtxInfo:
    """Read the facts TensorRT and the driver act on from PTX text (one kernel entry)."""
    if isinstance(ptx, bytes):
        ptx = ptx.decode()
    entries = _ENTRY.findall(ptx)
    if entry is None:
        if len(entries) != 1:
            raise ValueError(f"PTX has {len(entries)} kernel entries {entries}; name the one to read")
        entry = entries[0]
    elif entry not in entries:
        raise ValueError(f"PTX has no entry {entry!r} (entries: {entries})")
    version = _VERSION.search(ptx)
    target = _TARGET.search(ptx)
    if not version or not target:
        raise ValueError("PTX has no .version/.target header")
    start = ptx.index(f".entry {entry}(")
    open_ = ptx.index("(", start)
    close = ptx.index(")", open_)
    params = tuple(p.split()[1] for p in ptx[open_ + 1:close].split(",") if p.strip())
    body_start = ptx.index("{", close)
    directives = ptx[close + 1:body_start]
    m = re.search(r"\.reqntid\s+([\d,\s]+)", directives)
    reqntid = tuple(int(x) for x in m.group(1).replace(" ", "").split(",") if x) if m else None
    static = sum(int(bits) // 8 * int(n) for bits, n in _SHARED.findall(ptx))
    return PtxInfo(entry, int(version.group(1)) * 10 + int(version.group(2)),
                   target.group(1).split(",")[0].strip(), params, reqntid, static)


def tensorrt_abi(n_inputs: int, n_extra: int, n_outputs: int) -> tuple[str, ...]:
    """The parameter list TensorRT's AOT launcher passes: input pointers, int32 scalars, output pointers."""
    return (".u64",) * n_inputs + (".u32",) * n_extra + (".u64",) * n_outputs


def problems(info: PtxInfo, *, abi: tuple[str, ...] | None = None, block: int | None = None,
             shared: int | None = None, max_isa: int | None = None, portable: bool = False) -> list[str]:
    """Everything about this PTX that TensorRT's AOT launch or the driver's JIT would reject; [] if none."""
    bad = []
    if abi is not None and info.params != abi:
        bad.append(f"entry {info.entry} takes {list(info.params)}, TensorRT passes {list(abi)}")
    if block is not None and info.reqntid is not None and info.reqntid[0] != block:
        bad.append(f".reqntid {info.reqntid} but the launch uses block_x={block}")
    if shared is not None and shared + info.static_shared > SHARED_LIMIT:
        bad.append(f"needs {shared + info.static_shared} B of shared memory per block, more than the "
                   f"{SHARED_LIMIT} B a launch gets without an opt-in")
    if max_isa is not None and info.isa > max_isa:
        bad.append(f".version {info.isa_text} is newer than the pinned PTX ISA {isa_text(max_isa)}")
    if portable and info.arch_specific:
        bad.append(f".target {info.target} is architecture-specific; portable PTX was asked for")
    return bad


# --- compiling --------------------------------------------------------------------------------------

def triton_ptx(fn, signature: Mapping[str, str], constexprs: Mapping[str, Any], arch: int, num_warps: int = 4, num_stages: int = 2,
               aligned: tuple[str, ...] = ()):
    """Compile a @triton.jit kernel ahead of time to PTX for sm_`arch`, without a GPU.

    Returns (kernel_name, ptx_text, metadata). Used by the `aot_impl` TensorRT faces and the
    AOT tests (sm_87 Jetson Orin, sm_90 Hopper). The PTX ISA is pinned to
    `ptx_target.pinned_isa(arch)` (the lowest the architecture accepts) instead of Triton's
    default, its bundled ptxas's, so older drivers can JIT it; Triton still assembles the PTX
    with its ptxas, which rejects any instruction the pinned ISA lacks. `aligned` names pointer
    arguments the caller guarantees 16-byte aligned (TensorRT's plugin I/O buffers are): the JIT
    infers that from the actual pointers, AOT must be told, else every load/store is scalar.
    """
    import triton
    from triton.backends.compiler import GPUTarget

    from vitdeploy.plugins.ptx_target import pinned_isa

    names = list(signature)
    attrs = {(names.index(a),): [["tt.divisibility", 16]] for a in aligned}
    src = triton.compiler.ASTSource(fn=fn, signature=dict(signature), constexprs=dict(constexprs), attrs=attrs or None)
    target = GPUTarget("cuda", arch, 32)
    options = {"num_warps": num_warps, "num_stages": num_stages, "ptx_version": pinned_isa(arch)}
    compiled = triton.compile(src, target=target, options=options)
    return compiled.metadata.name, compiled.asm["ptx"], compiled.metadata


def _entry_span(ptx: str, name: str) -> tuple[int, int]:
    start = ptx.index(f".entry {name}(")
    open_ = ptx.index("(", start)
    return open_ + 1, ptx.index(")", open_)


def entry_params(ptx: str, name: str) -> list[str]:
    """PTX types of the entry's parameters, e.g. ['.u64', '.u32']."""
    a, b = _entry_span(ptx, name)
    return [p.split()[1] for p in ptx[a:b].split(",") if p.strip()]


def strip_unused_scratch_params(ptx: str, name: str, keep: int) -> str:
    """Drop entry parameters after the first `keep` (the kernel's own arguments) if the body never reads them.

    Triton appends hidden pointers (global scratch, profile scratch) to every kernel; TensorRT's
    AOT launcher passes exactly: tensor inputs, extra scalars, outputs. A kernel that needs no
    scratch never reads them, so removing them makes the entry match what TensorRT passes.
    """
    a, b = _entry_span(ptx, name)
    params = [p.strip() for p in ptx[a:b].split(",") if p.strip()]
    if len(params) <= keep:
        return ptx
    body = ptx[b:]
    for p in params[keep:]:
        pname = p.split()[-1]
        if pname in body:
            raise ValueError(f"kernel {name} reads hidden parameter {pname}; cannot drop it")
    kept = ",\n".join("\t" + p for p in params[:keep])
    return ptx[:a] + "\n" + kept + "\n" + ptx[b:]


def ptxas_path() -> str | None:
    """Triton's bundled ptxas (lets CPU-only tests assemble PTX), or None."""
    import os

    try:
        from triton.backends.nvidia.compiler import get_ptxas

        p = get_ptxas(90).path
    except Exception:
        return None
    return p if p and os.path.isfile(p) else None
