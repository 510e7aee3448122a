"""`vitdeploy build`: the whole pipeline, model (or ONNX) to TensorRT engine."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from vitdeploy.commands.options import (
    MODEL_HELP, check_weights_flags, model_source_options, opset_pinned, parse_batch, parse_img_size,
)


@click.command("build")
@click.option("--model", "alias", help=MODEL_HELP)
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False), help="Start from this ONNX instead of a model.")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), help="Build directory (default build/ALIAS).")
@click.option("--fp16", is_flag=True, help="FP16 graph (explicit casts; I/O stays FP32).")
@click.option("--int8", is_flag=True, help="INT8 Q/DQ graph calibrated on --calib-data.")
@click.option("--calib-data", type=click.Path(exists=False), help="Calibration images (folder) or .npy/.npz.")
@click.option("--calib-method", type=click.Choice(["entropy", "minmax", "percentile"]), default="entropy", show_default=True)
@click.option("--calib-images", type=int, help="Use at most N calibration images.")
@click.option("--int8-exclude", multiple=True, metavar="PATTERN",
              help="Keep matching MatMul/Gemm/Conv in FP16: node name or module path glob, e.g. 'blocks.0.*' (repeatable).")
@click.option("--quantize-first-last", is_flag=True, help="Also quantize the first (patch embedding) and last (head) layers.")
@click.option("--plugins", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="on: vitdeploy plugins (TensorRT >= 10.9); off: plugin-free rewrite; auto: by TensorRT version.")
@click.option("--target", type=click.Choice(["auto", "gpu", "jetson"]), default="auto", show_default=True,
              help="jetson: FP16 by default, 1 GiB workspace, plugin-free rewrite for JetPack 6.")
@click.option("--workspace", "workspace_gb", type=float, help="Builder workspace limit in GiB.")
@click.option("--dla-core", type=int, help="Jetson: run what DLA supports on this core, the rest on the GPU.")
@click.option("--timing-cache", type=click.Path(dir_okay=False), help="Timing cache file (default: one per TensorRT/GPU in ~/.cache/vitdeploy).")
@click.option("--hardware-compat", type=click.Choice(["none", "ampere_plus", "same_compute_capability"]),
              default="none", show_default=True, help="Let the engine run on other GPUs (slower).")
@click.option("--version-compatible", is_flag=True, help="Let the engine run on later TensorRT of the same major.")
@click.option("--msda-impl", type=click.Choice(["stock", "vitdeploy"]), default="stock", show_default=True,
              help="Deformable DETR: TensorRT's stock deformable-attention plugin or vitdeploy's Triton one.")
@click.option("--accuracy-data", type=click.Path(exists=False),
              help="Held-out images (folder or .npy/.npz) for the accuracy step. Default: the calibration images "
                   "(not held out) with --int8, else 8 seeded random images (agreement on noise).")
@click.option("--min-agreement", type=float, default=99.0, show_default=True,
              help="Top-1 / detection agreement (%) the accuracy step needs for its ✔ (below it: a neutral mark).")
@click.option("--no-engine", is_flag=True, help="Stop after the ONNX steps.")
@click.option("--require-engine", is_flag=True,
              help="Exit 4 when no engine could be built here (default: exit 0 with the 'engine skipped' line).")
@click.option("--triton-repo", type=click.Path(file_okay=False), metavar="REPO",
              help="Then write a Triton model repository entry (as 'vitdeploy package DIR --triton-repo REPO').")
@click.option("--reduced", is_flag=True,
              help="Test-sized model: Deformable DETR (2+2 layers, d_model 64, ResNet-18), RT-DETR (v2), D-FINE, "
                   "Mask2Former (d_model 32, their levels and points per level), Swin / Swin V2 (depths 1-1-2-1, "
                   "32 channels) or a windowed encoder (sam_vit_b, mobile_sam, hiera_t, maxvit_t, twins_svt_s).")
@click.option("--preprocess", "preprocess_file", type=click.Path(dir_okay=False), metavar="FILE.json",
              help="The model's preprocessing (mean/std, resize, crop), or a Hugging Face preprocessor_config.json; "
                   "recorded in the manifest for infer, accuracy and package (docs/serving.md). Needed for --onnx "
                   "models without a manifest.")
@click.option("--labels", "labels_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Class names: one per line, a JSON list, or an index -> name JSON (a config.json's id2label).")
@model_source_options
@click.pass_context
def command(ctx, alias, onnx_path, out_dir, fp16, int8, calib_data, calib_method, calib_images, int8_exclude,
            quantize_first_last, plugins, target, workspace_gb, dla_core, timing_cache, hardware_compat,
            version_compatible, msda_impl, accuracy_data, min_agreement, no_engine, require_engine, triton_repo, reduced,
            preprocess_file, labels_file, checkpoint, pretrained, num_classes, input_names, output_names, img_size, batch,
            dynamic_batch, opset, exporter):
    """Export, rewrite, set precision, check accuracy and build a TensorRT engine.

    Each step is cached in the build directory by a hash of its inputs: a rerun
    skips what did not change. Without TensorRT everything up to the engine is
    built and verified, manifest.json is written, and the command ends with the
    line to run on the target (exit 0; exit 4 with --require-engine).

    \b
    Examples:
      vitdeploy build --model swin_t --fp16 -o build/swin_t
      vitdeploy build --model vit_b --int8 --calib-data imgs/ --dynamic-batch 1:8:32
      vitdeploy build --model swinv2_t --img-size 240 320 --fp16 -o build/swinv2_t_240x320
      vitdeploy build --onnx build/swin_t/model.fp16.onnx --target jetson -o build/swin_t
      vitdeploy build --model timm/maxvit_tiny_tf_224 --checkpoint ft.pth --num-classes 10 --fp16
      vitdeploy build --model ./hf_detr --fp16            # a save_pretrained directory
      vitdeploy build --model net.py:build --img-size 224 --fp16
    """
    from vitdeploy.console import console, next_steps
    from vitdeploy.pipeline import BuildOptions, run_build
    from vitdeploy.errors import EXIT_ENGINE_SKIPPED, VitdeployError

    if no_engine and require_engine:
        raise VitdeployError("--no-engine and --require-engine contradict each other", "pick one")
    from vitdeploy.sources import short_name

    if reduced and alias:
        from vitdeploy.models import REGISTRY, check_reduced

        if alias in REGISTRY:
            check_reduced(alias)
    if triton_repo:
        from vitdeploy.deploy.serving.triton import check_name, model_config_pb2

        model_config_pb2()  # before minutes of building, not after
        if alias:
            check_name(short_name(alias))

    if onnx_path:
        given = [f"--{n.replace('_', '-')}" for n in ("checkpoint", "pretrained", "img_size", "opset", "exporter", "reduced",
                                                      "num_classes", "input_names", "output_names")
                 if ctx.get_parameter_source(n) == click.core.ParameterSource.COMMANDLINE]
        if given:
            raise VitdeployError(f"{', '.join(given)} only apply with --model", "the ONNX given with --onnx is used as is")
    check_weights_flags(checkpoint, pretrained)
    if preprocess_file or labels_file:  # the files' format, before minutes of work (sizes are checked after export)
        from vitdeploy.deploy.preprocess import load_labels_file, load_preprocess_file

        if preprocess_file:
            load_preprocess_file(preprocess_file)
        if labels_file:
            load_labels_file(labels_file)
    batch_spec = None if batch is None and dynamic_batch is None else parse_batch(batch, dynamic_batch)
    if out_dir is None:
        out_dir = f"build/{short_name(alias)}" if alias else str(Path(onnx_path).parent) if onnx_path else "build"
    opts = BuildOptions(
        out_dir=Path(out_dir), alias=alias, onnx=Path(onnx_path) if onnx_path else None, fp16=fp16, int8=int8,
        calib_data=Path(calib_data) if calib_data else None, calib_method=calib_method, calib_images=calib_images,
        int8_exclude=tuple(int8_exclude), quantize_first_last=quantize_first_last,
        plugins=plugins, target=target, batch=batch_spec, workspace_gb=workspace_gb, dla_core=dla_core,
        timing_cache=Path(timing_cache) if timing_cache else None, hardware_compat=hardware_compat,
        version_compatible=version_compatible, no_engine=no_engine, img_size=parse_img_size(img_size),
        checkpoint=checkpoint, pretrained=pretrained, opset=opset, exporter=exporter, msda_impl=msda_impl,
        small=reduced, accuracy_data=Path(accuracy_data) if accuracy_data else None, min_agreement=min_agreement,
        num_classes=num_classes, input_names=input_names, output_names=output_names, opset_pinned=opset_pinned(),
        preprocess=Path(preprocess_file) if preprocess_file else None, labels=Path(labels_file) if labels_file else None,
    )
    res = run_build(opts)
    out = res.out_dir
    if onnx_path:
        from vitdeploy.weights import banner, from_manifest, is_random

        if is_random(from_manifest(res.manifest)):
            banner(str(onnx_path))
    console.print(f"[green]✔[/] wrote {out / 'manifest.json'} (final graph: {res.final_onnx.name})")
    if triton_repo:
        from vitdeploy.commands.package import package

        package(out, triton_repo=Path(triton_repo), show_next=False)
    artifact = res.engine or out
    # INT8: the documented accuracy path is held-out data, through the directory (its manifest names the export).
    held_out = int8 and not accuracy_data
    bench = f"vitdeploy bench {out} --accuracy-data HELD_OUT_IMAGES/" if held_out else f"vitdeploy bench {artifact}"
    nxt = [f"vitdeploy infer {artifact} --image IMAGE.jpg", bench]
    if res.engine:
        nxt.append(f"trtexec --loadEngine={res.engine} --useCudaGraph")
    if triton_repo:
        nxt.append(f"tritonserver --model-repository {triton_repo}")
    else:
        nxt.append(f"vitdeploy package {out} --triton-repo models")
    if res.profile_command:
        nxt.append(res.profile_command)
    next_steps(nxt)
    if res.profile_hint:
        from rich.markup import escape

        console.print(f"  [dim]{escape(res.profile_hint)}[/]")
    if res.engine is None and not no_engine:
        console.print(
            f"[yellow]engine skipped:[/] {res.skipped_reason}; on the target run: {res.target_commands[0]}"
            + (f"  (or: {res.target_commands[1]})" if len(res.target_commands) > 1 else "")
        )
        if require_engine:
            sys.exit(EXIT_ENGINE_SKIPPED)  # SystemExit passes through Click and vitdeploy.cli.main unchanged
