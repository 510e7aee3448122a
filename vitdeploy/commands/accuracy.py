"""`vitdeploy accuracy`: what a precision change costs, measured on real inputs."""
from __future__ import annotations

import click

from vitdeploy.commands.common import emit_json, json_option, json_to_stdout, renamed


@click.command("accuracy")
@click.argument("reference", metavar="REFERENCE.onnx", type=click.Path(dir_okay=False))
@click.argument("candidate", metavar="CANDIDATE.onnx", type=click.Path(dir_okay=False))
@click.option("--accuracy-data", "data_path", type=click.Path(),
              help="Folder of images (nested allowed) or a .npy/.npz of preprocessed NCHW arrays (.npz may hold 'labels').")
@click.option("--labels", "labels_path", type=click.Path(dir_okay=False),
              help="Class ids, one per image (.npy, .json list or text); adds top-1/top-5 accuracy.")
@click.option("--accuracy-images", "num_images", type=int, help="Use only the first N images.")
@click.option("--run-batch", "batch", type=int, default=32, show_default=True,
              help="Images per ONNX Runtime run (a static-batch graph uses its own).")
@json_option("the figures")
@renamed("--data", "data_path", "--accuracy-data", type=click.Path())
@renamed("--num-images", "num_images", "--accuracy-images", type=int)
@renamed("--batch", "batch", "--run-batch", type=int)
def command(reference, candidate, data_path, labels_path, num_images, batch, json_out):
    """Compare CANDIDATE's predictions with REFERENCE's on the same images.

    Prints top-1 agreement, logit cosine similarity and max error; with labels
    also top-1/top-5 accuracy of both and the drop in points. Both graphs run
    in ONNX Runtime on the CPU.

    \b
    Example:
      vitdeploy accuracy out/vit_s/model.onnx out/vit_s/model.int8.onnx --accuracy-data val.npz --json acc.json
    """
    from pathlib import Path

    from rich.table import Table

    from vitdeploy.calibration.accuracy import compare_models, input_shape
    from vitdeploy.calibration.data import ImageFolder, load_data, load_labels, preprocessing_for
    from vitdeploy.console import console, stage
    from vitdeploy.errors import VitdeployError

    json_path = json_out
    json_to_stdout(json_out)
    if data_path is None:
        raise VitdeployError("accuracy needs images", "pass --accuracy-data DIR (images, or a .npy/.npz)")
    for p in (reference, candidate):
        if not Path(p).is_file():
            raise VitdeployError(f"ONNX file {p} does not exist", "check the path")
    if batch <= 0 or (num_images is not None and num_images <= 0):
        raise VitdeployError("--run-batch and --accuracy-images must be positive", "e.g. --run-batch 32")
    if Path(data_path).is_dir():  # streamed: a validation folder need not fit in memory
        data = ImageFolder(data_path, preprocessing_for(reference), input_shape(reference), num_images)
    else:
        data = load_data(data_path, preprocessing_for(reference), input_shape(reference), num_images)
    labels = data.labels
    if labels_path:
        labels = load_labels(labels_path)
        labels = labels[:num_images] if num_images else labels
    with stage("accuracy") as st:
        res = compare_models(reference, candidate, data, labels, batch=batch, show_progress=True)
        skipped = f", {data.skipped} unreadable files skipped" if getattr(data, "skipped", 0) else ""
        st.detail = f"{res['images']} images" + (" with labels" if labels is not None else "") + skipped
    if labels is not None and getattr(data, "skipped", 0):
        raise VitdeployError(f"{data.skipped} image files could not be read, so the labels no longer line up",
                             "remove the unreadable files or run without --labels")
    table = Table(title=f"{Path(candidate).name} vs {Path(reference).name} ({res['images']} images)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("top-1 agreement", f"{res['top1_agreement']:.2f} %")
    if labels is not None:
        for k in (1, 5):
            table.add_row(f"top-{k} reference", f"{res[f'reference_top{k}']:.2f} %")
            table.add_row(f"top-{k} candidate", f"{res[f'candidate_top{k}']:.2f} %")
            table.add_row(f"top-{k} drop", f"{res[f'top{k}_drop']:+.2f} points")
    table.add_row("logit cosine (mean / min)", f"{res['cosine_mean']:.6f} / {res['cosine_min']:.6f}")
    table.add_row("max abs error", f"{res['max_abs_error']:.4g}")
    console.print(table)
    emit_json({"reference": str(reference), "candidate": str(candidate), "data": str(data_path), **res}, json_path)
