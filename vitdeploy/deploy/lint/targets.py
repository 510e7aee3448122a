"""Which TensorRT a graph is linted against: `--trt auto` for `vitdeploy lint`, the build's target for `build`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vitdeploy.deploy.lint.core import fmt, parse_trt
from vitdeploy.deploy.lint.tables import AOT_PLUGINS, Version

JETPACK6: Version = (10, 3)  # JetPack 6.x ships TensorRT 10.3 (the oldest target vitdeploy builds for)


@dataclass(frozen=True)
class LintTarget:
    version: Version
    reason: str
    open_ended: bool = False  # an assumed lowest version (no TensorRT here): a graph may need a newer one

    @property
    def label(self) -> str:
        return fmt(self.version) + ("+" if self.open_ended else "")


def _parsed(version: str | None) -> Version | None:
    """A TensorRT version string as (major, minor); None when absent or unreadable ("unknown")."""
    from vitdeploy.errors import VitdeployError

    try:
        return parse_trt(version) if version else None
    except VitdeployError:
        return None


def build_target(trt_here: str | None, target: str, mode: str) -> LintTarget:
    """The TensorRT `build` writes its graph for (the same assumptions as machine.select_plugin_mode)."""
    here = _parsed(trt_here)
    if here is not None:
        return LintTarget(here, f"the TensorRT installed here ({trt_here})")
    if target == "jetson" and mode == "plugin":  # --plugins on: a Jetson with TensorRT >= 10.9 (JetPack 7)
        return LintTarget(AOT_PLUGINS, f"target jetson with plugins: TensorRT >= {fmt(AOT_PLUGINS)} (not JetPack 6)",
                          open_ended=True)
    if target == "jetson":
        return LintTarget(JETPACK6, "target jetson: JetPack 6 (TensorRT 10.3)")
    if mode == "native":
        return LintTarget(JETPACK6, "plugin-free graph, meant for TensorRT < 10.9 too", open_ended=True)
    return LintTarget(AOT_PLUGINS, f"no TensorRT here, GPU target: TensorRT >= {fmt(AOT_PLUGINS)} (AOT plugins)",
                      open_ended=True)


def for_final_graph(target: LintTarget, has_aot_plugins: bool) -> LintTarget:
    """An assumed floor of 10.9 exists for vitdeploy's AOT plugins; a final graph without them is checked
    from TensorRT 10.3 on (whatever it needs beyond that, e.g. a stock plugin version, raises the floor)."""
    if target.open_ended and not has_aot_plugins and target.version > JETPACK6:
        return LintTarget(JETPACK6, "no TensorRT here and no vitdeploy plugins in the graph: every TensorRT from 10.3",
                          open_ended=True)
    return target


def resolve_auto(onnx_path: Path, model) -> LintTarget:
    """`--trt auto`: the TensorRT installed here; else what the artifact's manifest says it was built for;
    else 10.9 for graphs with vitdeploy plugins and 10.3 (JetPack 6, the oldest target) for the rest."""
    from vitdeploy.machine import tensorrt_version

    here = tensorrt_version()
    if _parsed(here) is not None:
        return LintTarget(_parsed(here), f"the TensorRT installed here ({here})")
    from vitdeploy.artifact import manifest_beside

    m = manifest_beside(onnx_path)
    if m is not None:
        eng = m.get("engine") or {}
        if eng.get("tensorrt"):
            return LintTarget(parse_trt(str(eng["tensorrt"])), f"manifest.json: built with TensorRT {eng['tensorrt']}")
        lint = m.get("lint") or {}
        if lint.get("tensorrt"):
            return LintTarget(parse_trt(lint["tensorrt"]), f"manifest.json: built for TensorRT {lint['tensorrt']}")
        where = (m.get("target") or {}).get("target")
        if where in ("gpu", "jetson"):
            t = build_target(None, where, (eng.get("plugin_mode") or {}).get("mode", "plugin"))
            return LintTarget(t.version, f"manifest.json: {t.reason}", t.open_ended)
    if any(n.domain == "vitdeploy" for n in model.graph.node):
        return LintTarget(AOT_PLUGINS, f"vitdeploy plugin nodes need TensorRT >= {fmt(AOT_PLUGINS)}")
    return LintTarget(JETPACK6, "no TensorRT here and no manifest: the oldest target, JetPack 6's TensorRT 10.3")
