"""The plugin-free step: what `vitdeploy package` serves where no engine was built and the build's graph has plugins.

ONNX Runtime servers cannot run vitdeploy's plugin nodes, so the plain export is rewritten in
the plugin-free (`native`) mode at the build's precision; a pass whose native form still needs
a TensorRT plugin (Deformable DETR's stock deformable-attention plugin) leaves its subgraphs as
exported. An INT8 build's graph is INT8, with the build's calibration carried over by weight
(`calibration/carry.py`). The graph is verified against the FP32 export and cached in the build
directory like every build step (`StepCache.run`). Which file is served is `deploy.serving.served.resolve`'s
choice; `served_artifact` runs this step when that choice needs it.
"""
from __future__ import annotations

from pathlib import Path

from vitdeploy.artifact import atomic_save_onnx, load_onnx, sha256_file
from vitdeploy.deploy.serving.served import PluginFreeNeeded, Served, batch_of, calibration_cache, precision_of, resolve
from vitdeploy.errors import VerificationError, VitdeployError
from vitdeploy.onnxgraph import plugin_nodes
from vitdeploy.pipeline.cache import StepCache

PLUGIN_FREE_STEP = "plugin_free"
VERIFY_IMAGES = 4  # seeded random images the plugin-free graph is compared on
MIN_COSINE = 0.99  # FP16 of a verified rewrite stays far above this; a broken graph falls far below


def served_artifact(build_dir: Path, platform: str = "auto", manifest: dict | None = None) -> Served:
    """What to serve from `build_dir` (see `deploy.serving.served.resolve`), making the plugin-free graph if needed."""
    served = resolve(build_dir, platform, manifest)
    if isinstance(served, PluginFreeNeeded):
        served = step_plugin_free(served.build_dir, served.manifest, served.reason)
    return served


def _fallback_precision(applied: str, calibration: Path | None = None) -> tuple[str, str | None]:
    """The precision of the plugin-free graph: the build's, INT8 included where its calibration cache is there
    to carry (`calibration/carry.py`); an INT8 build without one is served FP16, and says so."""
    if applied.startswith("int8"):
        if calibration is not None:
            return "int8+fp16", None
        return "fp16", ("the build is INT8 but its calibration cache is missing, so the plugin-free graph is FP16 "
                        "(rebuild with --int8 to keep calibration_cache.json)")
    return ("fp16" if "fp16" in applied else "fp32"), None


def step_plugin_free(build_dir: Path, manifest: dict, reason: str) -> Served:
    """The plain export, rewritten plugin-free where that removes every plugin, at the build's precision; cached."""
    from vitdeploy.console import stage
    from vitdeploy.onnxgraph import io_signature

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
    dest = build_dir / f"model.plugin-free.{target.split('+')[0]}.onnx"
    inputs = {"onnx": sha256_file(exported), "passes": passes, "precision": target, "verify_images": VERIFY_IMAGES}
    if target.startswith("int8"):
        inputs["calibration"] = sha256_file(calibration)

    def compute():
        if target.startswith("int8"):
            model, result = _make_plugin_free_int8(exported, passes, build_dir, manifest, calibration)
        else:
            model, result = _make_plugin_free(exported, passes, target)
        atomic_save_onnx(model, dest)
        result["verified"] = _verify(exported, dest)
        if result["verified"]["cosine_min"] < MIN_COSINE:
            dest.unlink(missing_ok=True)
            raise VerificationError(
                f"the plugin-free graph differs from the FP32 export: cosine min {result['verified']['cosine_min']:.5f} "
                f"(needs >= {MIN_COSINE})", "package the engine with --platform tensorrt on the target instead")
        if note:
            result["note"] = note
        return {"onnx": dest}, result

    with stage("plugin-free") as st:
        run = StepCache(build_dir).run(PLUGIN_FREE_STEP, inputs, compute)
        result = run.result
        dest = run.output("onnx")
        v = result["verified"]
        st.detail = (f"{dest.name}: {result['form']}; vs FP32 export cosine min {v['cosine_min']:.5f}, "
                     f"max-abs {v['max_abs_error']:.2e}{' (cached)' if run.cached else ''}")
    io = io_signature(dest)
    what = "INT8 (Q/DQ) + FP16" if target.startswith("int8") else target.upper()
    form = f"{dest.name}, a plugin-free {what} ONNX ({result['form']}; {reason})"
    return Served("onnx", dest, io, dest.name, batch_of(manifest, io), target, [], form, manifest, build_dir, result)


def _passes(manifest: dict) -> list[str]:
    from vitdeploy.models import get_info

    model = manifest.get("model") or {}
    alias = model.get("alias") if model.get("route", "alias") == "alias" else None  # any other model: every pass
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

    from vitdeploy.console import console
    from vitdeploy.deploy.rewrite import load_pass
    from vitdeploy.pipeline.steps import rewrite_verified

    model = onnx.load(str(exported))
    from vitdeploy.deploy.normalize import find_fp64_islands, normalize_fp64

    if find_fp64_islands(model):  # a given TorchScript export's FP64 grids: ONNX Runtime servers cannot run them
        model, _ = normalize_fp64(model)
    plain, needs_plugin = [], []
    for name in passes:
        rw = load_pass(name)
        (plain if "native" in rw.modes and not rw.extra_opsets("native") else needs_plugin).append(name)
    form = "the un-rewritten export"
    if plain:
        rewritten, report, refusals = rewrite_verified(model, plain, "native", None,
                                                       "package with --platform tensorrt on the target instead")
        for why in refusals:  # as the build's rewrite step says them
            console.print(f"  [yellow]{why}[/]")
        replaced = sum(p["replaced"] for p in report["passes"])
        if replaced:
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
    from vitdeploy.calibration.data import CalibrationData
    from vitdeploy.onnxgraph import model_input
    from vitdeploy.parity import cosine, random_images

    _, shape = model_input(load_onnx(reference, load_external_data=False))
    n = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else VERIFY_IMAGES  # a static graph's own batch
    total = -(-VERIFY_IMAGES // n) * n
    data = CalibrationData(random_images(total, (int(shape[-2]), int(shape[-1])), seed=4321), source="random")
    from vitdeploy.deploy.normalize import find_fp64_islands, normalize_fp64

    ref_model = load_onnx(reference)
    if find_fp64_islands(ref_model):  # FP64 grids: compared as the normalised export, as the rewrite was verified
        ref_model, _ = normalize_fp64(ref_model)
    (ref, cand), _ = run_models_all([ref_model, candidate], data, batch=n)
    cos = min(cosine(r[i], c[i]) for r, c in zip(ref, cand) for i in range(len(r)))
    err = max(float(np.abs(r.astype(np.float64) - c).max()) for r, c in zip(ref, cand))
    return {"images": total, "outputs": len(ref), "cosine_min": cos, "max_abs_error": err,
            "data": "seeded random images"}
