"""Which TensorRT is here, and what that means for plugins.

vitdeploy's plugins are `tensorrt.plugin` plugins with ahead-of-time (AOT)
implementations: the Triton kernel's PTX is embedded in the engine, so the
engine runs without Python (trtexec, C++). AOT plugins need TensorRT >= 10.9.
JetPack 6 ships TensorRT 10.3-10.8, so there the graph keeps (or gets) the
plugin-free "native" rewrite instead. The decision is a pure function of the
TensorRT version string so it can be tested without TensorRT.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from vitdeploy.errors import VitdeployError

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
