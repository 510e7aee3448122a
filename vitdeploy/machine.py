"""What this machine has: GPUs, driver, CUDA, Jetson, the TensorRT here and what its version allows, tool versions.

Every probe is best effort and imports neither torch nor TensorRT's core where it can avoid it
(nvidia-smi, cuda-python where installed, /proc and /etc on Jetson, package metadata), so
`doctor`, the manifest check and a cached build stay cheap: what cannot be read is left out,
never guessed. `vitdeploy.bench.environment` adds what a benchmark records (clocks, power,
commit) with the same `run`/`read` helpers.

TensorRT and plugins: vitdeploy's plugins are `tensorrt.plugin` plugins with ahead-of-time (AOT)
implementations: the Triton kernel's PTX is embedded in the engine, so the engine runs without
Python (trtexec, C++). AOT plugins need TensorRT >= 10.9. JetPack 6 ships TensorRT 10.3-10.8, so
there the graph keeps (or gets) the plugin-free "native" rewrite instead. The decision is a pure
function of the TensorRT version string so it can be tested without TensorRT.
"""
from __future__ import annotations

import functools
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from vitdeploy.errors import VitdeployError


def run(cmd: list[str], timeout: float = 5.0) -> str | None:
    """A probe command's stdout, stripped; None when the tool is absent, fails or times out."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def read(path: str | Path) -> str | None:
    """A /proc, /sys or /etc file's text, stripped (NULs too); None when it cannot be read."""
    try:
        return Path(path).read_text(errors="replace").strip().strip("\x00")
    except OSError:
        return None


def tool_versions(names, *, imported: bool = False, python: bool = True) -> dict:
    """Versions of `names` in that order (plus Python's); what is not installed is left out.

    By default from package metadata, without importing anything (a cached rerun stays fast);
    `imported=True` imports each module and reads its `__version__`, what actually runs (torch's
    build tag such as +cu130 included, which its metadata lacks).
    """
    import platform

    out = {"python": platform.python_version()} if python else {}
    for name in names:
        if imported:
            try:
                out[name] = __import__(name).__version__
            except Exception:  # absent or broken installs both mean "not available here"
                pass
            continue
        from importlib.metadata import PackageNotFoundError, version

        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


# ----------------------------------------------------------------------------- GPU, driver, CUDA, Jetson
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
    out = run(["nvidia-smi", "--query-gpu=name,compute_cap,driver_version,memory.total", "--format=csv,noheader"])
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
    model = read("/proc/device-tree/model")
    release = read("/etc/nv_tegra_release")
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
    mode = run(["nvpmodel", "-q"])
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


# ----------------------------------------------------------------------------- TensorRT here


AOT_PLUGINS_MIN = (10, 9)
PLUGIN_CHOICES = ("auto", "on", "off")
# MultiscaleDeformableAttnPlugin_TRT version 2 (IPluginV3) exists from TensorRT 10.11; version 1
# (IPluginV2DynamicExt, same IO and no fields) from 8.6 on, kept as the "Legacy" creator through 11.1.
STOCK_MSDA_V2_MIN = (10, 11)


def parse_version(text: str | None) -> tuple[int, ...] | None:
    """'10.3.0.30' -> (10, 3, 0, 30); None or garbage -> None."""
    if not text:
        return None
    m = re.match(r"^\s*(\d+(?:\.\d+)*)", str(text))
    return tuple(int(p) for p in m.group(1).split(".")) if m else None


def supports_aot_plugins(version: str | None) -> bool:
    v = parse_version(version)
    return v is not None and v[:2] >= AOT_PLUGINS_MIN


@functools.lru_cache(maxsize=1)
def tensorrt_version() -> str | None:
    """The importable TensorRT's version, or None where `import tensorrt` fails."""
    try:
        import tensorrt
    except Exception:  # absent, or a broken install (missing libnvinfer): both mean "no TensorRT"
        return None
    return getattr(tensorrt, "__version__", None) or "unknown"


def tensorrt_import_error() -> str | None:
    """Why `import tensorrt` fails here (one line), or None when it works."""
    try:
        import tensorrt  # noqa: F401
    except Exception as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        return f"{type(e).__name__}: {first}"
    return None


@dataclass(frozen=True)
class PluginDecision:
    mode: str  # "plugin" | "native"
    reason: str


def select_plugin_mode(requested: str, trt_version: str | None, target: str = "gpu") -> PluginDecision:
    """`--plugins auto|on|off` + the TensorRT that will build the engine -> rewrite mode.

    `trt_version` None means no TensorRT here: the ONNX is prepared for the target,
    assumed to have TensorRT >= 10.9 on a GPU and JetPack 6 (10.3) on a Jetson.
    """
    if requested not in PLUGIN_CHOICES:
        raise VitdeployError(f"--plugins must be one of {', '.join(PLUGIN_CHOICES)}, got '{requested}'")
    need = ".".join(map(str, AOT_PLUGINS_MIN))
    if requested == "off":
        return PluginDecision("native", "--plugins off: plugin-free rewrite")
    if trt_version is None:
        if requested == "on":
            return PluginDecision("plugin", f"--plugins on: the target needs TensorRT >= {need}")
        if target == "jetson":
            return PluginDecision(
                "native", f"no TensorRT here and target jetson: plugin-free rewrite, which JetPack 6 (TensorRT < {need}) can build"
            )
        return PluginDecision("plugin", f"no TensorRT here: AOT plugins, so the target needs TensorRT >= {need} (--plugins off for older)")
    if supports_aot_plugins(trt_version):
        return PluginDecision("plugin", f"TensorRT {trt_version} supports ahead-of-time plugins")
    if requested == "on":
        raise VitdeployError(
            f"--plugins on needs TensorRT >= {need} for ahead-of-time plugins; this machine has TensorRT {trt_version}",
            "use --plugins auto or off: the plugin-free rewrite builds on this TensorRT",
        )
    return PluginDecision(
        "native", f"TensorRT {trt_version} predates ahead-of-time plugins (>= {need}): using the plugin-free rewrite"
    )


@dataclass(frozen=True)
class StockPluginChoice:
    version: str
    reason: str

    def to_dict(self) -> dict:
        return {"version": self.version, "reason": self.reason}


def stock_msda_version(trt_version: str | None) -> StockPluginChoice:
    """Which `MultiscaleDeformableAttnPlugin_TRT` version the graph asks for, by the TensorRT that builds it.

    Version 2 only from 10.11 (multiscaleDeformableAttnPlugin.cpp: DMHA_VERSION "1" up to 10.10,
    "2" from 10.11, with v1 moved to ...PluginLegacy.cpp and still registered in 11.1's
    inferPlugin.cpp). The two have the same inputs, output and (no) fields, so v1 is the safe
    choice when the target TensorRT is not known here.
    """
    v = parse_version(trt_version)
    need = ".".join(map(str, STOCK_MSDA_V2_MIN))
    if v is None:
        return StockPluginChoice("1", f"no TensorRT here: version 1, which every TensorRT since 8.6 registers "
                                      f"(version 2 needs >= {need})")
    if v[:2] >= STOCK_MSDA_V2_MIN:
        return StockPluginChoice("2", f"TensorRT {trt_version} has version 2 (IPluginV3; version 1 is deprecated since {need})")
    return StockPluginChoice("1", f"TensorRT {trt_version} predates version 2 ({need})")


def supports_dla(version: str | None) -> bool:
    """DLA builds: TensorRT <= 10.7 (JetPack 5/6), none in 10.8-11.4.0, back in 11.4.1 (JetPack 7.2.2+, Orin)."""
    v = parse_version(version)
    if v is None:
        return False
    return v[:2] <= (10, 7) or v[:3] >= (11, 4, 1)
