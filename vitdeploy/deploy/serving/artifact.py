"""What a build directory hands to a server: the engine, or a plugin-free ONNX, with its real I/O.

An engine is served as it is; its I/O is read from the plan with TensorRT where TensorRT
is importable, else from the final ONNX it was built from (the manifest ties the two by
sha256). Where no engine was built, the server gets an ONNX for ONNX Runtime, which
cannot run vitdeploy's plugin nodes: the build's final graph when it has none, else the
plain export rewritten in the plugin-free (`native`) mode at the build's precision, and
for graphs whose native form still needs a TensorRT plugin (Deformable DETR's stock
deformable-attention plugin), the un-rewritten export. That graph is verified against
the FP32 export and cached in the build directory like every build step.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from vitdeploy.deploy.artifacts import load_manifest, load_onnx, sha256_file
from vitdeploy.errors import VerificationError, VitdeployError

PLUGIN_FREE_STEP = "plugin_free"
VERIFY_IMAGES = 4  # seeded random images the plugin-free graph is compared on
MIN_COSINE = 0.99  # FP16 of a verified rewrite stays far above this; a broken graph falls far below


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


def resolve(build_dir: Path, platform: str = "auto", manifest: dict | None = None) -> Served:
    """The artifact to serve from `build_dir`: "auto" (engine if built, else ONNX), "tensorrt" or "onnx"."""
    from vitdeploy.pipeline.steps import plugin_nodes

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
            from vitdeploy.deploy.export import io_signature

            io = io_signature(final)
            source = f"{final.name}, the graph the engine was built from ({source})"
        plugins = list(manifest.get("plugins") or [])
        return Served("engine", plan, io, source, batch_of(manifest, io), precision_of(manifest), plugins,
                      f"the TensorRT engine {plan.name} (TensorRT {(manifest.get('engine') or {}).get('tensorrt')})",
                      manifest, build_dir)
    graph = load_onnx(final, load_external_data=False)
    if not plugin_nodes(graph):
        from vitdeploy.deploy.export import io_signature

        io = io_signature(final)
        why = "no engine was built" if plan is None else "--platform onnx"
        return Served("onnx", final, io, final.name, batch_of(manifest, io), precision_of(manifest), [],
                      f"{final.name}, the build's final graph, which has no plugin nodes ({why})", manifest, build_dir)
    return plugin_free(build_dir, manifest, reason="no engine was built" if plan is None else "--platform onnx")


def plan_io(plan: Path) -> tuple[dict | None, str]:
    """The plan's I/O as TensorRT reports it, or (None, why not) where TensorRT or a GPU is missing."""
    try:
        import numpy as np
        import tensorrt as trt
    except Exception as e:  # absent, or a registry stub that raises at import
        return None, f"TensorRT is not importable here: {type(e).__name__}"
    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")  # stock plugins (MultiscaleDeformableAttnPlugin_TRT)
    try:
        engine = trt.Runtime(logger).deserialize_cuda_engine(plan.read_bytes())
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


def _fallback_precision(applied: str, calibration: Path | None = None) -> tuple[str, str | None]:
    """The precision of the plugin-free graph: the build's, INT8 included where its calibration cache is there
    to carry (`calibration/carry.py`); an INT8 build without one is served FP16, and says so."""
    if applied.startswith("int8"):
        if calibration is not None:
            return "int8+fp16", None
        return "fp16", ("the build is INT8 but its calibration cache is missing, so the plugin-free graph is FP16 "
                        "(rebuild with --int8 to keep calibration_cache.json)")
    return ("fp16" if "fp16" in applied else "fp32"), None


def plugin_free(build_dir: Path, manifest: dict, reason: str) -> Served:
    """The plain export, rewritten plugin-free where that removes every plugin, at the build's precision; cached."""

    from vitdeploy.console import stage
    from vitdeploy.deploy.artifacts import atomic_save_onnx
    from vitdeploy.deploy.export import io_signature
    from vitdeploy.pipeline.cache import StepCache
    from vitdeploy.pipeline.steps import plugin_nodes

    files = manifest.get("files") or {}
    final = build_dir / files["onnx"]["path"]
    exported_rel = (files.get("onnx_exported") or {}).get("path")
    exported = build_dir / exported_rel if exported_rel else None
    if exported is None or not exported.is_file() or plugin_nodes(load_onnx(exported, load_external_data=False)):
        raise VitdeployError(f"{final.name} has plugin nodes, which ONNX Runtime servers cannot run, and {build_dir} "
                             "holds no plain export to make a plugin-free graph from",
                             "rebuild with 'vitdeploy build --model ... --plugins off', or build the engine on the target")
    calibration = calibration_cache(build_dir, manifest) if precision_of(manifest).startswith("int8") else None
    target, note = _fallback_precision(precision_of(manifest), calibration)
    passes = _passes(manifest)
    cache = StepCache(build_dir)
    inputs = {"onnx": sha256_file(exported), "passes": passes, "precision": target, "verify_images": VERIFY_IMAGES}
    if target.startswith("int8"):
        inputs["calibration"] = sha256_file(calibration)
    key = cache.key(PLUGIN_FREE_STEP, inputs)
    with stage("plugin-free") as st:
        rec = cache.lookup(PLUGIN_FREE_STEP, key)
        if rec is None:
            started = time.perf_counter()
            if target.startswith("int8"):
                model, result = _make_plugin_free_int8(exported, passes, build_dir, manifest, calibration)
            else:
                model, result = _make_plugin_free(exported, passes, target)
            dest = build_dir / f"model.plugin-free.{target.split('+')[0]}.onnx"
            atomic_save_onnx(model, dest)
            result["verified"] = _verify(exported, dest)
            if result["verified"]["cosine_min"] < MIN_COSINE:
                dest.unlink(missing_ok=True)
                raise VerificationError(
                    f"the plugin-free graph differs from the FP32 export: cosine min {result['verified']['cosine_min']:.5f} "
                    f"(needs >= {MIN_COSINE})", "package the engine with --platform tensorrt on the target instead")
            if note:
                result["note"] = note
            rec = cache.store(PLUGIN_FREE_STEP, key, {"onnx": dest}, result, time.perf_counter() - started)
            cached = ""
        else:
            cached = " (cached)"
        result = rec["result"]
        dest = build_dir / rec["outputs"]["onnx"]["path"]
        v = result["verified"]
        st.detail = (f"{dest.name}: {result['form']}; vs FP32 export cosine min {v['cosine_min']:.5f}, "
                     f"max-abs {v['max_abs_error']:.2e}{cached}")
    io = io_signature(dest)
    what = "INT8 (Q/DQ) + FP16" if target.startswith("int8") else target.upper()
    form = f"{dest.name}, a plugin-free {what} ONNX ({result['form']}; {reason})"
    return Served("onnx", dest, io, dest.name, batch_of(manifest, io), target, [], form, manifest, build_dir, result)


def _passes(manifest: dict) -> list[str]:
    from vitdeploy.models import get_info

    alias = (manifest.get("model") or {}).get("alias")
    if alias:
        try:
            return list(get_info(alias).passes)
        except VitdeployError:
            pass
    passes = [p.get("pass") for p in ((manifest.get("rewrite") or {}).get("passes") or []) if p.get("pass")]
    if passes:
        return passes
    from vitdeploy.deploy.rewrite import PASSES

    return list(PASSES)


def _make_plugin_free(exported: Path, passes: list[str], precision: str):
    """(model, record): the passes whose native form is plain ONNX, run in native mode; the subgraphs of a
    pass whose native form still needs a TensorRT plugin (its emission declares a custom domain) stay as
    exported. Then the precision."""
    import onnx

    from vitdeploy.deploy.rewrite import load_pass
    from vitdeploy.deploy.rewrite.base import run_passes
    from vitdeploy.deploy.rewrite_flow import check_whole_graph, installed_passes
    from vitdeploy.pipeline.steps import plugin_nodes

    model = onnx.load(str(exported))
    have = [p for p in passes if p in installed_passes()]
    plain, needs_plugin = [], []
    for name in have:
        rw = load_pass(name)
        (plain if "native" in rw.modes and not rw.extra_opsets("native") else needs_plugin).append(name)
    form = "the un-rewritten export"
    if plain:
        rewritten, report = run_passes(model, plain, "native")
        replaced = sum(p["replaced"] for p in report["passes"])
        if replaced:
            check_whole_graph(report, "package with --platform tensorrt on the target instead")
            model, form = rewritten, f"{'+'.join(plain)} rewritten in native mode, {replaced} subgraphs"
    if needs_plugin:
        form += f"; {'+'.join(needs_plugin)} left as exported (its native form still uses a TensorRT plugin)"
    left = plugin_nodes(model)
    if left:  # a pass that declared no custom domain emitted one anyway: never serve it to ONNX Runtime
        raise VitdeployError(f"the plugin-free graph still has {', '.join(p['op'] for p in left)} nodes", "report the model")
    record = {"form": form, "precision": precision}
    if precision == "fp16":
        from vitdeploy.calibration.precision import convert_fp16

        model, summary = convert_fp16(model, keep_io_fp32=True)
        record["fp16"] = {"casts": summary["casts"], "io": summary["io"]}
    return model, record


def _make_plugin_free_int8(exported: Path, passes: list[str], build_dir: Path, manifest: dict, calibration: Path):
    """The plugin-free graph in FP32, then Q/DQ with the build's calibration carried over (`calibration/carry.py`)."""
    import tempfile

    from vitdeploy.calibration.carry import quantize_like_build
    from vitdeploy.deploy.artifacts import atomic_save_onnx

    model, record = _make_plugin_free(exported, passes, "fp32")
    with tempfile.TemporaryDirectory(prefix="vitdeploy-pf-") as tmp:
        fp32 = Path(tmp) / "model.plugin-free.fp32.onnx"
        atomic_save_onnx(model, fp32)
        qdq, carried = quantize_like_build(fp32, build_dir, manifest, calibration)
    cal = carried["calibration"]
    record.update(precision="int8+fp16", int8=carried)
    record["form"] += (f"; INT8 with the build's calibration ({cal['cache']}, {cal['method']} on {cal['images']} images, "
                       f"measured on {cal['measured_on']}): {carried['layers_int8']} Linear/Conv layers INT8")
    if carried["no_range"]:
        record["form"] += f", {len(carried['no_range'])} without a carried range kept FP16"
    return qdq, record


def _verify(reference: Path, candidate: Path) -> dict:
    """The plugin-free graph against the FP32 export on seeded random images (ONNX Runtime, CPU).

    Raw outputs, every one of them, per image: the served graph must compute what the build's
    graph computes, whatever the task (logits, or a detector's logits and boxes)."""
    import numpy as np

    from vitdeploy.calibration.accuracy import run_models_all
    from vitdeploy.calibration.data import CalibrationData, model_input
    from vitdeploy.deploy.inputs import random_images
    from vitdeploy.deploy.parity import cosine

    _, shape = model_input(load_onnx(reference, load_external_data=False))
    n = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else VERIFY_IMAGES  # a static graph's own batch
    total = -(-VERIFY_IMAGES // n) * n
    data = CalibrationData(random_images(total, (int(shape[-2]), int(shape[-1])), seed=4321), source="random")
    (ref, cand), _ = run_models_all([reference, candidate], data, batch=n)
    cos = min(cosine(r[i], c[i]) for r, c in zip(ref, cand) for i in range(len(r)))
    err = max(float(np.abs(r.astype(np.float64) - c).max()) for r, c in zip(ref, cand))
    return {"images": total, "outputs": len(ref), "cosine_min": cos, "max_abs_error": err,
            "data": "seeded random images"}


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
