"""Build options, their validation and the target defaults (before any expensive work)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vitdeploy.console import console
from vitdeploy.deploy.export import BatchSpec
from vitdeploy.errors import VitdeployError

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
    accuracy_data: Path | None = None  # held-out images for the accuracy step (else the calibration set / random)
    min_agreement: float = 99.0  # agreement (%) the accuracy step needs for its ✔
    msda_impl: str = "stock"  # stock TensorRT plugin | vitdeploy's Triton plugin
    num_classes: int | None = None  # --num-classes: a timm classifier of this size (0: pooled features)
    input_names: str | None = None  # --input-names: the graph's input name
    output_names: str | None = None  # --output-names: comma-separated output names
    opset_pinned: bool = False  # --opset given: the export tries no other opset
    preprocess: Path | None = None  # --preprocess FILE.json: the model's preprocessing (deploy/preprocess.py)
    labels: Path | None = None  # --labels FILE: class names


@dataclass
class BuildResult:
    out_dir: Path
    manifest: dict
    final_onnx: Path
    engine: Path | None
    skipped_reason: str | None = None  # why there is no engine (None when built)
    target_commands: list[str] = field(default_factory=list)
    profile_command: str | None = None  # trtexec with detailed layer info: do the attention blocks fuse?
    profile_hint: str | None = None  # what to look for in that layer info



def _check_onnx_batch(path: Path) -> None:
    """A given ONNX with a symbolic batch needs a range for its optimisation profile: from the
    manifest beside it, or from --dynamic-batch / --batch. Without one the engine would silently be
    built for batch 1 only."""
    from vitdeploy.artifact import load_onnx, manifest_beside

    if not path.is_file():
        raise VitdeployError(f"ONNX file {path} does not exist", "check the --onnx path")
    graph = load_onnx(path, hint="pass an .onnx file", load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    dims = [i.type.tensor_type.shape.dim for i in inputs]
    symbolic = [i.name for i, d in zip(inputs, dims) if d and not d[0].HasField("dim_value")]
    if not symbolic:
        return
    recorded = (manifest_beside(path) or {}).get("batch")
    if not recorded:
        raise VitdeployError(f"{path.name} has a dynamic batch dimension (input '{symbolic[0]}') and no manifest "
                             "beside it says its range", "pass --dynamic-batch MIN:OPT:MAX (e.g. 1:8:32) or --batch N")


def model_info(opts: BuildOptions):
    """The ModelInfo `--model` and its options stand for (vitdeploy.sources): alias, timm, Hugging Face, Python."""
    from vitdeploy.sources import resolve_request

    return resolve_request(opts.alias, num_classes=opts.num_classes, input_names=opts.input_names,
                           output_names=opts.output_names, pretrained=opts.pretrained, img_size=opts.img_size,
                           checkpoint=opts.checkpoint, small=opts.small)


def resolve(opts: BuildOptions) -> tuple[BuildOptions, dict]:
    """Check flag combinations and fill target defaults; returns (opts, target record)."""
    from vitdeploy import machine

    if bool(opts.alias) == bool(opts.onnx):
        raise VitdeployError("pass exactly one of --model and --onnx", "e.g. --model swin_t or --onnx model.onnx")
    if opts.int8 and not opts.calib_data:
        raise VitdeployError("--int8 needs calibration images", "add --calib-data DIR (a folder of images or a .npz)")
    if opts.calib_data and not opts.int8:
        raise VitdeployError("--calib-data is only used with --int8", "add --int8 or drop --calib-data")
    if opts.calib_data and not Path(opts.calib_data).exists():  # before minutes of export, not after
        raise VitdeployError(f"calibration data {opts.calib_data} does not exist", "pass a folder of images or a .npz")
    if opts.accuracy_data and not Path(opts.accuracy_data).exists():
        raise VitdeployError(f"accuracy data {opts.accuracy_data} does not exist", "pass a folder of held-out images or a .npz")
    if not 0 <= opts.min_agreement <= 100:
        raise VitdeployError(f"--min-agreement must be a percentage, got {opts.min_agreement:g}", "e.g. --min-agreement 99")
    if opts.calib_images is not None and opts.calib_images < 1:
        raise VitdeployError(f"--calib-images must be at least 1, got {opts.calib_images}", "e.g. --calib-images 256")
    if (opts.int8_exclude or opts.quantize_first_last) and not opts.int8:
        raise VitdeployError("--int8-exclude and --quantize-first-last are only used with --int8", "add --int8")
    if opts.alias:
        from vitdeploy.models import check_exporter, check_input_size

        info = model_info(opts)  # an unknown model: one line, before anything is written
        if opts.img_size:
            check_input_size(info, opts.img_size)
        check_exporter(info, opts.exporter)
    elif opts.batch is None:
        _check_onnx_batch(Path(opts.onnx))
    if opts.workspace_gb is not None and opts.workspace_gb <= 0:
        raise VitdeployError(f"--workspace must be positive, got {opts.workspace_gb:g}", "e.g. --workspace 4")
    env = machine.probe()
    target = opts.target
    if target == "auto":
        target = "jetson" if machine.is_jetson(env) else "gpu"
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
        from vitdeploy.machine import supports_dla, tensorrt_version

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


