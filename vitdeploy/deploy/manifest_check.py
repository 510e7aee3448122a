"""May this engine run here? The manifest against the running TensorRT and GPU.

A TensorRT plan is tied to the TensorRT version and the GPU it was built for,
unless it was built version-compatible (the same or a later TensorRT of the same
major, or 8 -> 9/10 and 10 -> 11, as TensorRT documents) or hardware-compatible
(Ampere and later). A plan
with vitdeploy AOT plugins also carries their PTX: it needs a driver that JITs the
recorded PTX ISA, and a GPU the PTX was compiled for (the build GPU's architecture,
or portable sm_80 PTX when built hardware-compatible). Deserializing a plan that does not fit
fails deep inside TensorRT or, worse, runs wrong; so we refuse first, naming
what differs. The plan file itself is checked against the manifest's size and
sha256 so a truncated or corrupted download is caught before TensorRT reads it.
"""
from __future__ import annotations

import os
from pathlib import Path

from vitdeploy.artifact import sha256_file
from vitdeploy.errors import VitdeployError
from vitdeploy.machine import parse_version

HW_COMPAT_LEVELS = ("none", "ampere_plus", "same_compute_capability")
# Version-compatible plans across a major version (TensorRT 11.4 support matrix, "Engine Portability":
# 10 -> 11 and 8 -> 10; the 10.16 docs add 8 -> 9). Within a major version any later release.
VERSION_COMPATIBLE_MAJORS = {(8, 9), (8, 10), (10, 11)}


def runtime_environment() -> dict:
    """What the running process would load an engine with: TensorRT version and GPU."""
    from vitdeploy import machine
    from vitdeploy.machine import tensorrt_version

    env = machine.probe()
    gpu = machine.primary_gpu(env) or {}
    return {"tensorrt": tensorrt_version(), "gpu": gpu, "jetson": env.get("jetson"),
            "cuda_driver": env.get("cuda_driver_api")}


def _cc(text: str | None) -> tuple[int, int] | None:
    v = parse_version(text)
    return (v[0], v[1] if len(v) > 1 else 0) if v else None


def differences(engine: dict, env: dict) -> tuple[list[str], list[str]]:
    """(refusals, warnings) for running an engine described by `engine` (the manifest's
    "engine" section) in `env` (see `runtime_environment`)."""
    refuse: list[str] = []
    warn: list[str] = []
    built_trt, here_trt = engine.get("tensorrt"), env.get("tensorrt")
    if here_trt is None:
        refuse.append(f"TensorRT is not importable here (engine built with TensorRT {built_trt})")
    elif built_trt:
        b, h = parse_version(built_trt), parse_version(here_trt)
        if engine.get("version_compatible"):
            if b and h and h < b:
                refuse.append(
                    f"TensorRT {here_trt} here, engine built version-compatible with TensorRT {built_trt} "
                    f"(runs on TensorRT >= {built_trt} only)"
                )
            elif b and h and h[0] != b[0] and (b[0], h[0]) not in VERSION_COMPATIBLE_MAJORS:
                refuse.append(
                    f"TensorRT {here_trt} here, engine built version-compatible with TensorRT {built_trt}: TensorRT "
                    f"supports that only within a major version or from 8 to 9/10 and 10 to 11"
                )
        elif b is None or h is None or b[:3] != h[:3]:
            refuse.append(f"TensorRT {here_trt} here, engine built with TensorRT {built_trt} (not version-compatible)")
    built_gpu = engine.get("gpu") or {}
    here_gpu = env.get("gpu") or {}
    level = engine.get("hardware_compatibility", "none")
    b_cc, h_cc = _cc(built_gpu.get("compute_capability")), _cc(here_gpu.get("compute_capability"))
    if not here_gpu:
        refuse.append("no CUDA GPU found here")
    elif b_cc and h_cc:
        where = f"{here_gpu.get('name', 'GPU')} (compute capability {h_cc[0]}.{h_cc[1]}) here, engine built for " \
                f"{built_gpu.get('name', 'a GPU')} (compute capability {b_cc[0]}.{b_cc[1]})"
        if level == "ampere_plus":
            if h_cc < (8, 0):
                refuse.append(f"{where}; hardware-compatible engines need compute capability >= 8.0")
            elif (env.get("jetson") or built_gpu.get("jetson")) and b_cc != h_cc:
                refuse.append(f"{where}; hardware compatibility does not cover Jetson")
            elif b_cc != h_cc and engine.get("plugins_registered"):
                ptx = engine.get("plugin_ptx") or {}
                fixed = [op for op in engine["plugins_registered"] if not (ptx.get(op) or {}).get("portable")]
                if fixed:
                    refuse.append(f"{where}; its plugin kernels ({', '.join(fixed)}) were compiled for the build GPU "
                                  "only (rebuild with this vitdeploy, which compiles portable sm_80 PTX)")
        elif b_cc != h_cc:
            hint = "" if level == "same_compute_capability" else "; rebuild here or build with --hardware-compat ampere_plus"
            refuse.append(where + hint)
        elif level == "none" and built_gpu.get("name") and here_gpu.get("name") and built_gpu["name"] != here_gpu["name"]:
            warn.append(f"engine built on {built_gpu['name']}, running on {here_gpu['name']} (same compute "
                        "capability: TensorRT allows it, but tactics were timed on the other GPU)")
    elif b_cc and not h_cc:
        warn.append("could not read this GPU's compute capability; TensorRT will check the engine itself")
    refuse.extend(_driver_ptx(engine, env))
    return refuse, warn


def _driver_ptx(engine: dict, env: dict) -> list[str]:
    """The driver JIT-compiles the plugins' PTX when the plan loads: its CUDA must know the PTX ISA."""
    from vitdeploy.plugins.ptx_target import driver_isa

    have = driver_isa(env.get("cuda_driver"))
    if have is None:
        return []
    out = []
    for op, rec in sorted((engine.get("plugin_ptx") or {}).items()):
        isa = parse_version(rec.get("ptx_isa"))
        if isa and isa[0] * 10 + (isa[1] if len(isa) > 1 else 0) > have:
            out.append(f"this machine's CUDA driver (CUDA {env['cuda_driver']}) JIT-compiles PTX ISA up to "
                       f"{have // 10}.{have % 10}, but the engine's {op} PTX is ISA {rec['ptx_isa']} ({rec.get('target')}); "
                       "update the driver")
    return out


def ensure_compatible(engine: dict, env: dict | None = None) -> list[str]:
    """Raise VitdeployError naming every difference that stops the engine running here; return warnings."""
    env = runtime_environment() if env is None else env
    refuse, warn = differences(engine, env)
    if refuse:
        raise VitdeployError("engine cannot run here: " + "; ".join(refuse),
                             "rebuild it on this machine with 'vitdeploy build --onnx MODEL.onnx'")
    return warn


def verify_plan_file(plan: str | os.PathLike, engine: dict) -> None:
    """Size and sha256 of the plan file against the manifest: catches truncation and corruption."""
    p = Path(plan)
    if not p.is_file():
        raise VitdeployError(f"engine file {p} does not exist", "build it with 'vitdeploy build'")
    want = (engine.get("plan") or {})
    size = p.stat().st_size
    if size == 0:
        raise VitdeployError(f"engine file {p} is empty", "rebuild or copy it again")
    if want.get("bytes") is not None and size != want["bytes"]:
        kind = "truncated" if size < want["bytes"] else "longer than built"
        raise VitdeployError(f"engine file {p} is {kind}: {size} bytes, manifest says {want['bytes']}",
                             "copy the engine again or rebuild it")
    if want.get("sha256") and sha256_file(p) != want["sha256"]:
        raise VitdeployError(f"engine file {p} is corrupted: its sha256 does not match the manifest",
                             "copy the engine again or rebuild it")
