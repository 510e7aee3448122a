"""`vitdeploy calibrate`: INT8 calibration on the CPU -> Q/DQ ONNX + reusable calibration cache."""
from __future__ import annotations

import click

from vitdeploy.commands.options import IMG_SIZE, MODEL_HELP, renamed

METHODS = ["entropy", "percentile", "minmax"]


@click.command("calibrate")
@click.option("--model", "alias", help=MODEL_HELP + " Exported first.")
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False), help="FP32 ONNX to quantize (instead of --model).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Weights for --model (.safetensors or .pth).")
@click.option("--num-classes", type=int, help="timm models: classifier size of a fine-tuned head.")
@click.option("--img-size", type=IMG_SIZE, metavar="H [W]",
              help="Input size for --model: H W, HxW, or one number for a square (default: the model's).")
@click.option("--dynamic-batch", metavar="MIN:OPT:MAX", help="Export --model with a dynamic batch (default: static 1, "
              "as 'export' and 'build').")
@click.option("--calib-data", "data_path", type=click.Path(),
              help="Calibration images: a folder (nested allowed) or a .npy/.npz of preprocessed NCHW arrays.")
@click.option("--calib-method", "method", type=click.Choice(METHODS), default="entropy", show_default=True,
              help="Range calibration.")
@click.option("--calib-images", "num_images", type=int, default=256, show_default=True, help="Calibrate on the first N images.")
@click.option("--run-batch", "batch", type=int, default=8, show_default=True,
              help="Images per ONNX Runtime run (a static-batch graph uses its own).")
@click.option("--int8-exclude", "exclude", multiple=True, metavar="PATTERN",
              help="Keep matching MatMul/Gemm/Conv in FP16: node name or module path glob, e.g. 'blocks.0.*' (repeatable).")
@click.option("--quantize-first-last", is_flag=True, help="Also quantize the first (patch embedding) and last (head) layers.")
@click.option("--calib-cache", "cache_path", type=click.Path(dir_okay=False),
              help="Reuse this calibration_cache.json (must come from the same ONNX and method).")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False), help="Output directory.")
@renamed("--data", "data_path", "--calib-data", type=click.Path())
@renamed("--method", "method", "--calib-method", type=click.Choice(METHODS))
@renamed("--num-images", "num_images", "--calib-images", type=int)
@renamed("--batch", "batch", "--run-batch", type=int)
@renamed("--cache", "cache_path", "--calib-cache", type=click.Path(dir_okay=False))
def command(alias, onnx_path, checkpoint, num_classes, img_size, dynamic_batch, data_path, method, num_images, batch, exclude,
            quantize_first_last, cache_path, out_dir):
    """Calibrate a model with ONNX Runtime and write DIR/model.int8.onnx (Q/DQ + FP16).

    Q/DQ goes on the inputs of Linear layers (MatMul/Gemm with a constant weight)
    and Convs only (weights per channel, activations per tensor, symmetric);
    attention BMMs, LayerNorm, Softmax, GELU, residual adds and plugin nodes stay FP16. Also writes DIR/calibration_cache.json (tensor
    ranges keyed by the model's sha256) and DIR/calibration.json (what was
    quantized, and INT8-vs-FP32 agreement on the calibration images).

    \b
    Examples:
      vitdeploy calibrate --model vit_s --calib-data ~/imagenet/val -o out/vit_s_int8
      vitdeploy calibrate --onnx out/swin_t/model.onnx --calib-data calib.npz --calib-method percentile -o out/swin_t
    """
    from pathlib import Path

    from vitdeploy.errors import VitdeployError

    if bool(alias) == bool(onnx_path):
        raise VitdeployError("pass exactly one of --model and --onnx", "e.g. --model vit_t or --onnx model.onnx")
    if data_path is None:
        raise VitdeployError("calibration needs images", "pass --calib-data DIR (a folder of images or a .npy/.npz)")
    if num_images <= 0 or batch <= 0:
        raise VitdeployError("--calib-images and --run-batch must be positive", "e.g. --calib-images 256 --run-batch 8")
    if num_classes is not None and not alias:
        raise VitdeployError("--num-classes applies to --model only", "the ONNX given with --onnx is used as is")
    if dynamic_batch and not alias:
        raise VitdeployError("--dynamic-batch applies to --model only", "the ONNX given with --onnx is used as is")
    if not Path(data_path).exists():
        raise VitdeployError(f"calibration data {data_path} does not exist", "pass a folder of images or a .npy/.npz file")
    from vitdeploy.pipeline.calibrate import run_calibrate

    from vitdeploy.deploy.export import BatchSpec

    export_batch = BatchSpec.parse(dynamic_batch) if dynamic_batch else BatchSpec()
    from vitdeploy.commands.options import parse_img_size

    run_calibrate(alias=alias, onnx_path=onnx_path, checkpoint=checkpoint, img_size=parse_img_size(img_size), data_path=data_path,
                  num_classes=num_classes,
                  export_batch=export_batch,
                  method=method, num_images=num_images, batch=batch, exclude=list(exclude),
                  quantize_first_last=quantize_first_last, cache_path=cache_path, out_dir=out_dir)
