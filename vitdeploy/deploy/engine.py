"""ONNX -> TensorRT plan, through polygraphy's TensorRT loaders. Thin on purpose.

The network is always *strongly typed*: every tensor's precision comes from the
ONNX (FP16 casts, INT8 Q/DQ written by the precision step), never from builder
precision flags or calibrators, which TensorRT 11 removed. vitdeploy plugins
are registered with `tensorrt.plugin` before parsing; with ahead-of-time
implementations their PTX is embedded in the plan, so it runs without Python.
The plan is a plain TensorRT plan file; everything about it lives in manifest.json.

TensorRT is imported only inside the functions that build; its logger and the stock plugin
library are `vitdeploy.tensorrt_session`'s, the process's one.
"""
from __future__ import annotations

import contextlib
import os
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vitdeploy.deploy.export import BatchSpec
from vitdeploy.errors import VitdeployError
from vitdeploy.tensorrt_session import init_stock_plugins, logger

HW_COMPAT = {  # CLI value -> trt.HardwareCompatibilityLevel member
    "none": "NONE",
    "ampere_plus": "AMPERE_PLUS",
    "same_compute_capability": "SAME_COMPUTE_CAPABILITY",
}
TRTEXEC_HW = {"ampere_plus": "ampere+", "same_compute_capability": "sameComputeCapability"}


@dataclass
class EngineSettings:
    """Everything the builder is told; recorded in the manifest and part of the engine's cache key."""

    profiles: list[dict] = field(default_factory=list)  # [{input: {"min": shape, "opt": shape, "max": shape}}]
    workspace_gb: float | None = None
    timing_cache: Path | None = None
    hardware_compatibility: str = "none"
    version_compatible: bool = False
    dla_core: int | None = None
    plugin_mode: str = "plugin"
    target: str = "gpu"

    def to_dict(self, key_only: bool = False) -> dict:
        d = asdict(self)
        d["timing_cache"] = str(self.timing_cache) if self.timing_cache else None
        if key_only:
            d.pop("timing_cache")  # the cache changes build time, not the engine's semantics
        return d


def profiles_for(onnx_path: str | os.PathLike, batch: BatchSpec) -> list[dict]:
    """One optimization profile: every input's batch dim at min/opt/max, the rest as in the graph.

    Empty for a fully static graph (TensorRT needs no profile then).
    """
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    profile: dict = {}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = inp.type.tensor_type.shape.dim
        static = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]
        if all(v is not None for v in static):
            continue
        if any(v is None for v in static[1:]):
            raise VitdeployError(
                f"input '{inp.name}' has symbolic dimensions besides the batch: {static}",
                "export with a fixed image size (--img-size)",
            )
        rest = static[1:]
        profile[inp.name] = {"min": [batch.min, *rest], "opt": [batch.opt, *rest], "max": [batch.max, *rest]}
    if not profile and batch.dynamic:
        raise VitdeployError(
            f"--dynamic-batch {batch.min}:{batch.opt}:{batch.max} needs a graph with a symbolic batch dimension, "
            f"but {Path(onnx_path).name} is static",
            "re-export it with --dynamic-batch (vitdeploy build --model ... --dynamic-batch MIN:OPT:MAX)",
        )
    return [profile] if profile else []


def default_timing_cache(trt_version: str, compute_capability: str | None) -> Path:
    """A per-TensorRT, per-GPU timing cache shared by every build on this machine."""
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vitdeploy" / "timing"
    cc = (compute_capability or "unknown").replace(".", "")
    return root / f"trt{trt_version}-sm{cc}.cache"


def register_plugins(plugins: list[dict]) -> list[str]:
    """Register the vitdeploy plugins a graph uses with tensorrt.plugin; returns their op names."""
    from vitdeploy.plugins.trt import register_trt_faces

    ops = [p["op"] for p in plugins if p["kind"] == "vitdeploy AOT"]  # stock plugins come with libnvinfer_plugin
    register_trt_faces(ops, strict=True)
    return ops


def _gpu_arch(gpu: dict) -> int | None:
    from vitdeploy.machine import parse_version

    v = parse_version(gpu.get("compute_capability"))
    return v[0] * 10 + (v[1] if len(v) > 1 else 0) if v else None


def plugin_ptx_target(settings: EngineSettings, plugins: list[dict], gpu: dict, cuda_driver: str | None):
    """The PTX target vitdeploy's AOT plugins compile for in this build (None without such plugins).

    `--hardware-compat ampere_plus` gets portable sm_80 PTX (the build GPU's PTX would be
    `sm_90a` on Hopper, which no other GPU loads); otherwise the build GPU's architecture.
    Refused here, in one line, when this machine's driver cannot JIT the pinned PTX ISA.
    """
    from vitdeploy.plugins import ptx_target

    if not any(p["kind"] == "vitdeploy AOT" for p in plugins):
        return None
    target = ptx_target.for_engine(settings.hardware_compatibility, _gpu_arch(gpu))
    ptx_target.check_driver(target, cuda_driver)
    return target


def check_stock_plugins(trt, plugins: list[dict]) -> None:
    """Every TensorRT stock plugin node must name a creator this TensorRT registers (else the parser fails
    deep inside with "Plugin not found")."""
    registry = trt.get_plugin_registry()
    for p in plugins:
        if p["kind"] != "TensorRT stock":
            continue
        if registry.get_creator(p["op"], p["version"], p.get("namespace", "")) is None:
            raise VitdeployError(
                f"TensorRT {trt.__version__} has no {p['op']} version {p['version']} (the ONNX was rewritten for another TensorRT)",
                "rebuild from the model on this machine (vitdeploy build --model ...), which picks the version this TensorRT has",
            )


def _network(onnx_path: Path, prefer_aot: bool):
    """(builder, network, parser), strongly typed. With vitdeploy plugins, ask TensorRT to prefer
    their AOT implementation (needed when a plugin also defines a JIT `impl`)."""
    import tensorrt as trt
    from polygraphy.backend.trt import NetworkFromOnnxPath

    if not prefer_aot:
        return NetworkFromOnnxPath(str(onnx_path), strongly_typed=True)()
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    flags |= 1 << int(trt.NetworkDefinitionCreationFlag.PREFER_AOT_PYTHON_PLUGINS)
    builder = trt.Builder(logger())
    network = builder.create_network(flags)
    init_stock_plugins(trt)
    parser = trt.OnnxParser(network, logger())
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise VitdeployError(f"TensorRT cannot parse {onnx_path.name}: {errors[0] if errors else 'unknown error'}",
                             "run 'vitdeploy doctor'; rebuild the ONNX with --plugins off if a plugin is the cause")
    return builder, network, parser


def build_engine(onnx_path: Path, plan_path: Path, settings: EngineSettings, plugins: list[dict]) -> dict:
    """Build and save the plan; returns the manifest's engine record (TensorRT settings and versions)."""
    import tensorrt as trt
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, Profile

    from vitdeploy import machine
    from vitdeploy.plugins import ptx_target

    gpu = machine.primary_gpu() or {}
    target = plugin_ptx_target(settings, plugins, gpu, machine.probe().get("cuda_driver_api"))
    registered = register_plugins(plugins)
    init_stock_plugins(trt)
    check_stock_plugins(trt, plugins)
    timing = settings.timing_cache or default_timing_cache(trt.__version__, gpu.get("compute_capability"))
    timing.parent.mkdir(parents=True, exist_ok=True)
    profiles = []
    for prof in settings.profiles:
        p = Profile()
        for name, shapes in prof.items():
            p.add(name, min=shapes["min"], opt=shapes["opt"], max=shapes["max"])
        profiles.append(p)
    pools = {}
    if settings.workspace_gb:
        pools[trt.MemoryPoolType.WORKSPACE] = int(settings.workspace_gb * 2**30)
    kwargs = dict(
        profiles=profiles or None,
        load_timing_cache=str(timing) if timing.is_file() else None,
        memory_pool_limits=pools or None,
        version_compatible=settings.version_compatible or None,
    )
    if settings.hardware_compatibility != "none":
        kwargs["hardware_compatibility_level"] = getattr(trt.HardwareCompatibilityLevel, HW_COMPAT[settings.hardware_compatibility])
    if settings.dla_core is not None:
        kwargs.update(use_dla=True, allow_gpu_fallback=True)  # layers DLA cannot run stay on the GPU
    base_config = CreateConfig(**kwargs)

    def config(builder, network):
        cfg = base_config(builder, network)
        if settings.dla_core is not None:
            cfg.DLA_core = settings.dla_core
        return cfg

    ptx_target.reset()
    compile_for = ptx_target.compile_for(target) if target is not None else contextlib.nullcontext()
    try:
        with compile_for:  # every aot_impl TensorRT calls compiles for this target
            network = _network(onnx_path, prefer_aot=bool(registered))
            plan = EngineBytesFromNetwork(network, config=config, save_timing_cache=str(timing))()
    except VitdeployError:
        raise
    except Exception as e:
        raise VitdeployError(f"TensorRT could not build the engine: {str(e).splitlines()[0][:300]}",
                             "see the TensorRT log above; 'vitdeploy doctor' shows the environment") from None
    if plan is None:
        raise VitdeployError("TensorRT returned no engine", "see the TensorRT log above")
    with open(plan_path, "wb") as f:
        f.write(bytes(plan))
    return {
        "built": True,
        "tensorrt": trt.__version__,
        "gpu": gpu,
        "strongly_typed": True,
        "plugins_registered": registered,
        # per plugin: .target, pinned PTX ISA, largest shared memory, portability (manifest_check reads it)
        "plugin_ptx": ptx_target.compiled() if target is not None else {},
        **settings.to_dict(),
        "timing_cache": str(timing),
    }


def trtexec_shapes(manifest: dict) -> str:
    """` --minShapes=... --optShapes=... --maxShapes=...` for a dynamic-batch export ("" for a static one).

    Without them trtexec builds a batch-1-only engine from a dynamic-batch graph.
    """
    batch = manifest.get("batch") or {}
    inputs = (manifest.get("export") or {}).get("inputs") or []
    if not batch.get("dynamic") or not inputs:
        return ""
    return "".join(f" {flag}=" + ",".join(f"{i['name']}:" + "x".join(map(str, [batch[key], *i["shape"][1:]])) for i in inputs)
                   for key, flag in (("min", "--minShapes"), ("opt", "--optShapes"), ("max", "--maxShapes")))


def trtexec_command(onnx_path: Path, plan_path: Path, settings: EngineSettings) -> str:
    """The trtexec line that builds the same engine (for graphs without Python plugins).

    `--noTF32`: Polygraphy's CreateConfig clears the TF32 flag unless asked, trtexec sets it unless told.
    """
    args = ["trtexec", f"--onnx={onnx_path}", "--stronglyTyped", "--noTF32", f"--saveEngine={plan_path}"]
    for prof in settings.profiles[:1]:
        for key, flag in (("min", "--minShapes"), ("opt", "--optShapes"), ("max", "--maxShapes")):
            args.append(flag + "=" + ",".join(f"{n}:{'x'.join(map(str, s[key]))}" for n, s in prof.items()))
    if settings.workspace_gb:
        args.append(f"--memPoolSize=workspace:{int(settings.workspace_gb * 1024)}M")
    if settings.timing_cache:
        args.append(f"--timingCacheFile={settings.timing_cache}")
    if settings.hardware_compatibility != "none":
        args.append(f"--hardwareCompatibilityLevel={TRTEXEC_HW[settings.hardware_compatibility]}")
    if settings.version_compatible:
        args.append("--versionCompatible")
    if settings.dla_core is not None:
        args += [f"--useDLACore={settings.dla_core}", "--allowGPUFallback"]
    return " ".join(shlex.quote(a) for a in args)


def vitdeploy_command(onnx_path: Path, out_dir: Path, settings: EngineSettings) -> str:
    args = ["vitdeploy", "build", "--onnx", str(onnx_path), "-o", str(out_dir)]
    prof = settings.profiles[0] if settings.profiles else None
    if prof:
        s = next(iter(prof.values()))
        args += ["--dynamic-batch", f"{s['min'][0]}:{s['opt'][0]}:{s['max'][0]}"]
    if settings.target == "jetson":
        args += ["--target", "jetson"]
    elif settings.workspace_gb:
        args += ["--workspace", f"{settings.workspace_gb:g}"]
    if settings.hardware_compatibility != "none":
        args += ["--hardware-compat", settings.hardware_compatibility]
    if settings.version_compatible:
        args.append("--version-compatible")
    if settings.dla_core is not None:
        args += ["--dla-core", str(settings.dla_core)]
    return " ".join(shlex.quote(a) for a in args)


def target_commands(onnx_path: Path, plan_path: Path, settings: EngineSettings, plugins: list[dict]) -> list[str]:
    """Commands that build this engine on the target: vitdeploy always; trtexec when no Python plugin is needed."""
    cmds = [vitdeploy_command(onnx_path, plan_path.parent, settings)]
    if not any(p["kind"] == "vitdeploy AOT" for p in plugins):
        cmds.append(trtexec_command(onnx_path, plan_path, settings))
    return cmds
