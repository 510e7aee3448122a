"""Where a benchmark ran: device, clocks and power mode (where readable), versions, commit.

Every probe is best effort: a field that cannot be read is left out, never guessed. The probe
helpers and tool versions are `vitdeploy.machine`'s; this adds what a benchmark record needs.
NVIDIA discrete GPUs are read with nvidia-smi; Jetson boards through /sys and nvpmodel.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

from vitdeploy.machine import read as _read
from vitdeploy.machine import run as _run

_SMI_FIELDS = (
    "name",
    "driver_version",
    "pci.bus_id",
    "clocks.sm",
    "clocks.mem",
    "clocks.max.sm",
    "clocks.max.mem",
    "clocks.applications.graphics",
    "power.draw",
    "power.limit",
    "persistence_mode",
    "temperature.gpu",
    "pstate",
)


_SMI_MINIMAL = ("name", "driver_version", "clocks.sm", "clocks.max.sm", "power.limit")


def parse_nvidia_smi(csv_line: str, fields=_SMI_FIELDS) -> dict:
    """One `nvidia-smi --query-gpu=... --format=csv,noheader` line -> {field: value}, '[N/A]' dropped."""
    values = [v.strip() for v in csv_line.split(",")]
    return {k: v for k, v in zip(fields, values) if v and "N/A" not in v and "Not Supported" not in v}


def nvidia_smi(index: int = 0) -> dict | None:
    # Older drivers reject the whole query when one field is unknown: fall back to fields every driver has.
    for fields in (_SMI_FIELDS, _SMI_MINIMAL):
        out = _run(["nvidia-smi", f"--id={index}", f"--query-gpu={','.join(fields)}", "--format=csv,noheader"])
        if out:
            break
    else:
        return None
    info = parse_nvidia_smi(out.splitlines()[0], fields)
    locked = _run(["nvidia-smi", f"--id={index}", "--query-gpu=clocks_event_reasons.active", "--format=csv,noheader"])
    if locked:
        info["clocks_event_reasons"] = locked.splitlines()[0].strip()
    return info


def jetson() -> dict | None:
    """Jetson (L4T) model, nvpmodel power mode and GPU/EMC clocks from /sys."""
    model = _read("/proc/device-tree/model")
    if not (model and "jetson" in model.lower()) and not Path("/etc/nv_tegra_release").exists():
        return None
    info: dict = {"model": model} if model else {}
    release = _read("/etc/nv_tegra_release")
    if release:
        info["l4t"] = release.splitlines()[0]
    mode = _run(["nvpmodel", "-q"])
    if mode:
        info["power_mode"] = " ".join(line.strip() for line in mode.splitlines() if line.strip())
    for devfreq in sorted(Path("/sys/class/devfreq").glob("*")):
        name = devfreq.name
        if not any(t in name for t in ("gpu", "ga10b", "gv11b", "gp10b")):
            continue
        for key in ("cur_freq", "min_freq", "max_freq", "governor"):
            v = _read(devfreq / key)
            if v:
                info[f"gpu_{key}"] = int(v) if v.isdigit() else v
    emc = _read("/sys/kernel/debug/bpmp/debug/clk/emc/rate")
    if emc and emc.isdigit():
        info["emc_rate_hz"] = int(emc)
    return info


def cpu() -> dict:
    info: dict = {"machine": platform.machine(), "cores": os.cpu_count()}
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.lower().startswith(("model name", "hardware")):
            info["model"] = line.split(":", 1)[1].strip()
            break
    gov = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    if gov:
        info["governor"] = gov
    return info


def git_commit(start: str | Path | None = None) -> dict | None:
    """The commit of the checkout vitdeploy runs from (or `start`), with a dirty flag."""
    import os

    if os.environ.get("VITDEPLOY_GIT_COMMIT"):  # copies of the tree without .git (remote GPU runs)
        return {"commit": os.environ["VITDEPLOY_GIT_COMMIT"], "dirty": False, "source": "VITDEPLOY_GIT_COMMIT"}
    where = Path(start) if start else Path(__file__).resolve().parents[2]
    sha = _run(["git", "-C", str(where), "rev-parse", "HEAD"])
    if not sha:
        return None
    dirty = _run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"])
    return {"commit": sha, "dirty": bool(dirty)}


def versions() -> dict:
    from vitdeploy import __version__
    from vitdeploy.machine import tool_versions

    out = {"vitdeploy": __version__, **tool_versions(("torch", "onnxruntime", "onnx", "timm", "triton", "tensorrt"), imported=True)}
    try:
        import torch

        if torch.version.cuda:
            out["torch_cuda"] = torch.version.cuda
    except Exception:
        pass
    return out


def collect(device: str = "cpu") -> dict:
    env: dict = {"host": platform.node(), "os": platform.platform(), "cpu": cpu(), "versions": versions()}
    commit = git_commit()
    if commit:
        env["git"] = commit
    if device == "cuda":
        gpu: dict = {}
        try:
            import torch

            if torch.cuda.is_available():
                idx = torch.cuda.current_device()
                props = torch.cuda.get_device_properties(idx)
                gpu = {"name": props.name, "capability": f"{props.major}.{props.minor}",
                       "memory_gib": round(props.total_memory / 2**30, 1), "sm_count": props.multi_processor_count}
        except Exception:
            pass
        smi = nvidia_smi()
        if smi:
            gpu["nvidia_smi"] = smi
        tegra = jetson()
        if tegra:
            gpu["jetson"] = tegra
        env["gpu"] = gpu
    return env


def device_name(env: dict, device: str) -> str:
    if device == "cuda":
        gpu = env.get("gpu", {})
        return gpu.get("name") or gpu.get("nvidia_smi", {}).get("name") or "CUDA GPU"
    return env.get("cpu", {}).get("model") or platform.processor() or "CPU"
