"""The whole build: resolve options, run the steps in order, write manifest.json."""
from __future__ import annotations

import shlex
import shutil
import time
from pathlib import Path

from vitdeploy.artifact import MANIFEST_NAME, atomic_write_json, ensure_writable_dir, new_manifest
from vitdeploy.console import console
from vitdeploy.errors import VitdeployError
from vitdeploy.onnxgraph import plugin_nodes
from vitdeploy.pipeline.cache import CACHE_DIR, StepCache, file_entry
from vitdeploy.pipeline.options import BuildOptions, BuildResult, resolve
from vitdeploy.pipeline.steps import (
    PLAN_NAME, tool_versions, engine_settings, step_accuracy, step_engine, step_export,
    step_lint, step_precision, step_rewrite,
)

def run_build(opts: BuildOptions) -> BuildResult:
    """Run every step into opts.out_dir and write manifest.json; a failure before any step
    finished leaves no directory behind."""
    from vitdeploy.deploy.lint.targets import build_target
    from vitdeploy.machine import select_plugin_mode, tensorrt_import_error, tensorrt_version

    started = time.time()
    opts, target = resolve(opts)
    if opts.alias:
        from vitdeploy.pipeline.options import model_info
        from vitdeploy.sources import random_weights

        info = model_info(opts)
        if random_weights(info, checkpoint=opts.checkpoint, pretrained=opts.pretrained):
            from vitdeploy.weights import banner

            banner(info.alias)  # the options are valid: say it before minutes of work, not after
    trt_version = tensorrt_version()
    trt_error = tensorrt_import_error() if trt_version is None else None
    decision = select_plugin_mode(opts.plugins, trt_version, target["target"])
    lint_target = build_target(trt_version, target["target"], decision.mode)
    target["tensorrt"] = lint_target.label
    bound_opset(opts, lint_target, target)
    opts.out_dir, created = ensure_writable_dir(opts.out_dir)
    try:
        return _run_steps(opts, target, trt_version, trt_error, decision, lint_target, started)
    except BaseException:
        cache_dir = opts.out_dir / CACHE_DIR
        if created and not (cache_dir.is_dir() and any(cache_dir.iterdir())):
            shutil.rmtree(opts.out_dir, ignore_errors=True)  # nothing worth keeping: leave no trace
        raise


def bound_opset(opts: BuildOptions, lint_target, record: dict) -> None:
    """Lower `--opset` to what the target TensorRT's parser documents, saying so in one line (model mode;
    a given ONNX keeps its opset and `lint` refuses what the target cannot parse)."""
    from vitdeploy.deploy.lint import fmt
    from vitdeploy.deploy.lint.tables import opset_max

    if not opts.alias:
        return
    top = opset_max(lint_target.version)
    if opts.opset > top:
        record["opset"] = {"requested": opts.opset, "used": top}
        console.print(f"  [yellow]--opset {opts.opset} lowered to {top}[/]: TensorRT {fmt(lint_target.version)} "
                      f"({lint_target.reason}) documents opsets up to {top}"
                      + ("; opset 23's ONNX Attention imports only from TensorRT 10.14" if opts.opset >= 23 else ""))
        opts.opset = top


def _run_steps(opts: BuildOptions, target: dict, trt_version, trt_error, decision, lint_target,
               started: float) -> BuildResult:
    from vitdeploy import machine
    from vitdeploy.deploy.engine import target_commands
    from vitdeploy.deploy.lint.targets import for_final_graph
    from vitdeploy.machine import supports_aot_plugins

    cache = StepCache(opts.out_dir)
    exported, fields = step_export(opts, cache)
    steps = dict(fields.pop("steps", {}))
    from vitdeploy.deploy.preprocess import record_for_build

    for line in record_for_build(fields, opts.preprocess, opts.labels):  # what serving may rely on, stated
        console.print(f"  {line}")

    passes = rewrite_passes(opts, fields)
    rewritten, rewrite_report = step_rewrite(exported, passes, decision.mode, opts, cache, fields.get("rewrite"))
    if rewrite_report and (decision.mode == "native" or any(p["kind"] == "vitdeploy AOT" for p in rewrite_report["plugins"])):
        console.print(f"  plugins: {decision.mode} ({decision.reason})")
    final, precision, calib_cache = step_precision(rewritten, fields, opts, cache)
    accuracy = step_accuracy(exported, final, fields, opts, cache)

    import onnx

    plugins = plugin_nodes(onnx.load(str(final), load_external_data=False))
    if any(p["kind"] == "vitdeploy AOT" for p in plugins) and trt_version and not supports_aot_plugins(trt_version):
        raise VitdeployError(
            f"{final.name} has vitdeploy plugin nodes, which need TensorRT >= 10.9; this machine has {trt_version}",
            "rebuild from the model with --plugins off (or auto) so the graph uses the plugin-free rewrite",
        )
    lint_target = for_final_graph(lint_target, any(p["kind"] == "vitdeploy AOT" for p in plugins))
    lint = step_lint(final, lint_target)  # an error stops the build here, before the engine
    target["tensorrt"] = (lint.get("requires") or lint["target"]) + ("+" if lint["open_ended"] else "")
    settings = engine_settings(opts, final, fields, decision.mode, target["target"])
    plan, engine_record = step_engine(final, settings, plugins, opts, cache, trt_version, trt_error)
    profile, hint = profile_command(final, opts.out_dir, settings, plugins, lint)
    if profile:  # what benchmarks/attention_fusion.py runs on a TensorRT machine
        lint["layer_info_command"] = profile

    for name, section in (("rewrite", rewrite_report), ("precision", precision), ("accuracy", accuracy), ("engine", engine_record)):
        if section and section.get("step_key"):
            steps[name] = section.pop("step_key")
    inherited_rewrite = fields.get("rewrite")
    inherited_files = fields.pop("inherited_files", {})
    fields.pop("reference_onnx", None)
    manifest = new_manifest()
    manifest.update(fields)
    files = {"onnx_exported": file_entry(opts.out_dir, exported), **inherited_files,
             "onnx": file_entry(opts.out_dir, final)}
    if calib_cache:
        files["calibration_cache"] = file_entry(opts.out_dir, calib_cache)
    if plan:
        files["engine"] = file_entry(opts.out_dir, plan)
    manifest["files"] = files
    if rewrite_report is not None and (any(p["replaced"] for p in rewrite_report["passes"]) or not inherited_rewrite):
        manifest["rewrite"] = rewrite_report  # else: a given, already rewritten ONNX keeps its record
    if rewrite_report is not None and isinstance(manifest.get("model"), dict):
        manifest["model"]["recognised"] = recognised(rewrite_report)
    manifest["plugins"] = plugins
    manifest["precision"] = precision or manifest.get("precision") or {"applied": "fp32"}
    if accuracy is not None:
        manifest["accuracy"] = accuracy
    manifest["lint"] = lint
    env = machine.probe()
    machine = {"tensorrt": trt_version, "cuda": env.get("cuda_runtime") or env.get("cuda_driver_api"),
               "cuda_source": env.get("cuda_runtime_source") or ("driver API" if env.get("cuda_driver_api") else None),
               "driver": env.get("driver"), "gpu": (env.get("gpus") or [None])[0], "jetson": env.get("jetson")}
    engine_record.setdefault("tensorrt", trt_version)
    if engine_record.get("built"):  # the engine is tied to the machine that built it
        for k in ("cuda", "driver", "gpu", "jetson"):
            if machine[k] is not None:
                engine_record.setdefault(k, machine[k])
    # A plugin (and so TensorRT-version) requirement is stated only for a graph that has plugin nodes.
    reason = decision.reason if plugins else "no plugin nodes in the graph: no plugin requirement"
    engine_record["plugin_mode"] = {"mode": decision.mode, "reason": reason, "requested": opts.plugins}
    manifest["engine"] = engine_record
    manifest["target"] = target
    manifest["steps"] = steps
    manifest["build"] = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 2),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in opts.__dict__.items() if k != "batch"},
        "versions": tool_versions(),
        "machine": machine,
    }
    if opts.calib_data:  # absolute, so `bench --accuracy-data` can tell the calibration set from held-out data
        manifest["build"]["calibration_data"] = str(Path(opts.calib_data).resolve())
    atomic_write_json(opts.out_dir / MANIFEST_NAME, manifest)
    skipped = engine_record.get("skipped")
    return BuildResult(opts.out_dir, manifest, final, plan, skipped,
                       target_commands(final, opts.out_dir / PLAN_NAME, settings, plugins), profile, hint)


def rewrite_passes(opts: BuildOptions, fields: dict) -> list[str]:
    """The passes the rewrite step runs: an alias's own; every pass for any other model and for a graph
    without a manifest (each pass decides by structure whether it finds its subgraph)."""
    from vitdeploy.deploy.rewrite import PASSES
    from vitdeploy.models import REGISTRY

    model = fields.get("model") or {}
    alias = model.get("alias") if model.get("route", "alias") == "alias" else None
    if alias in REGISTRY:
        return list(REGISTRY[alias].passes)
    return list(PASSES)


def recognised(report: dict) -> dict[str, int]:
    """What the rewrite passes recognised in the graph: pass -> subgraphs replaced (empty: plain attention only)."""
    return {p["pass"]: int(p["replaced"]) for p in report.get("passes", []) if p.get("replaced")}


def profile_command(final: Path, out_dir: Path, settings, plugins: list[dict], lint: dict) -> tuple[str | None, str | None]:
    """The trtexec line that builds the engine with detailed layer info, and what to look for in it:
    whether TensorRT fused each plain attention block can only be seen in the built engine. None for
    graphs with vitdeploy plugins (trtexec cannot register Python plugins) or without plain attention."""
    from vitdeploy.deploy.engine import trtexec_command

    blocks = [a for a in lint.get("attention", []) if a.get("form") in ("fusible", "not fusible")]
    if not blocks or any(p["kind"] == "vitdeploy AOT" for p in plugins):
        return None, None
    info = out_dir / "layer_info.json"
    cmd = trtexec_command(final, out_dir / PLAN_NAME, settings)
    cmd += f" --profilingVerbosity=detailed --exportLayerInfo={shlex.quote(str(info))} --skipInference"
    fusible = sum(1 for a in blocks if a["form"] == "fusible")
    hint = (f"in {info.name} look for an mha/fmha (fused attention) kernel per attention block: {len(blocks)} "
            f"block(s), {fusible} in the fusible form ({shlex.join(['grep', '-oiE', '[a-z0-9_]*f?mha[a-z0-9_]*', str(info)])}"
            " | sort | uniq -c); MatMul/Softmax layers left there mean the block was not fused")
    return cmd, hint
