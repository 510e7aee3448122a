"""The build steps: each reads its inputs and runs through the step cache (`StepCache.run`), writing one artifact.

The single-stage commands (`export`, `rewrite`, `calibrate`; `vitdeploy.pipeline.export`, `.rewrite`,
`.calibrate`) call the same stage functions these steps call; `package`'s plugin-free graph is a
step too (`vitdeploy.pipeline.plugin_free`).
"""
from __future__ import annotations

import hashlib
import shutil
import warnings
from pathlib import Path

from vitdeploy.artifact import MANIFEST_NAME, atomic_save_onnx, load_onnx, publish, sha256_file
from vitdeploy.console import console, stage
from vitdeploy.deploy.export import BatchSpec
from vitdeploy.errors import VitdeployError
from vitdeploy.onnxgraph import plugin_nodes
from vitdeploy.onnx_files import sha256_onnx
from vitdeploy.pipeline.cache import StepCache, file_entry, staged, staged_onnx, tmp_path
from vitdeploy.pipeline.options import BuildOptions

PLAN_NAME = "model.plan"
CALIBRATION_CACHE_NAME = "calibration_cache.json"  # JSON tensor ranges, as 'calibrate' writes (not TensorRT's binary cache)

def tool_versions() -> dict:
    """Installed versions from package metadata (no imports: a cached rerun stays fast)."""
    from vitdeploy.machine import tool_versions as versions

    return versions(("torch", "onnx", "onnxscript", "onnxruntime", "timm", "transformers", "polygraphy", "tensorrt"))


def step_export(opts: BuildOptions, cache: StepCache) -> tuple[Path, dict]:
    """Model mode: export + parity (vitdeploy.deploy.export). --onnx mode: take the file as given."""
    from vitdeploy.deploy.export import ExportOptions, export_verified_isolated, summarize_parity
    from vitdeploy.models import REGISTRY, check_input_size
    from vitdeploy.pipeline.options import model_info
    from vitdeploy.sources import fingerprint

    out = opts.out_dir
    with stage("export") as st:
        if opts.onnx is not None:
            return _import_onnx(opts, st)
        info = model_info(opts)
        if opts.img_size:
            check_input_size(info, opts.img_size)
        batch = opts.batch or BatchSpec()
        inputs = {
            "alias": info.alias, "img_size": opts.img_size, "batch": batch.to_dict(), "opset": opts.opset,
            "exporter": opts.exporter, "pretrained": opts.pretrained, "small": opts.small,
            "checkpoint": sha256_file(opts.checkpoint) if opts.checkpoint else None,
            "versions": {k: v for k, v in tool_versions().items() if k in ("torch", "onnx", "onnxscript", "timm", "transformers")},
        }
        if info is not REGISTRY.get(info.alias):  # not a plain alias: what it is built from (absent for aliases,
            inputs["model"] = fingerprint(info)  # so their earlier cache keys stay valid)
        if not opts.opset_pinned:
            inputs["opset_fallback"] = True
        dest = out / "model.onnx"
        eo = ExportOptions(img_size=opts.img_size, batch=batch, opset=opts.opset, checkpoint=opts.checkpoint,
                           pretrained=opts.pretrained, exporter=opts.exporter, small=opts.small,
                           opset_pinned=opts.opset_pinned)

        def compute():
            _, fields, _ = staged_onnx(out, dest, lambda tmp: export_verified_isolated(info, tmp, eo))
            return {"onnx": dest}, fields

        run = cache.run("export", inputs, compute)
        exp = run.result["export"]
        st.detail = ("model.onnx (cached)" if run.cached else
                     f"model.onnx (opset {exp['opset']}, {exp['exporter']} exporter), parity vs PyTorch: {summarize_parity(exp['parity'])}")
        if exp.get("normalized") and not run.cached:
            st.detail += f"; {exp['normalized']['summary']}"
        if exp.get("fallback_reason") and not run.cached:
            from rich.markup import escape

            console.print(f"  [yellow]export retried:[/] {escape(exp['fallback_reason'])}")
        run.result["steps"] = {"export": run.key}
        return dest, run.result


def _import_onnx(opts: BuildOptions, st) -> tuple[Path, dict]:
    """--onnx: use the file (copied into DIR unless already there) and inherit its manifest."""
    from vitdeploy.artifact import load_onnx, manifest_beside
    from vitdeploy.onnxgraph import io_signature

    src = opts.onnx.resolve()
    if not src.is_file():
        raise VitdeployError(f"ONNX file {opts.onnx} does not exist", "check the --onnx path")
    from vitdeploy.onnx_files import check_data_files, copy_onnx

    check_data_files(src, load_onnx(src, hint="pass an .onnx file", load_external_data=False))  # one line if missing
    dest = src if src.parent == opts.out_dir.resolve() else opts.out_dir / src.name
    if dest != src:
        copy_onnx(src, dest)  # with its external data files
    fields: dict = {}
    if (src.parent / MANIFEST_NAME).is_file():
        fields = manifest_beside(src) or {}
        inherited_files = {k: v for k, v in (fields.get("files") or {}).items() if k not in ("engine", "onnx")}
        fields = {k: v for k, v in fields.items() if k not in ("engine", "steps", "files", "created", "build")}
        if inherited_files and dest == src:  # paths are relative to this directory
            fields["inherited_files"] = inherited_files
        exported = (inherited_files.get("onnx_exported") or {}).get("path")
        if exported and (src.parent / exported).is_file() and (src.parent / exported) != src:
            fields["reference_onnx"] = str(src.parent / exported)  # the FP32 export accuracy is measured against
    fields.setdefault("export", {}).update(io_signature(dest))
    fields["source_onnx"] = {"path": str(src), "sha256": sha256_onnx(dest)}
    st.detail = f"{dest.name} (given with --onnx{', manifest inherited' if 'model' in fields else ''})"
    fields["steps"] = {}
    return dest, fields


def rewrite_verified(model, passes: list[str], mode: str, options: dict | None, hint: str):
    """The rewrite stage, as the build and the `rewrite` command run it: the passes, each candidate verified,
    then the whole graph compared with the input (VerificationError, exit 3, when it differs).

    Returns (rewritten model, report, refusals): the warning of every candidate left untouched.
    """
    from vitdeploy.deploy.rewrite.driver import check_whole_graph, run_passes

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rewritten, report = run_passes(model, passes, mode, options=options)
    check_whole_graph(report, hint)
    return rewritten, report, [str(w.message) for w in caught if ": left " in str(w.message)]


def step_rewrite(src: Path, passes: list[str], mode: str, opts: BuildOptions, cache: StepCache,
                 inherited: dict | None = None) -> tuple[Path, dict | None]:
    """`inherited`: the rewrite record of the manifest that came with a given ONNX (--onnx)."""
    import onnx

    with stage("rewrite") as st:
        if opts.onnx is not None:
            done = already_rewritten(src, inherited)
            if done:
                st.skip(f"{src.name} is already rewritten ({done}): kept as given")
                return src, None
        if not passes:
            st.skip("no rewrite passes apply")
            return src, None
        from vitdeploy.machine import stock_msda_version, tensorrt_version

        stock = stock_msda_version(tensorrt_version())  # the stock MSDA plugin version this TensorRT has
        pass_options = {"msda_impl": opts.msda_impl, "msda_stock_version": stock.version}
        dest = opts.out_dir / f"{src.name.removesuffix('.onnx')}.rewritten.onnx"

        def compute():
            model, report, refusals = rewrite_verified(load_onnx(src), passes, mode, pass_options,
                                                       "rerun with --plugins off, or report the model")
            for why in refusals:
                console.print(f"  [yellow]{why}[/]")
            replaced = sum(p["replaced"] for p in report["passes"])
            report["plugins"] = plugin_nodes(model)
            stock_nodes = {p["op"]: p["version"] for p in report["plugins"] if p["kind"] == "TensorRT stock"}
            if "MultiscaleDeformableAttnPlugin_TRT" in stock_nodes:  # which version, and why (manifest)
                why = stock.reason if mode == "plugin" else "native mode: version 1, which TensorRT without Python plugins ships"
                report["stock_plugins"] = {"MultiscaleDeformableAttnPlugin_TRT": {
                    "version": stock_nodes["MultiscaleDeformableAttnPlugin_TRT"], "reason": why}}
            if replaced:
                atomic_save_onnx(model, dest)
            report["output"] = dest.name if replaced else None
            return ({"onnx": dest} if replaced else {}), report

        run = cache.run("rewrite", {"onnx": sha256_onnx(src), "passes": passes, "mode": mode, "options": pass_options}, compute)
        report = run.result
        from rich.markup import escape

        from vitdeploy.deploy.rewrite.census import lines

        for line in lines(report.get("softmax") or []):  # every Softmax left, named (also in the manifest)
            console.print(f"  [dim]{escape(line)}[/]")
        found = sum(p["found"] for p in report["passes"])
        replaced = sum(p["replaced"] for p in report["passes"])
        what = f"{'+'.join(passes)} ({mode})"
        if not run.cached:
            st.detail = (f"{what}: {replaced}/{found} subgraphs replaced" if found else
                         f"{what}: no matching subgraph in {src.name}")
        elif report.get("output"):  # nothing was replaced in this run: say what was reused, and what it holds
            st.detail = f"{report['output']} (cached): {what}, {replaced}/{found} subgraphs replaced when it was built"
        else:
            st.detail = f"{what}: no matching subgraph in {src.name} (cached)"
        report["step_key"] = run.key
        return (dest if report.get("output") else src), report


def already_rewritten(path: Path, inherited: dict | None) -> str | None:
    """Why a given graph needs no rewrite: its plugin nodes, or its manifest's record of a native rewrite."""
    import onnx

    nodes = plugin_nodes(onnx.load(str(path), load_external_data=False))
    if nodes:
        return ", ".join(f"{p['count']} {p['op']}" for p in nodes) + " plugin nodes"
    passes = (inherited or {}).get("passes") or []
    replaced = sum(p.get("replaced", 0) for p in passes)
    if replaced:
        return f"{replaced} subgraphs rewritten in {(inherited or {}).get('mode', 'native')} mode, per its manifest"
    return None


def _calib_fingerprint(path: Path) -> dict:
    p = Path(path)
    if p.is_file():
        return {"file": sha256_file(p)}
    if not p.is_dir():
        raise VitdeployError(f"calibration data {p} does not exist", "pass a folder of images or a .npz")
    h = hashlib.sha256()
    for f in sorted(x for x in p.rglob("*") if x.is_file()):
        h.update(str(f.relative_to(p)).encode())
        h.update(sha256_file(f).encode())
    return {"dir": h.hexdigest()}


def _has_reduced_precision(path: Path) -> bool:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    low = {onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.INT8}
    return any(i.data_type in low for i in model.graph.initializer) or any(
        n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def step_precision(src: Path, fields: dict, opts: BuildOptions, cache: StepCache) -> tuple[Path, dict | None, Path | None]:
    """FP16 (explicit casts) and/or INT8 (Q/DQ + calibration cache), from vitdeploy.calibration."""
    import onnx

    wanted = "int8+fp16" if opts.int8 else "fp16" if opts.fp16 else None  # INT8 graphs keep the rest in FP16
    with stage("precision") as st:
        if _has_reduced_precision(src):
            st.skip(f"{src.name} already has FP16/INT8 tensors: kept as given")
            return src, None, None
        if wanted is None:
            st.skip("FP32 (add --fp16 or --int8)")
            return src, None, None
        inputs = {"onnx": sha256_onnx(src), "precision": wanted}
        if opts.int8:
            inputs.update(calib=_calib_fingerprint(opts.calib_data), method=opts.calib_method, images=opts.calib_images)
            if opts.int8_exclude or opts.quantize_first_last:  # absent by default: earlier cache keys stay valid
                inputs.update(exclude=list(opts.int8_exclude), first_last=opts.quantize_first_last)
        stem = src.name.removesuffix(".onnx").removesuffix(".rewritten")
        dest = opts.out_dir / f"{stem}.{'int8' if opts.int8 else 'fp16'}.onnx"
        cache_file = opts.out_dir / CALIBRATION_CACHE_NAME

        def compute():
            outputs: dict[str, Path] = {"onnx": dest}
            summary: dict = {"requested": wanted, "applied": wanted}
            if opts.int8:
                from vitdeploy.calibration.data import load_data
                from vitdeploy.calibration.quantization import quantize_int8

                calib = load_data(opts.calib_data, fields.get("preprocessing"), num_images=opts.calib_images)
                from vitdeploy.onnxgraph import model_input

                _, shape = model_input(onnx.load(str(src), load_external_data=False))
                static = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
                model, calib_cache, qsummary = quantize_int8(src, calib, opts.calib_method, batch=static or 8,
                                                             exclude=list(opts.int8_exclude),
                                                             quantize_first_last=opts.quantize_first_last)
                summary["int8"] = qsummary
                if calib_cache:
                    from vitdeploy.calibration.cache import save_cache

                    save_cache(cache_file, calib_cache)
                    outputs["calibration_cache"] = cache_file
            else:  # quantize_int8 already keeps everything that is not INT8 in FP16
                from vitdeploy.calibration.precision import convert_fp16, convert_fp16_file
                from vitdeploy.onnx_files import data_files

                if data_files(src):  # weights in external data: streamed, one tensor at a time
                    summary["fp16"] = convert_fp16_file(src, dest, keep_io_fp32=True)
                    return outputs, summary
                model, summary["fp16"] = convert_fp16(load_onnx(src), keep_io_fp32=True)
            atomic_save_onnx(model, dest)
            return outputs, summary

        run = cache.run("precision", inputs, compute)
        summary = run.result
        if run.cached:
            st.detail = f"{wanted} -> {dest.name} (cached)"
        else:
            st.detail = f"{wanted} -> {dest.name}"
            tiny = [k for k, why in (summary.get("int8") or {}).get("excluded", {}).items() if "spans only" in why]
            if tiny:
                st.detail += f" ({len(tiny)} layer(s) kept FP16: input range too small for an FP16 INT8 scale)"
        summary["step_key"] = run.key
        return dest, summary, run.output("calibration_cache")


def step_accuracy(reference: Path, candidate: Path, fields: dict, opts: BuildOptions, cache: StepCache) -> dict | None:
    """The final graph against the exported FP32 graph on the same inputs (ONNX Runtime, CPU),
    through `vitdeploy.calibration.accuracy.compare_models` (a detection measure for detectors).

    Data, best first: --accuracy-data (held out), the calibration images (not held out: INT8
    ranges were fitted on them), else seeded random images (agreement on noise, not accuracy).
    The stage earns its ✔ only with real weights and agreement >= --min-agreement.
    """
    from vitdeploy.weights import from_manifest, is_random

    with stage("accuracy") as st:
        if candidate == reference and opts.onnx is not None:
            if fields.get("accuracy"):
                st.skip(f"kept the figures recorded when {candidate.name} was built")
                return None
            reference = fields.get("reference_onnx")
            if reference is None:
                st.skip(f"no FP32 export to compare {candidate.name} with (no manifest beside it names one)")
                return None
            reference = Path(reference)
        elif candidate == reference:
            st.skip("nothing changed the exported graph (no rewrite, FP32)")
            return None
        if opts.accuracy_data:
            source = {"held_out": _calib_fingerprint(opts.accuracy_data)}
        elif opts.calib_data:
            source = {"calib": _calib_fingerprint(opts.calib_data), "images": opts.calib_images}
        else:
            source = {"random": ACCURACY_IMAGES}
        run = cache.run("accuracy", {"reference": sha256_onnx(reference), "candidate": sha256_onnx(candidate),
                                     "data": source, "measure": ACCURACY_MEASURE},
                        lambda: ({}, compare_graphs(reference, candidate, fields, opts)))
        res = run.result
        weights = from_manifest(fields)
        res["weights"] = weights
        if res.get("task") == "detection":
            agreement = res["detection_agreement"]
            st.detail = (f"detection agreement {agreement:.1f}%, matched IoU {res['matched_iou_mean']:.4f}, "
                         f"score delta max {res['score_delta_max']:.2e}")
        elif res.get("task") == "segmentation":
            agreement = res["segmentation_agreement"]
            st.detail = (f"segmentation agreement {agreement:.1f}% of pixels, query mask IoU {res['query_mask_iou_mean']:.4f}, "
                         f"class prob delta max {res['class_prob_delta_max']:.2e}")
        else:
            agreement = res["top1_agreement"]
            st.detail = (f"top-1 agreement {agreement:.1f}%, cosine min {res['cosine_min']:.5f}, "
                         f"max-abs {res['max_abs_error']:.2e}")
        st.detail += f" vs exported FP32 ({res['images']} {res['data']})"
        if run.cached:  # the figures were measured when the graph was built, not in this run
            st.detail = f"cached figures: {st.detail}"
        if is_random(weights):
            st.unjudged()
            st.detail += "; random weights: not judged"
        elif agreement < opts.min_agreement:
            st.unjudged()
            st.detail += f"; below --min-agreement {opts.min_agreement:g}%"
        res["step_key"] = run.key
        return res


ACCURACY_IMAGES = 8
ACCURACY_MEASURE = 2  # bump when compare_models' figures change, so cached records are remeasured
DATA_NAMES = {
    "held-out": "held-out images (--accuracy-data)",
    "calibration": "calibration images (not held out)",
    "random": "seeded random images (not real data)",
}


def compare_graphs(reference: Path, candidate: Path, fields: dict, opts: BuildOptions) -> dict:
    from vitdeploy.calibration.accuracy import compare_models
    from vitdeploy.calibration.data import CalibrationData, load_data
    from vitdeploy.onnxgraph import model_input
    from vitdeploy.parity import random_images

    import onnx

    if opts.accuracy_data:
        data = load_data(opts.accuracy_data, fields.get("preprocessing"), show_progress=False)
        role = "held-out"
    elif opts.calib_data:
        data = load_data(opts.calib_data, fields.get("preprocessing"), num_images=opts.calib_images, show_progress=False)
        role = "calibration"
    else:
        _, shape = model_input(onnx.load(str(reference), load_external_data=False))
        size = tuple(int(d) for d in shape[-2:])
        data = CalibrationData(random_images(ACCURACY_IMAGES, size, seed=1234), source="random")
        role = "random"
    # A given TorchScript export may compute grids in FP64, which ONNX Runtime cannot run: the rewrite
    # was verified against its normalised form (FP64 index/grid islands in FP32), and so is accuracy.
    from vitdeploy.deploy.normalize import find_fp64_islands, normalize_fp64

    ref_model = onnx.load(str(reference))
    normalized = None
    if find_fp64_islands(ref_model):
        ref_model, normalized = normalize_fp64(ref_model)
    # Class-id labels of a .npz fit classifiers only; a detector's figures need no labels.
    is_detector = (fields.get("postprocessing") or {}).get("task") in ("detection", "segmentation")
    result = compare_models(ref_model if normalized else reference, candidate, data,
                            None if is_detector else data.labels, show_progress=True)
    if normalized:
        result["reference_normalized"] = {k: normalized[k] for k in ("fp64_islands", "normalized", "grid_max_abs_deviation")}
    result["data"] = DATA_NAMES[role]
    result["data_role"] = role
    return result


# ----------------------------------------------------------------------------- engine

def engine_settings(opts: BuildOptions, final_onnx: Path, fields: dict, plugin_mode: str, target: str):
    from vitdeploy.deploy.engine import EngineSettings, profiles_for

    batch = opts.batch or _batch_from_fields(fields)
    return EngineSettings(
        profiles=profiles_for(final_onnx, batch),
        workspace_gb=opts.workspace_gb,
        timing_cache=opts.timing_cache,
        hardware_compatibility=opts.hardware_compat,
        version_compatible=opts.version_compatible,
        dla_core=opts.dla_core,
        plugin_mode=plugin_mode,
        target=target,
    )


def _batch_from_fields(fields: dict) -> BatchSpec:
    b = fields.get("batch") or {}
    try:
        return BatchSpec(int(b["min"]), int(b["opt"]), int(b["max"]))
    except (KeyError, TypeError, ValueError):
        return BatchSpec()


def step_engine(final_onnx: Path, settings, plugins: list[dict], opts: BuildOptions, cache: StepCache,
                trt_version: str | None, trt_error: str | None) -> tuple[Path | None, dict]:
    from vitdeploy import machine
    from vitdeploy.deploy import engine as eng

    plan = opts.out_dir / PLAN_NAME
    with stage("engine") as st:
        if opts.no_engine:
            st.skip("--no-engine")
            return None, {"built": False, "skipped": "--no-engine", **settings.to_dict()}
        if trt_version is None:
            why = f"TensorRT is not installed here ({trt_error})"
            st.skip("no TensorRT here (the last line says what to run on the target)", word="not built")
            return None, {"built": False, "skipped": why, **settings.to_dict()}
        gpu = machine.primary_gpu() or {}
        import os

        # the plugins' PTX follows these overrides (plugins/ptx_target.py), so they are part of the key
        ptx_env = {k: os.environ.get(k) for k in ("VITDEPLOY_PTX_ARCH", "VITDEPLOY_PTX_ISA") if os.environ.get(k)}
        inputs = {"onnx": sha256_onnx(final_onnx), "tensorrt": trt_version,
                  "gpu": [gpu.get("name"), gpu.get("compute_capability")],
                  "settings": settings.to_dict(key_only=True)}
        if ptx_env:  # absent by default: earlier cache keys stay valid
            inputs["ptx_env"] = ptx_env
        def compute():
            record = staged(opts.out_dir, plan, lambda tmp: eng.build_engine(final_onnx, tmp, settings, plugins))
            record["plan"] = file_entry(opts.out_dir, plan)
            return {"plan": plan}, record

        run = cache.run("engine", inputs, compute)
        record = run.result
        st.detail = (f"{PLAN_NAME} (cached)" if run.cached else
                     f"{PLAN_NAME} ({record['plan']['bytes'] / 2**20:.1f} MiB, TensorRT {trt_version})")
        record["step_key"] = run.key
        return plan, record




# ----------------------------------------------------------------------------- lint

def step_lint(final_onnx: Path, target) -> dict:
    """`vitdeploy lint` on the final graph for the build's target TensorRT (`deploy.lint.targets`).

    An error stops the build here, before the engine step. With no TensorRT here the target is a lowest
    version (open-ended): a graph that only a later TensorRT parses (e.g. the stock deformable-attention
    plugin v2, from 10.11) raises that requirement with one line instead of failing; a machine with
    TensorRT runs the same check against its exact version and refuses there.
    """
    from rich.markup import escape

    from vitdeploy.deploy.lint import fmt, lint_file

    with stage("lint") as st:
        report = lint_file(final_onnx, target.version)
        requires, raised_by = None, None
        if report.errors and target.open_ended and all(f.fixed_in for f in report.errors):
            later = max(f.fixed_in for f in report.errors)
            retry = lint_file(final_onnx, later)
            if not retry.errors:
                requires, raised_by = later, report.errors[0]
                report = retry
        from vitdeploy.deploy.lint.core import grouped_lines

        for severity, line in grouped_lines([f for f in report.findings if f.severity in ("error", "warning")]):
            console.print(f"  [{'red' if severity == 'error' else 'yellow'}]{escape(line)}[/]")
        if requires is not None:
            console.print(f"  [yellow]this graph needs TensorRT >= {fmt(requires)}: {escape(raised_by.message)} "
                          f"(node {escape(raised_by.node or '?')}); build the engine on TensorRT >= {fmt(requires)}[/]")
        record = {**report.to_dict(), "target": fmt(target.version), "open_ended": target.open_ended,
                  "reason": target.reason}
        if requires is not None:
            record["requires"] = fmt(requires)
        if report.errors:
            first = report.errors[0]
            raise VitdeployError(
                f"{final_onnx.name} would not build on TensorRT {fmt(report.tensorrt)}: {first.node or ''} "
                f"{first.message}".replace("  ", " "),
                f"{first.fix}; all findings: vitdeploy lint {final_onnx} --trt {fmt(report.tensorrt)}")
        st.detail = report.summary()
        return record
