"""What a build directory hands to a server: the engine, or a plugin-free ONNX, with its real I/O.

An engine is served as it is; its I/O is read from the plan with TensorRT where TensorRT
is importable, else from the final ONNX it was built from (the manifest ties the two by
sha256). Where no engine was built, the server gets an ONNX for ONNX Runtime, which
cannot run vitdeploy's plugin nodes: the build's final graph when it has none, else the
plain export rewritten in the plugin-free (`native`) mode at the build's precision, and
for graphs whose native form still needs a TensorRT plugin (Deformable DETR's stock
deformable-attention plugin), the un-rewritten export. Making that graph is a build step
(`vitdeploy.pipeline.plugin_free`: verified against the FP32 export and cached in the build
directory like every step); this module only chooses, and builds nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vitdeploy.artifact import load_manifest, load_onnx
from vitdeploy.errors import VitdeployError


@dataclass
class Served:
    kind: str  # "engine" | "onnx"
    file: Path
    io: dict  # {"inputs": [...], "outputs": [...]}, each {"name", "shape", "dtype"} (symbolic dims as strings)
    io_source: str  # where the I/O was read
    batch: dict  # {"min", "opt", "max", "dynamic"}
    precision: str  # fp32 | fp16 | int8+fp16
    plugins: list[dict]
    form: str  # one line: which graph or plan this is and why
    manifest: dict
    build_dir: Path
    record: dict = field(default_factory=dict)  # the plugin-free step's result (verification figures)

    @property
    def alias(self) -> str | None:
        return (self.manifest.get("model") or {}).get("alias")

    @property
    def family(self) -> str | None:
        return (self.manifest.get("model") or {}).get("family")


@dataclass
class PluginFreeNeeded:
    """What `resolve` returns when the server needs a plugin-free graph the build has not made yet."""

    build_dir: Path
    manifest: dict
    reason: str  # why ONNX is served: "no engine was built" | "--platform onnx"


def load_build(build_dir: Path) -> dict:
    if not build_dir.is_dir():
        raise VitdeployError(f"build directory {build_dir} does not exist", "pass the -o directory of 'vitdeploy build'")
    manifest = load_manifest(build_dir)
    if not (manifest.get("files") or {}).get("onnx"):
        raise VitdeployError(f"the manifest in {build_dir} lists no ONNX graph", "point at a directory written by 'vitdeploy build'")
    return manifest


def engine_file(build_dir: Path, manifest: dict) -> Path | None:
    rel = ((manifest.get("files") or {}).get("engine") or {}).get("path")
    return build_dir / rel if rel and (build_dir / rel).is_file() else None


def no_engine_reason(manifest: dict) -> str:
    return (manifest.get("engine") or {}).get("skipped") or "the build records no engine"


def batch_of(manifest: dict, io: dict) -> dict:
    """The batch range: the engine profile's (first input), else the build's, else the graph's static batch."""
    profiles = (manifest.get("engine") or {}).get("profiles") or []
    first = io["inputs"][0]["name"] if io["inputs"] else None
    if profiles and first in profiles[0]:
        p = profiles[0][first]
        lo, opt, hi = p["min"][0], p["opt"][0], p["max"][0]
        return {"min": lo, "opt": opt, "max": hi, "dynamic": not lo == opt == hi}
    dim = io["inputs"][0]["shape"][0] if io["inputs"] and io["inputs"][0]["shape"] else 1
    if isinstance(dim, int) and dim > 0:
        return {"min": dim, "opt": dim, "max": dim, "dynamic": False}
    b = manifest.get("batch") or {}
    if b.get("max"):
        return {"min": int(b["min"]), "opt": int(b["opt"]), "max": int(b["max"]), "dynamic": True}
    raise VitdeployError("the graph has a symbolic batch but the manifest records no batch range",
                         "rebuild with --dynamic-batch MIN:OPT:MAX")


def calibration_cache(build_dir: Path, manifest: dict) -> Path | None:
    """The build's INT8 calibration cache (JSON ranges), where one was written."""
    rel = ((manifest.get("files") or {}).get("calibration_cache") or {}).get("path")
    for p in ([build_dir / rel] if rel else []) + [build_dir / "calibration_cache.json"]:
        if p.is_file():
            return p
    return None


def precision_of(manifest: dict) -> str:
    return ((manifest.get("precision") or {}).get("applied") or "fp32").lower()


def resolve(build_dir: Path, platform: str = "auto", manifest: dict | None = None) -> Served | PluginFreeNeeded:
    """The artifact to serve from `build_dir`: "auto" (engine if built, else ONNX), "tensorrt" or "onnx".

    Where the final graph has plugin nodes and no engine is served, a plugin-free graph has to be
    made first: that is a build step (`vitdeploy.pipeline.plugin_free`), so this says so instead."""
    from vitdeploy.onnxgraph import plugin_nodes

    manifest = manifest or load_build(build_dir)
    plan = engine_file(build_dir, manifest)
    if platform == "tensorrt" and plan is None:
        raise VitdeployError(f"{build_dir} has no engine ({no_engine_reason(manifest)})",
                             "build it on a machine with TensorRT, or drop --platform to package the plugin-free ONNX")
    final = build_dir / manifest["files"]["onnx"]["path"]
    if plan is not None and platform in ("auto", "tensorrt"):
        from vitdeploy.deploy.manifest_check import verify_plan_file

        engine = dict(manifest.get("engine") or {})
        engine.setdefault("plan", manifest["files"]["engine"])
        verify_plan_file(plan, engine)  # a truncated copy is refused before it reaches a server
        io, source = plan_io(plan)
        if io is None:
            from vitdeploy.onnxgraph import io_signature

            io = io_signature(final)
            source = f"{final.name}, the graph the engine was built from ({source})"
        plugins = list(manifest.get("plugins") or [])
        return Served("engine", plan, io, source, batch_of(manifest, io), precision_of(manifest), plugins,
                      f"the TensorRT engine {plan.name} (TensorRT {(manifest.get('engine') or {}).get('tensorrt')})",
                      manifest, build_dir)
    graph = load_onnx(final, load_external_data=False)
    if not plugin_nodes(graph):
        from vitdeploy.onnxgraph import io_signature

        io = io_signature(final)
        why = "no engine was built" if plan is None else "--platform onnx"
        return Served("onnx", final, io, final.name, batch_of(manifest, io), precision_of(manifest), [],
                      f"{final.name}, the build's final graph, which has no plugin nodes ({why})", manifest, build_dir)
    return PluginFreeNeeded(build_dir, manifest, reason="no engine was built" if plan is None else "--platform onnx")


def plan_io(plan: Path) -> tuple[dict | None, str]:
    """The plan's I/O as TensorRT reports it, or (None, why not) where TensorRT or a GPU is missing."""
    try:
        import numpy as np
        import tensorrt as trt
    except Exception as e:  # absent, or a registry stub that raises at import
        return None, f"TensorRT is not importable here: {type(e).__name__}"
    from vitdeploy.tensorrt_session import load_plan

    try:
        _runtime, engine = load_plan(trt, plan)  # the process's one logger (a temporary one would dangle)
    except Exception as e:
        return None, f"TensorRT could not deserialize the plan here: {str(e).splitlines()[0][:120]}"
    if engine is None:
        return None, "TensorRT could not deserialize the plan here"
    io: dict = {"inputs": [], "outputs": []}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        dims = [int(d) if d >= 0 else "batch" for d in engine.get_tensor_shape(name)]
        entry = {"name": name, "shape": dims, "dtype": np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name}
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        io["inputs" if is_input else "outputs"].append(entry)
    return io, f"{plan.name}, read with TensorRT {trt.__version__}"


def rebuild_command(manifest: dict, build_dir: Path, dynamic: str = "1:8:32") -> str:
    """The build command that makes the same model with a dynamic batch (what a static-batch package lacks)."""
    import shlex

    model = manifest.get("model") or {}
    src = manifest.get("source_onnx") or {}
    applied = ((manifest.get("precision") or {}).get("applied") or "fp32")
    tail = (["--int8", "--calib-data", "CALIB_IMAGES/"] if applied.startswith("int8") else
            ["--fp16"] if "fp16" in applied else []) + ["--dynamic-batch", dynamic, "-o", str(build_dir)]
    if src.get("path") or not model.get("alias"):  # a given ONNX: its batch axis is the exporter's to make dynamic
        name = Path(src.get("path") or "MODEL.onnx").name
        return ("re-export " + name + " with a dynamic batch axis, then "
                + shlex.join(["vitdeploy", "build", "--onnx", name, *tail]))
    parts = ["vitdeploy", "build", "--model", model["alias"]]
    size = (manifest.get("preprocessing") or {}).get("input_size")
    try:
        from vitdeploy.models import get_info

        native = get_info(model["alias"]).input_size
    except VitdeployError:
        native = None
    if size and native and tuple(int(v) for v in size[1:]) != tuple(native):
        parts += ["--img-size", f"{size[1]}x{size[2]}"]
    if model.get("reduced"):
        parts.append("--reduced")
    if model.get("weights") == "pretrained":
        parts.append("--pretrained")
    elif model.get("weights") == "checkpoint":
        parts += ["--checkpoint", str((model.get("checkpoint") or {}).get("path") or "CHECKPOINT")]
    return shlex.join(parts + tail)
