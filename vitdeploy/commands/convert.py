"""`vitdeploy convert`: FP32 ONNX -> FP16 ONNX with explicit casts (TensorRT strongly typed)."""
from __future__ import annotations

import click


@click.command("convert")
@click.argument("onnx_in", metavar="IN.onnx", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "onnx_out", required=True, type=click.Path(dir_okay=False), help="Output ONNX file.")
@click.option("--fp16", is_flag=True, help="Convert to FP16 (the only conversion today; required).")
@click.option("--keep-io-fp32/--no-keep-io-fp32", default=True, show_default=True,
              help="Keep graph inputs/outputs FP32 (casts inside the graph).")
@click.option("--fp32-op", "fp32_ops", multiple=True, metavar="OP",
              help="Extra op type to keep in FP32 (repeatable), e.g. Softmax; normalisations (LayerNorm, GroupNorm, InstanceNorm, ReduceMean, Pow) always are.")
def command(onnx_in, onnx_out, fp16, keep_io_fp32, fp32_ops):
    """Write an FP16 copy of IN.onnx: normalisations stay FP32, plugin nodes FP16.

    Uses ONNX Runtime's float16 converter, checks every node sees one float type,
    and reports how far the FP16 graph's outputs are from the FP32 graph's on
    random inputs.

    \b
    Example:
      vitdeploy convert out/swin_t/model.onnx -o out/swin_t/model.fp16.onnx --fp16
    """
    from pathlib import Path

    from vitdeploy.artifact import atomic_write_bytes, load_onnx
    from vitdeploy.calibration.precision import DEFAULT_FP32_OPS, convert_fp16
    from vitdeploy.console import console, next_steps, stage
    from vitdeploy.errors import VitdeployError
    from vitdeploy.plugins.spec import NAMESPACE

    if not fp16:
        raise VitdeployError("nothing to convert", "pass --fp16")
    from vitdeploy.weights import banner, beside, is_random

    if is_random(beside(onnx_in)):
        banner(onnx_in)
    src, dst = Path(onnx_in), Path(onnx_out)
    if not src.is_file():
        raise VitdeployError(f"ONNX file {src} does not exist", "check the path")
    if src.resolve() == dst.resolve():
        raise VitdeployError("-o must differ from the input file", "write the FP16 graph next to the FP32 one")
    if not dst.parent.is_dir():
        raise VitdeployError(f"output directory {dst.parent} does not exist", "create it first")
    with stage("fp16") as st:
        model = load_onnx(src)
        out, summary = convert_fp16(model, keep_io_fp32=keep_io_fp32, fp32_ops=tuple(DEFAULT_FP32_OPS) + tuple(fp32_ops))
        fp32 = ", ".join(f"{k}×{v}" for k, v in summary["fp32_ops"].items()) or "none"
        st.detail = f"{sum(summary['fp16_ops'].values())} nodes FP16, FP32: {fp32}, {summary['casts']} casts"
    with stage("check") as st:
        st.detail = _check(src, out)
    atomic_write_bytes(dst, out.SerializeToString())
    console.print(f"[green]✔[/] wrote {dst}")
    # trtexec cannot load vitdeploy's Python (AOT) plugins: graphs with plugin nodes are built by vitdeploy.
    has_plugins = any(n.domain == NAMESPACE for n in out.graph.node)
    engine = f"vitdeploy build --onnx {dst} -o {dst.parent}" if has_plugins else f"trtexec --onnx={dst} --stronglyTyped"
    next_steps([f"vitdeploy accuracy {src} {dst} --accuracy-data DIR", engine])


def _check(src, model) -> str:
    """FP16 vs FP32 on two random images (batch permitting), in ONNX Runtime."""
    from vitdeploy.calibration.accuracy import compare_logits
    from vitdeploy.onnxgraph import model_input
    from vitdeploy.onnxrt import session
    from vitdeploy.parity import random_images

    _, shape = model_input(model)
    if len(shape) != 4 or not all(isinstance(d, int) and d > 0 for d in shape[1:]):
        return "skipped (input is not a static C x H x W image)"
    n = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else 2
    x = random_images(n, (shape[2], shape[3]), channels=shape[1])
    sref = session(str(src))
    ref = sref.run(None, {sref.get_inputs()[0].name: x})[0]
    s = session(model)
    inp = s.get_inputs()[0]
    got = s.run(None, {inp.name: x.astype("float16") if "float16" in inp.type else x})[0]  # --no-keep-io-fp32
    r = compare_logits(ref.reshape(n, -1), got.astype("float32").reshape(n, -1))
    return f"runs in ONNX Runtime; vs FP32 max-abs {r['max_abs_error']:.2e}, cosine {r['cosine_min']:.6f}"
