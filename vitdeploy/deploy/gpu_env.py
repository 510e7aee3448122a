"""The GPU side of the machine: GPUs and compute capability, driver, CUDA, Jetson.

Everything is probed without importing torch or TensorRT (nvidia-smi, cuda-python
where installed, /proc and /etc on Jetson), so `doctor` and the manifest check are
cheap. Every probe is best effort: what cannot be read is left out, never guessed.
"""
from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path


def _run(cmd: list[str], timeout: float = 5.0) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text(errors="replace").strip().strip("\x00")
    except OSError:
        return None


def parse_smi_gpus(text: str) -> list[dict]:
    """`nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader` -> dicts."""
    gpus = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 3 or not parts[0]:
            continue
        gpu = {"name": parts[0], "driver": parts[2]}
        if re.fullmatch(r"\d+\.\d+", parts[1]):
            gpu["compute_capability"] = parts[1]
        if len(parts) > 3 and "N/A" not in parts[3]:
            gpu["memory"] = parts[3]
        gpus.append(gpu)
    return gpus


def _smi_gpus() -> list[dict]:
    out = _run(["nvidia-smi", "--query-gpu=name,compute_cap,driver_version,memory.total", "--format=csv,noheader"])
    return parse_smi_gpus(out) if out else []


_RUNTIME_WHEELS = ("nvidia-cuda-runtime", "nvidia-cuda-runtime-cu13", "nvidia-cuda-runtime-cu12", "nvidia-cuda-runtime-cu11")


def _cudart_version(lib_path: str) -> str | None:
    """cudaRuntimeGetVersion of the libcudart at `lib_path` ('13.0'), or None when it cannot be loaded."""
    import ctypes

    try:
        lib = ctypes.CDLL(lib_path)
        v = ctypes.c_int(0)
        if lib.cudaRuntimeGetVersion(ctypes.byref(v)) != 0 or v.value <= 0:
            return None
    except (OSError, AttributeError):
        return None
    return f"{v.value // 1000}.{(v.value % 1000) // 10}"


def cuda_runtime() -> dict:
    """The CUDA runtime (libcudart) this environment loads: {"version", "source"}, or {}.

    First the runtime wheel (nvidia-cuda-runtime*, what torch and cuda-python load in a venv),
    then the system libcudart. cuda-python's own cudaRuntimeGetVersion is not used: it reports
    the CUDA version the bindings were generated for (e.g. 13.4), not the runtime present.
    """
    from importlib.metadata import PackageNotFoundError, distribution

    for name in _RUNTIME_WHEELS:
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue
        libs = [f for f in dist.files or [] if re.search(r"(^|/)libcudart\.so(\.\d+)*$|(^|/)cudart64_\d+\.dll$", str(f))]
        for f in libs:
            v = _cudart_version(str(dist.locate_file(f)))
            if v:
                return {"version": v, "source": f"{name} {dist.version} wheel ({Path(str(f)).name})"}
        return {"version": ".".join(dist.version.split(".")[:2]), "source": f"{name} {dist.version} wheel (version from its metadata)"}
    import ctypes.util

    for lib in filter(None, (ctypes.util.find_library("cudart"), "libcudart.so", "libcudart.so.13", "libcudart.so.12")):
        v = _cudart_version(lib)
        if v:
            return {"version": v, "source": f"system {lib}"}
    return {}


def _cuda_python() -> dict:
    """Driver CUDA version and device properties through cuda-python, if installed."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            return {}
    info: dict = {}
    try:
        err, v = cudart.cudaDriverGetVersion()
        if int(err) == 0 and v:
            info["cuda_driver_api"] = f"{v // 1000}.{(v % 1000) // 10}"
        err, n = cudart.cudaGetDeviceCount()
        gpus = []
        for i in range(n if int(err) == 0 else 0):
            err, props = cudart.cudaGetDeviceProperties(i)
            if int(err) == 0:
                name = props.name.decode(errors="replace").strip("\x00") if isinstance(props.name, bytes) else str(props.name)
                gpus.append({"name": name, "compute_capability": f"{props.major}.{props.minor}"})
        if gpus:
            info["gpus"] = gpus
    except Exception:  # a driver/runtime mismatch shows up here; doctor reports what it got
        pass
    return info


def parse_tegra_release(text: str) -> str | None:
    """'# R36 (release), REVISION: 4.0, ...' -> '36.4.0' (the L4T version)."""
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{m.group(1)}.{m.group(2)}" if m else None


# L4T major.minor -> JetPack release (NVIDIA's published pairing).
_JETPACK = {"36.4": "6.2", "36.3": "6.0", "36.2": "6.0 DP", "35.6": "5.1.4", "35.5": "5.1.3", "35.4": "5.1.2",
            "35.3": "5.1.1", "38.2": "7.0"}


def jetpack_for_l4t(l4t: str | None) -> str | None:
    if not l4t:
        return None
    return _JETPACK.get(".".join(l4t.split(".")[:2]))


def parse_nvpmodel(text: str) -> str | None:
    """`nvpmodel -q` -> 'MAXN (0)' style power mode."""
    name = re.search(r"NV Power Mode:\s*(\S+)", text)
    num = re.search(r"^\s*(\d+)\s*$", text, re.M)
    if not name:
        return None
    return f"{name.group(1)} ({num.group(1)})" if num else name.group(1)


def jetson() -> dict | None:
    """Jetson module, L4T/JetPack release and nvpmodel power mode; None off Jetson."""
    model = _read("/proc/device-tree/model")
    release = _read("/etc/nv_tegra_release")
    if not release and not (model and "jetson" in model.lower()):
        return None
    info: dict = {}
    if model:
        info["module"] = model
    l4t = parse_tegra_release(release or "")
    if l4t:
        info["l4t"] = l4t
        jp = jetpack_for_l4t(l4t)
        if jp:
            info["jetpack"] = jp
    mode = _run(["nvpmodel", "-q"])
    if mode:
        pm = parse_nvpmodel(mode)
        if pm:
            info["power_mode"] = pm
    return info


@functools.lru_cache(maxsize=1)
def probe() -> dict:
    """{"gpus": [...], "driver": ..., "cuda_runtime": ..., "jetson": {...}} with what could be read."""
    env: dict = {}
    smi = _smi_gpus()
    cp = _cuda_python()
    gpus = smi or cp.get("gpus", [])
    if gpus:
        env["gpus"] = gpus
        if "driver" in gpus[0]:
            env["driver"] = gpus[0]["driver"]
    if "cuda_driver_api" in cp:
        env["cuda_driver_api"] = cp["cuda_driver_api"]
    rt = cuda_runtime()
    if rt:
        env["cuda_runtime"] = rt["version"]
        env["cuda_runtime_source"] = rt["source"]
    tegra = jetson()
    if tegra:
        env["jetson"] = tegra
        if not gpus:  # Jetson has no nvidia-smi on older L4T: the iGPU is still there
            env["gpus"] = [{"name": tegra.get("module", "Jetson iGPU")}]
    return env


def primary_gpu(env: dict | None = None) -> dict | None:
    env = probe() if env is None else env
    gpus = env.get("gpus") or []
    return gpus[0] if gpus else None


def is_jetson(env: dict | None = None) -> bool:
    return bool((probe() if env is None else env).get("jetson"))
