"""Which PTX the TensorRT faces compile: architecture, pinned PTX ISA, portability; and what was compiled.

The PTX inside an AOT plugin engine is JIT-compiled by the driver of whatever machine loads
the plan, so two things are chosen here rather than left to Triton's defaults:

* **PTX ISA (`.version`).** Triton writes the ISA of its bundled ptxas (8.8 for Triton 3.8's
  ptxas 12.9; 9.x with ptxas 13), which a driver older than that CUDA cannot JIT. vitdeploy
  pins the lowest ISA both the target architecture (LLVM NVPTX's processor table: sm_80 needs
  7.0, sm_87 7.4, sm_90a 8.0, sm_100 8.6, ...) and Triton's code generator (7.8: it emits
  `::cta` scope qualifiers everywhere) accept, so drivers from CUDA 11.8 on load the plugins
  on Ampere and Orin, 12.0 on Hopper. `VITDEPLOY_PTX_ISA=88` raises it (never below the floor).
  Triton's own compile runs ptxas on the PTX, so an instruction the pinned ISA lacks fails
  the build on the build machine, not on the target (that is how the 7.8 floor was found).
* **Architecture (`.target`).** The build GPU's compute capability (Triton makes sm_90 and
  later arch-specific: `sm_90a`), or portable `sm_80` PTX, which every Ampere-or-later GPU
  JITs, when the engine is built `--hardware-compat ampere_plus`. `VITDEPLOY_PTX_ARCH`
  overrides the architecture for CPU-only compiles (tests, inspection); it does not make a
  TensorRT plan for another GPU, because the plan itself is built and timed on the build GPU.

`compiled()` collects what the faces really returned during a build (one record per
plugin: targets, ISAs, largest shared memory), which the engine step writes to the manifest.
"""
from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass

from vitdeploy.errors import VitdeployError

# Lowest PTX ISA (x10) each target accepts (LLVM's NVPTX.td `Proc<"sm_XX", [..., PTXnn]>`).
ISA_FLOOR = {75: 63, 80: 70, 86: 71, 87: 74, 88: 90, 89: 78, 90: 80, 100: 86, 101: 86, 103: 88, 110: 90,
             120: 87, 121: 88}
PORTABLE_ARCH = 80  # --hardware-compat ampere_plus: plain sm_80 PTX JITs on every Ampere-or-later GPU
# Triton 3.8 writes `::cta`-scoped instructions (PTX ISA 7.8) whatever the target; its ptxas
# refuses the kernels at `.version 7.0` ("Feature '::cta' requires PTX ISA .version 7.8 or later").
TRITON_ISA_MIN = 78


def isa_floor(arch: int) -> int:
    """Lowest PTX ISA for sm_`arch` that Triton's kernels assemble at (arch-specific 9.0+ targets included)."""
    if arch in ISA_FLOOR:
        return max(ISA_FLOOR[arch], TRITON_ISA_MIN)
    raise VitdeployError(f"no PTX ISA floor known for sm_{arch}",
                         "set VITDEPLOY_PTX_ISA to the PTX ISA this GPU needs (e.g. 88), or update vitdeploy")


def driver_isa(cuda_version: str | None) -> int | None:
    """Newest PTX ISA a driver JIT-compiles, from the CUDA version it supports ('12.8' -> 87).

    PTX ISA 8.x shipped with CUDA 12.x (12.6 kept 8.5; 12.8 is 8.7, 12.9 8.8), 9.x with 13.x,
    7.x with 11.x. The runtime side needs no Triton or TensorRT for this, hence the table here.
    """
    if not cuda_version:
        return None
    try:
        major, minor = (int(p) for p in str(cuda_version).split(".")[:2])
    except ValueError:
        return None
    if major == 11:
        return 70 + minor
    if major == 12:
        return 80 + minor - (1 if minor >= 6 else 0)
    if major >= 13:
        return 90 + (major - 13) * 10 + minor
    return None


def pinned_isa(arch: int) -> int:
    """The PTX ISA compiled for sm_`arch`: the floor, or $VITDEPLOY_PTX_ISA when set (not below the floor)."""
    floor = isa_floor(arch)
    env = os.environ.get("VITDEPLOY_PTX_ISA")
    if not env:
        return floor
    try:
        want = int(env.replace(".", ""))
    except ValueError:
        raise VitdeployError(f"VITDEPLOY_PTX_ISA={env} is not a PTX ISA version", "e.g. VITDEPLOY_PTX_ISA=8.7") from None
    if want < floor:
        raise VitdeployError(f"VITDEPLOY_PTX_ISA={env} is below PTX ISA {floor // 10}.{floor % 10}, the lowest sm_{arch} accepts",
                             f"unset it or use >= {floor // 10}.{floor % 10}")
    return want


@dataclass(frozen=True)
class PtxTarget:
    arch: int
    isa: int
    portable: bool = False  # True: compiled for every GPU a hardware-compatible engine may meet (sm_80, no 'a')

    @property
    def name(self) -> str:
        """The `.target` Triton writes: arch-specific `sm_XXa` from 9.0 on, unless compiled portable."""
        return f"sm_{self.arch}" + ("a" if self.arch >= 90 and not self.portable else "")

    def to_dict(self) -> dict:
        return {"target": self.name, "arch": self.arch, "ptx_isa": f"{self.isa // 10}.{self.isa % 10}",
                "portable": self.portable}


class _Override:  # module-wide, not thread-local: TensorRT may call aot_impl from its own builder thread
    target: "PtxTarget | None" = None


_override = _Override()


@contextlib.contextmanager
def compile_for(target: PtxTarget):
    """Make every TensorRT face compile for `target` inside the block (the engine step sets it)."""
    prev = _override.target
    _override.target = target
    try:
        yield target
    finally:
        _override.target = prev


def active() -> PtxTarget | None:
    """The target set by `compile_for` around the current build, or None."""
    return _override.target


def _gpu_arch() -> int | None:
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability()
            return major * 10 + minor
    except Exception:  # a broken torch CUDA install: treat as no GPU
        pass
    return None


def resolve(plugin: str = "the plugins") -> PtxTarget:
    """The target the faces compile for now: `compile_for` > $VITDEPLOY_PTX_ARCH > this GPU."""
    forced = _override.target
    if forced is not None:
        return forced
    env = os.environ.get("VITDEPLOY_PTX_ARCH")
    if env:
        try:
            arch = int(env.removeprefix("sm_").rstrip("a"))
        except ValueError:
            raise VitdeployError(f"VITDEPLOY_PTX_ARCH={env} is not an SM version", "e.g. VITDEPLOY_PTX_ARCH=90") from None
        return PtxTarget(arch, pinned_isa(arch))
    arch = _gpu_arch()
    if arch is None:
        raise VitdeployError(f"no CUDA device to compile {plugin} for", "set VITDEPLOY_PTX_ARCH (e.g. 90) to compile without a GPU")
    return PtxTarget(arch, pinned_isa(arch))


def for_engine(hardware_compat: str, build_arch: int | None) -> PtxTarget:
    """The target for an engine built here at `--hardware-compat` level (validated; one-line errors)."""
    env = os.environ.get("VITDEPLOY_PTX_ARCH")
    if hardware_compat == "ampere_plus":
        if env and int(env.removeprefix("sm_").rstrip("a")) != PORTABLE_ARCH:
            raise VitdeployError(f"VITDEPLOY_PTX_ARCH={env} with --hardware-compat ampere_plus: hardware-compatible "
                                 f"engines need portable sm_{PORTABLE_ARCH} plugin PTX",
                                 "unset VITDEPLOY_PTX_ARCH, or build with --hardware-compat none")
        return PtxTarget(PORTABLE_ARCH, pinned_isa(PORTABLE_ARCH), portable=True)
    if env:
        target = resolve()
    elif build_arch is None:
        raise VitdeployError("no CUDA device to build the plugin kernels for", "build the engine on the target GPU")
    else:
        target = PtxTarget(build_arch, pinned_isa(build_arch))
    if build_arch is not None and target.arch != build_arch:
        raise VitdeployError(f"VITDEPLOY_PTX_ARCH={env} but the engine is built on a compute capability "
                             f"{build_arch // 10}.{build_arch % 10} GPU: the plugins would not run in it",
                             "unset VITDEPLOY_PTX_ARCH (TensorRT plans are tied to the GPU that builds them)")
    return target


def check_driver(target: PtxTarget, cuda_version: str | None, where: str = "this machine") -> None:
    """Refuse, in one line, when the driver here cannot JIT the pinned PTX ISA."""
    have = driver_isa(cuda_version)
    if have is not None and have < target.isa:
        raise VitdeployError(
            f"{where}'s CUDA driver (CUDA {cuda_version}) JIT-compiles PTX ISA up to {have // 10}.{have % 10}, "
            f"but the plugin PTX for {target.name} is ISA {target.isa // 10}.{target.isa % 10}",
            "update the NVIDIA driver, or rebuild with --plugins off",
        )


# --- what the faces returned during a build -------------------------------------------------------

_compiled: dict[str, dict] = {}
_lock = threading.Lock()


def record(plugin: str, target: PtxTarget, ptx_isa: int, ptx_target: str, shared: int) -> None:
    """Called for every PTX a TensorRT face returns (see plugins.trt.finish_for_tensorrt)."""
    with _lock:
        r = _compiled.setdefault(plugin, {"targets": set(), "isas": set(), "max_shared": 0, "kernels": 0,
                                          "portable": True})
        r["targets"].add(ptx_target)
        r["isas"].add(ptx_isa)
        r["max_shared"] = max(r["max_shared"], shared)
        r["kernels"] += 1
        r["portable"] = r["portable"] and target.portable


def reset() -> None:
    with _lock:
        _compiled.clear()


def compiled() -> dict[str, dict]:
    """{plugin: {"target", "ptx_isa", "max_shared_bytes", "kernels"}} for the manifest (JSON-ready)."""
    with _lock:
        out = {}
        for op, r in sorted(_compiled.items()):
            isa = max(r["isas"])
            out[op] = {"target": ",".join(sorted(r["targets"])), "ptx_isa": f"{isa // 10}.{isa % 10}",
                       "max_shared_bytes": r["max_shared"], "kernels": r["kernels"],
                       "portable": r["portable"]}
        return out
