"""`vitdeploy build`: export -> rewrite -> precision -> accuracy -> engine, each step cached.

Every step's output lives in the build directory and is keyed by a content hash
of everything it depends on (input file sha256, options, vitdeploy and tool
versions). A rerun with the same key reuses the output (after checking its
sha256), so changing `--fp16` redoes precision, accuracy and engine but not the
export. Keys chain through output hashes: a step whose input bytes did not
change stays cached even when an earlier step reran.

Steps whose implementation is not installed (a rewrite pass, the INT8
calibrator) say so and are left out; the manifest records what ran.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from vitdeploy.console import console, stage
from vitdeploy.deploy.artifacts import (
    MANIFEST_NAME,
    atomic_save_onnx,
    atomic_write_json,
    ensure_writable_dir,
    new_manifest,
    publish,
    sha256_file,
)
from vitdeploy.deploy.export import BatchSpec
from vitdeploy.errors import VitdeployError

CACHE_DIR = ".vitdeploy/steps"
PLAN_NAME = "model.plan"
JETSON_WORKSPACE_GB = 1.0  # Jetson shares DRAM with the CPU: leave room for the application


@dataclass
class BuildOptions:
    out_dir: Path
    alias: str | None = None
    onnx: Path | None = None
    fp16: bool = False
    int8: bool = False
    calib_data: Path | None = None
    calib_method: str = "entropy"
    calib_images: int | None = None
    int8_exclude: tuple[str, ...] = ()  # MatMul/Gemm/Conv kept FP16: node name or module path globs
    quantize_first_last: bool = False
    plugins: str = "auto"
    target: str = "auto"  # resolved to gpu|jetson by `resolve`
    batch: BatchSpec | None = None  # None: the model's / the ONNX manifest's
    workspace_gb: float | None = None
    dla_core: int | None = None
    timing_cache: Path | None = None
    hardware_compat: str = "none"
    version_compatible: bool = False
    no_engine: bool = False
    img_size: tuple[int, int] | None = None
    checkpoint: str | None = None
    pretrained: bool = False
    opset: int = 18
    exporter: str = "auto"
    small: bool = False  # reduced Deformable DETR (tests)
    msda_impl: str = "stock"  # stock TensorRT plugin | vitdeploy's Triton plugin


@dataclass
class BuildResult:
    out_dir: Path
    manifest: dict
    final_onnx: Path
    engine: Path | None
    skipped_reason: str | None = None  # why there is no engine (None when built)
    target_commands: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- step cache

def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


class StepCache:
    """One JSON record per step under DIR/.vitdeploy/steps: key, output files with sha256, result."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.dir = out_dir / CACHE_DIR

    def key(self, step: str, inputs: dict) -> str:
        from vitdeploy import __version__

        return _digest({"step": step, "vitdeploy": __version__, "inputs": inputs})

    def lookup(self, step: str, key: str) -> dict | None:
        """The stored record when its key matches and every output file is intact; else None."""
        p = self.dir / f"{step}.json"
        try:
            rec = json.loads(p.read_text())
        except (OSError, ValueError):
            return None
        if rec.get("key") != key:
            return None
        for out in rec.get("outputs", {}).values():
            f = self.out_dir / out["path"]
            if not f.is_file() or f.stat().st_size != out["bytes"] or sha256_file(f) != out["sha256"]:
                return None
        return rec

    def store(self, step: str, key: str, outputs: dict[str, Path], result: dict, seconds: float) -> dict:
        self.dir.mkdir(parents=True, exist_ok=True)
        rec = {
            "key": key,
            "outputs": {role: _file_entry(self.out_dir, p) for role, p in outputs.items()},
            "result": result,
            "seconds": round(seconds, 3),
        }
        atomic_write_json(self.dir / f"{step}.json", rec)
        return rec


def _file_entry(root: Path, p: Path) -> dict:
    return {"path": os.path.relpath(p, root), "sha256": sha256_file(p), "bytes": p.stat().st_size}


def _tmp_path(out_dir: Path, name: str) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=out_dir)
    os.close(fd)
    return Path(tmp)


# ----------------------------------------------------------------------------- options

def resolve(opts: BuildOptions) -> tuple[BuildOptions, dict]:
    """Check flag combinations and fill target defaults; returns (opts, target record)."""
    from vitdeploy.deploy import gpu_env

    if bool(opts.alias) == bool(opts.onnx):
        raise VitdeployError("pass exactly one of --model and --onnx", "e.g. --model swin_t or --onnx model.onnx")
    if opts.int8 and not opts.calib_data:
        raise VitdeployError("--int8 needs calibration images", "add --calib-data DIR (a folder of images or a .npz)")
    if opts.calib_data and not opts.int8:
        raise VitdeployError("--calib-data is only used with --int8", "add --int8 or drop --calib-data")
    if opts.calib_data and not Path(opts.calib_data).exists():  # before minutes of export, not after
        raise VitdeployError(f"calibration data {opts.calib_data} does not exist", "pass a folder of images or a .npz")
    if opts.calib_images is not None and opts.calib_images < 1:
        raise VitdeployError(f"--calib-images must be at least 1, got {opts.calib_images}", "e.g. --calib-images 256")
    if (opts.int8_exclude or opts.quantize_first_last) and not opts.int8:
        raise VitdeployError("--int8-exclude and --quantize-first-last are only used with --int8", "add --int8")
    if opts.alias:
        from vitdeploy.models import check_input_size, get_info

        info = get_info(opts.alias)  # unknown alias: one line, before anything is written
        if opts.img_size:
            check_input_size(info, opts.img_size)
    if opts.workspace_gb is not None and opts.workspace_gb <= 0:
        raise VitdeployError(f"--workspace must be positive, got {opts.workspace_gb:g}", "e.g. --workspace 4")
    env = gpu_env.probe()
    target = opts.target
    if target == "auto":
        target = "jetson" if gpu_env.is_jetson(env) else "gpu"
    record: dict = {"target": target, "requested": opts.target}
    if target == "jetson":
        # Jetson defaults: FP16 (Orin's tensor cores, half the DRAM traffic), INT8 on top when
        # asked, a 1 GiB workspace (memory is shared with the CPU), no hardware compatibility.
        if opts.alias:  # a given ONNX already carries its precision
            opts.fp16 = True
        if opts.workspace_gb is None:
            opts.workspace_gb = JETSON_WORKSPACE_GB
        if opts.hardware_compat != "none":
            raise VitdeployError("--hardware-compat is not supported on Jetson", "drop it for --target jetson")
        if env.get("jetson"):
            record["jetson"] = env["jetson"]
    if opts.dla_core is not None:
        if target != "jetson":
            raise VitdeployError("--dla-core needs a Jetson target (DLA exists only on Jetson/DRIVE)",
                                 "add --target jetson or drop --dla-core")
        if opts.dla_core < 0:
            raise VitdeployError(f"--dla-core must be 0 or 1, got {opts.dla_core}", "e.g. --dla-core 0")
        if opts.alias and not (opts.fp16 or opts.int8):  # a given ONNX carries its own precision
            raise VitdeployError("DLA runs only FP16/INT8 layers", "add --fp16 or --int8")
        from vitdeploy.deploy.trt_env import supports_dla, tensorrt_version

        trt_here = tensorrt_version()
        if trt_here is not None and not supports_dla(trt_here):
            raise VitdeployError(f"TensorRT {trt_here} cannot build for DLA (10.7 was the last 10.x with DLA; "
                                 "11.4.1 brought it back on JetPack 7.2.2+)", "drop --dla-core")
        if "thor" in ((env.get("jetson") or {}).get("module") or "").lower():
            raise VitdeployError("Jetson Thor has no DLA", "drop --dla-core")
        # DLA runs convolutions, pooling and elementwise layers; attention (activation x activation
        # MatMul, Softmax, LayerNorm) stays on the GPU, so DLA pays off for conv stems/backbones.
        record["dla"] = {"core": opts.dla_core, "gpu_fallback": True}
        console.print(f"  DLA core {opts.dla_core} with GPU fallback: convolution layers run on DLA, "
                      "attention layers stay on the GPU")
    if opts.hardware_compat != "none" and opts.dla_core is not None:
        raise VitdeployError("--hardware-compat cannot be combined with --dla-core", "drop one")
    return opts, record


# ----------------------------------------------------------------------------- steps

def _versions() -> dict:
    """Installed versions from package metadata (no imports: a cached rerun stays fast)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("torch", "onnx", "onnxscript", "onnxruntime", "timm", "transformers", "polygraphy", "tensorrt"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


def step_export(opts: BuildOptions, cache: StepCache) -> tuple[Path, dict]:
    """Model mode: export + parity (vitdeploy.deploy.export_step). --onnx mode: take the file as given."""
    from vitdeploy.deploy.export_step import ExportOptions, export_verified, summarize_parity
    from vitdeploy.models import check_input_size, get_info

    out = opts.out_dir
    with stage("export") as st:
        if opts.onnx is not None:
            return _import_onnx(opts, st)
        info = get_info(opts.alias)
        if opts.img_size:
            check_input_size(info, opts.img_size)
        batch = opts.batch or BatchSpec()
        inputs = {
            "alias": info.alias, "img_size": opts.img_size, "batch": batch.to_dict(), "opset": opts.opset,
            "exporter": opts.exporter, "pretrained": opts.pretrained, "small": opts.small,
            "checkpoint": sha256_file(opts.checkpoint) if opts.checkpoint else None,
            "versions": {k: v for k, v in _versions().items() if k in ("torch", "onnx", "onnxscript", "timm", "transformers")},
        }
        key = cache.key("export", inputs)
        dest = out / "model.onnx"
        rec = cache.lookup("export", key)
        if rec is None:
            started = time.perf_counter()
            tmp = _tmp_path(out, "model.onnx")
            try:
                eo = ExportOptions(img_size=opts.img_size, batch=batch, opset=opts.opset, checkpoint=opts.checkpoint,
                                   pretrained=opts.pretrained, exporter=opts.exporter, small=opts.small)
                res, fields, parity = export_verified(info, tmp, eo)
                fields["export"]["parity"] = parity
                if opts.checkpoint:
                    fields["model"]["checkpoint"] = {"path": str(Path(opts.checkpoint).resolve()), "sha256": inputs["checkpoint"]}
                publish(tmp, dest)
            finally:
                tmp.unlink(missing_ok=True)
            rec = cache.store("export", key, {"onnx": dest}, fields, time.perf_counter() - started)
            st.detail = f"model.onnx (opset {res.opset}, {res.exporter} exporter), parity vs PyTorch: {summarize_parity(parity)}"
        else:
            st.detail = "model.onnx cached"
        rec["result"]["steps"] = {"export": key}
        return dest, rec["result"]


def _import_onnx(opts: BuildOptions, st) -> tuple[Path, dict]:
    """--onnx: use the file (copied into DIR unless already there) and inherit its manifest."""
    from vitdeploy.deploy.artifacts import load_manifest, load_onnx
    from vitdeploy.deploy.export import io_signature

    src = opts.onnx.resolve()
    if not src.is_file():
        raise VitdeployError(f"ONNX file {opts.onnx} does not exist", "check the --onnx path")
    load_onnx(src, hint="pass an .onnx file", load_external_data=False)
    dest = src if src.parent == opts.out_dir.resolve() else opts.out_dir / src.name
    if dest != src:
        tmp = _tmp_path(opts.out_dir, src.name)
        shutil.copyfile(src, tmp)
        publish(tmp, dest)
    fields: dict = {}
    if (src.parent / MANIFEST_NAME).is_file():
        try:
            fields = load_manifest(src.parent / MANIFEST_NAME)
        except VitdeployError:
            fields = {}
        inherited_files = {k: v for k, v in (fields.get("files") or {}).items() if k not in ("engine", "onnx")}
        fields = {k: v for k, v in fields.items() if k not in ("engine", "steps", "files", "created", "build")}
        if inherited_files and dest == src:  # paths are relative to this directory
            fields["inherited_files"] = inherited_files
    fields.setdefault("export", {}).update(io_signature(dest))
    fields["source_onnx"] = {"path": str(src), "sha256": sha256_file(dest)}
    st.detail = f"{dest.name} (given with --onnx{', manifest inherited' if 'model' in fields else ''})"
    fields["steps"] = {}
    return dest, fields


def _available_passes(names: list[str]) -> tuple[list[str], list[str]]:
    from vitdeploy.deploy.rewrite import PASSES

    have, missing = [], []
    for n in names:
        mod = PASSES.get(n, "").split(":")[0]
        (have if mod and importlib.util.find_spec(mod) is not None else missing).append(n)
    return have, missing


def _plugin_nodes(model) -> list[dict]:
    """vitdeploy / TensorRT stock plugin nodes in a graph: op, namespace, version, count."""
    from vitdeploy.plugins import ORT_FACES

    seen: dict[tuple, dict] = {}
    for node in model.graph.node:
        if node.domain != "vitdeploy" and node.op_type not in ORT_FACES:
            continue
        attrs = {a.name: _onnx_attr(a) for a in node.attribute}
        key = (node.op_type, node.domain)
        entry = seen.setdefault(key, {
            "op": node.op_type, "domain": node.domain or "ai.onnx",
            "namespace": attrs.get("plugin_namespace", ""), "version": str(attrs.get("plugin_version", "1")),
            "count": 0, "kind": "vitdeploy AOT" if node.domain == "vitdeploy" else "TensorRT stock",
        })
        entry["count"] += 1
    return list(seen.values())


def _onnx_attr(a):
    import onnx

    v = onnx.helper.get_attribute_value(a)
    return v.decode() if isinstance(v, bytes) else v


def step_rewrite(src: Path, passes: list[str], mode: str, opts: BuildOptions, cache: StepCache) -> tuple[Path, dict | None]:
    import onnx

    from vitdeploy.deploy.rewrite.base import run_passes
    from vitdeploy.deploy.rewrite_flow import check_whole_graph

    have, missing = _available_passes(passes)
    with stage("rewrite") as st:
        for n in missing:
            console.print(f"  [yellow]rewrite pass '{n}' is not part of this install yet: continuing without it[/]")
        if not have:
            st.skip("no rewrite passes apply" if not passes else f"pass module(s) missing: {', '.join(missing)}")
            return src, None
        pass_options = {"msda_impl": opts.msda_impl}
        key = cache.key("rewrite", {"onnx": sha256_file(src), "passes": have, "mode": mode, "options": pass_options})
        rec = cache.lookup("rewrite", key)
        dest = opts.out_dir / f"{src.name.removesuffix('.onnx')}.rewritten.onnx"
        if rec is None:
            started = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model, report = run_passes(onnx.load(str(src)), have, mode, options=pass_options)
            for w in caught:
                if ": left " in str(w.message):
                    console.print(f"  [yellow]{w.message}[/]")
            check_whole_graph(report, "rerun with --plugins off, or report the model")
            replaced = sum(p["replaced"] for p in report["passes"])
            report["plugins"] = _plugin_nodes(model)
            if replaced:
                atomic_save_onnx(model, dest)
            report["output"] = dest.name if replaced else None
            rec = cache.store("rewrite", key, {"onnx": dest} if replaced else {}, report, time.perf_counter() - started)
            cached = ""
        else:
            cached = " cached"
        report = rec["result"]
        found = sum(p["found"] for p in report["passes"])
        replaced = sum(p["replaced"] for p in report["passes"])
        st.detail = f"{'+'.join(have)} ({mode}): {replaced}/{found} subgraphs replaced{cached}"
        report["step_key"] = key
        return (dest if report.get("output") else src), report


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
        needed = ["vitdeploy.calibration.precision"] + (["vitdeploy.calibration.quantization"] if opts.int8 else [])
        missing = [m for m in needed if importlib.util.find_spec(m) is None]
        if missing:
            st.skip(f"{wanted} requested but {', '.join(missing)} is not part of this install: the graph stays FP32")
            return src, {"requested": wanted, "applied": "fp32", "missing": missing}, None
        inputs = {"onnx": sha256_file(src), "precision": wanted}
        if opts.int8:
            inputs.update(calib=_calib_fingerprint(opts.calib_data), method=opts.calib_method, images=opts.calib_images)
            if opts.int8_exclude or opts.quantize_first_last:  # absent by default: earlier cache keys stay valid
                inputs.update(exclude=list(opts.int8_exclude), first_last=opts.quantize_first_last)
        key = cache.key("precision", inputs)
        stem = src.name.removesuffix(".onnx").removesuffix(".rewritten")
        dest = opts.out_dir / f"{stem}.{'int8' if opts.int8 else 'fp16'}.onnx"
        cache_file = opts.out_dir / "calibration.cache"
        rec = cache.lookup("precision", key)
        if rec is None:
            started = time.perf_counter()
            outputs: dict[str, Path] = {"onnx": dest}
            summary: dict = {"requested": wanted, "applied": wanted}
            if opts.int8:
                from vitdeploy.calibration.data import load_data
                from vitdeploy.calibration.quantization import quantize_int8

                calib = load_data(opts.calib_data, fields.get("preprocessing"), num_images=opts.calib_images)
                from vitdeploy.calibration.data import model_input

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
                from vitdeploy.calibration.precision import convert_fp16

                model, summary["fp16"] = convert_fp16(onnx.load(str(src)), keep_io_fp32=True)
            atomic_save_onnx(model, dest)
            rec = cache.store("precision", key, outputs, summary, time.perf_counter() - started)
            st.detail = f"{wanted} -> {dest.name}"
        else:
            st.detail = f"{wanted} -> {dest.name} cached"
        summary = rec["result"]
        summary["step_key"] = key
        cal = cache_file if "calibration_cache" in rec["outputs"] else None
        return dest, summary, cal


def step_accuracy(reference: Path, candidate: Path, fields: dict, opts: BuildOptions, cache: StepCache) -> dict | None:
    """The final graph against the exported FP32 graph on the same inputs (ONNX Runtime, CPU),
    through `vitdeploy.calibration.accuracy.compare_models`: the calibration images when
    given, else seeded random images (agreement, not accuracy: no labels)."""
    with stage("accuracy") as st:
        if candidate == reference:
            st.skip("final graph is the exported graph")
            return None
        if importlib.util.find_spec("vitdeploy.calibration.accuracy") is None:
            st.skip("vitdeploy.calibration.accuracy is not part of this install")
            return None
        source = {"calib": _calib_fingerprint(opts.calib_data), "images": opts.calib_images} if opts.calib_data \
            else {"random": ACCURACY_IMAGES}
        key = cache.key("accuracy", {"reference": sha256_file(reference), "candidate": sha256_file(candidate),
                                     "data": source})
        rec = cache.lookup("accuracy", key)
        if rec is None:
            started = time.perf_counter()
            result = compare_graphs(reference, candidate, fields, opts)
            rec = cache.store("accuracy", key, {}, result, time.perf_counter() - started)
            cached = ""
        else:
            cached = " cached"
        res = rec["result"]
        st.detail = (f"top-1 agreement {res['top1_agreement']:.1f}%, cosine min {res['cosine_min']:.5f}, "
                     f"max-abs {res['max_abs_error']:.2e} vs exported FP32 ({res['images']} {res['data']}){cached}")
        res["step_key"] = key
        return res


ACCURACY_IMAGES = 8


def compare_graphs(reference: Path, candidate: Path, fields: dict, opts: BuildOptions) -> dict:
    from vitdeploy.calibration.accuracy import compare_models
    from vitdeploy.calibration.data import CalibrationData, load_data, model_input
    from vitdeploy.deploy.inputs import random_images

    import onnx

    if opts.calib_data:
        data = load_data(opts.calib_data, fields.get("preprocessing"), num_images=opts.calib_images, show_progress=False)
        what = "calibration images"
    else:
        _, shape = model_input(onnx.load(str(reference), load_external_data=False))
        size = tuple(int(d) for d in shape[-2:])
        data = CalibrationData(random_images(ACCURACY_IMAGES, size, seed=1234), source="random")
        what = "seeded random images"
    result = compare_models(reference, candidate, data)
    result["data"] = what
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
    from vitdeploy.deploy import engine as eng
    from vitdeploy.deploy import gpu_env

    plan = opts.out_dir / PLAN_NAME
    with stage("engine") as st:
        if opts.no_engine:
            st.skip("--no-engine")
            return None, {"built": False, "skipped": "--no-engine", **settings.to_dict()}
        if trt_version is None:
            why = f"TensorRT is not installed here ({trt_error})"
            st.skip(why)
            return None, {"built": False, "skipped": why, **settings.to_dict()}
        gpu = gpu_env.primary_gpu() or {}
        key = cache.key("engine", {"onnx": sha256_file(final_onnx), "tensorrt": trt_version,
                                   "gpu": [gpu.get("name"), gpu.get("compute_capability")],
                                   "settings": settings.to_dict(key_only=True)})
        rec = cache.lookup("engine", key)
        if rec is None:
            started = time.perf_counter()
            tmp = _tmp_path(opts.out_dir, PLAN_NAME)
            try:
                record = eng.build_engine(final_onnx, tmp, settings, plugins)
                publish(tmp, plan)
            finally:
                tmp.unlink(missing_ok=True)
            record["plan"] = _file_entry(opts.out_dir, plan)
            rec = cache.store("engine", key, {"plan": plan}, record, time.perf_counter() - started)
            st.detail = f"{PLAN_NAME} ({record['plan']['bytes'] / 2**20:.1f} MiB, TensorRT {trt_version})"
        else:
            st.detail = f"{PLAN_NAME} cached"
        record = rec["result"]
        record["step_key"] = key
        return plan, record


# ----------------------------------------------------------------------------- the whole build

def run_build(opts: BuildOptions) -> BuildResult:
    """Run every step into opts.out_dir and write manifest.json; a failure before any step
    finished leaves no directory behind."""
    from vitdeploy.deploy.trt_env import select_plugin_mode, tensorrt_import_error, tensorrt_version

    started = time.time()
    opts, target = resolve(opts)
    trt_version = tensorrt_version()
    trt_error = tensorrt_import_error() if trt_version is None else None
    decision = select_plugin_mode(opts.plugins, trt_version, target["target"])
    opts.out_dir, created = ensure_writable_dir(opts.out_dir)
    try:
        return _run_steps(opts, target, trt_version, trt_error, decision, started)
    except BaseException:
        cache_dir = opts.out_dir / CACHE_DIR
        if created and not (cache_dir.is_dir() and any(cache_dir.iterdir())):
            shutil.rmtree(opts.out_dir, ignore_errors=True)  # nothing worth keeping: leave no trace
        raise


def _run_steps(opts: BuildOptions, target: dict, trt_version, trt_error, decision, started: float) -> BuildResult:
    from vitdeploy.deploy import gpu_env
    from vitdeploy.deploy.engine import target_commands
    from vitdeploy.deploy.trt_env import supports_aot_plugins
    from vitdeploy.models import get_info

    cache = StepCache(opts.out_dir)
    exported, fields = step_export(opts, cache)
    steps = dict(fields.pop("steps", {}))

    alias = opts.alias or (fields.get("model") or {}).get("alias")
    if alias:
        try:
            passes = list(get_info(alias).passes)
        except VitdeployError:
            passes = []
    else:
        from vitdeploy.deploy.rewrite import PASSES

        passes = list(PASSES)  # unknown graph: every pass looks, structure decides
    rewritten, rewrite_report = step_rewrite(exported, passes, decision.mode, opts, cache)
    if rewrite_report and (decision.mode == "native" or any(p["kind"] == "vitdeploy AOT" for p in rewrite_report["plugins"])):
        console.print(f"  plugins: {decision.mode} ({decision.reason})")
    final, precision, calib_cache = step_precision(rewritten, fields, opts, cache)
    accuracy = step_accuracy(exported, final, fields, opts, cache)

    import onnx

    plugins = _plugin_nodes(onnx.load(str(final), load_external_data=False))
    if any(p["kind"] == "vitdeploy AOT" for p in plugins) and trt_version and not supports_aot_plugins(trt_version):
        raise VitdeployError(
            f"{final.name} has vitdeploy plugin nodes, which need TensorRT >= 10.9; this machine has {trt_version}",
            "rebuild from the model with --plugins off (or auto) so the graph uses the plugin-free rewrite",
        )
    settings = engine_settings(opts, final, fields, decision.mode, target["target"])
    plan, engine_record = step_engine(final, settings, plugins, opts, cache, trt_version, trt_error)

    for name, section in (("rewrite", rewrite_report), ("precision", precision), ("accuracy", accuracy), ("engine", engine_record)):
        if section and section.get("step_key"):
            steps[name] = section.pop("step_key")
    inherited_rewrite = fields.get("rewrite")
    inherited_files = fields.pop("inherited_files", {})
    manifest = new_manifest()
    manifest.update(fields)
    files = {"onnx_exported": _file_entry(opts.out_dir, exported), **inherited_files,
             "onnx": _file_entry(opts.out_dir, final)}
    if calib_cache:
        files["calibration_cache"] = _file_entry(opts.out_dir, calib_cache)
    if plan:
        files["engine"] = _file_entry(opts.out_dir, plan)
    manifest["files"] = files
    if rewrite_report is not None and (any(p["replaced"] for p in rewrite_report["passes"]) or not inherited_rewrite):
        manifest["rewrite"] = rewrite_report  # else: a given, already rewritten ONNX keeps its record
    manifest["plugins"] = plugins
    manifest["precision"] = precision or manifest.get("precision") or {"applied": "fp32"}
    if accuracy is not None:
        manifest["accuracy"] = accuracy
    env = gpu_env.probe()
    machine = {"tensorrt": trt_version, "cuda": env.get("cuda_runtime") or env.get("cuda_driver_api"),
               "driver": env.get("driver"), "gpu": (env.get("gpus") or [None])[0], "jetson": env.get("jetson")}
    engine_record.setdefault("tensorrt", trt_version)
    if engine_record.get("built"):  # the engine is tied to the machine that built it
        for k in ("cuda", "driver", "gpu", "jetson"):
            if machine[k] is not None:
                engine_record.setdefault(k, machine[k])
    engine_record["plugin_mode"] = {"mode": decision.mode, "reason": decision.reason, "requested": opts.plugins}
    manifest["engine"] = engine_record
    manifest["target"] = target
    manifest["steps"] = steps
    manifest["build"] = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 2),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in opts.__dict__.items() if k != "batch"},
        "versions": _versions(),
        "machine": machine,
    }
    atomic_write_json(opts.out_dir / MANIFEST_NAME, manifest)
    skipped = engine_record.get("skipped")
    return BuildResult(opts.out_dir, manifest, final, plan, skipped,
                       target_commands(final, opts.out_dir / PLAN_NAME, settings, plugins))
