"""`vitdeploy accuracy`: what a precision change costs, measured on real inputs."""
from __future__ import annotations

import sys

import click

from vitdeploy.commands.common import emit_json, json_option, json_to_stdout, renamed


def _same_file(a, b) -> bool:
    from pathlib import Path

    from vitdeploy.artifact import sha256_file

    return Path(a).resolve() == Path(b).resolve() or sha256_file(a) == sha256_file(b)


def _manifest_beside(path):
    from pathlib import Path

    from vitdeploy.artifact import manifest_beside

    return manifest_beside(Path(path).resolve())


NAMES = {"top1_agreement": "top-1 agreement", "detection_agreement": "detection agreement",
         "top1_drop": "top-1 drop", "map50_drop": "mAP@0.5 drop"}


def gate(res: dict, min_agreement: float | None, max_drop: float | None) -> list[str]:
    """The failed checks (empty: passed), as polygraphy's --check reports them."""
    failed = []
    detection = res.get("task") == "detection"
    agree_key, drop_key = ("detection_agreement", "map50_drop") if detection else ("top1_agreement", "top1_drop")
    if min_agreement is not None and agree_key in res and res[agree_key] < min_agreement:
        failed.append(f"{NAMES[agree_key]} {res[agree_key]:.2f}% < --min-agreement {min_agreement:g}%")
    if max_drop is not None and drop_key in res and res[drop_key] > max_drop:
        failed.append(f"{NAMES[drop_key]} {res[drop_key]:+.2f} points > --max-drop {max_drop:g}")
    return failed


@click.command("accuracy")
@click.argument("reference", metavar="REFERENCE.onnx", type=click.Path(dir_okay=False))
@click.argument("candidate", metavar="CANDIDATE.onnx", type=click.Path(dir_okay=False))
@click.option("--accuracy-data", "data_path", type=click.Path(),
              help="Held-out images (a folder, nested allowed) or a .npy/.npz of preprocessed NCHW arrays (.npz may hold "
                   "'labels'). Not the calibration set: agreement there says little about unseen images.")
@click.option("--labels", "labels_path", type=click.Path(dir_okay=False),
              help="Class ids, one per image (.npy, .json list or text): adds top-1/top-5 accuracy. Detectors: JSON, one "
                   "list per image of {\"label\": id, \"box\": [x0, y0, x1, y1]} as fractions of the image: adds mAP.")
@click.option("--accuracy-images", "num_images", type=int, help="Use only the first N images.")
@click.option("--run-batch", "batch", type=int, default=32, show_default=True,
              help="Images per ONNX Runtime run (a static-batch graph uses its own).")
@click.option("--min-agreement", type=click.FloatRange(0, 100), default=None,
              help="Exit 1 when top-1 (detectors: detection) agreement is below this percentage. Without it, ✔ marks "
                   "need 99%.")
@click.option("--max-drop", type=click.FloatRange(min=0), default=None,
              help="Exit 1 when the top-1 accuracy (detectors: mAP@0.5) drop exceeds this many points (needs labels).")
@json_option("the figures")
@renamed("--data", "data_path", "--accuracy-data", type=click.Path())
@renamed("--num-images", "num_images", "--accuracy-images", type=int)
@renamed("--batch", "batch", "--run-batch", type=int)
def command(reference, candidate, data_path, labels_path, num_images, batch, min_agreement, max_drop, json_out):
    """Compare CANDIDATE's predictions with REFERENCE's on the same images.

    Classifiers: top-1 agreement, logit cosine similarity and max error; with
    labels also top-1/top-5 accuracy of both and the drop in points. Detectors
    (Deformable DETR): per-query box IoU and score deltas, the share of the
    reference's detections the candidate reproduces, and with box labels mAP.
    Both graphs run in ONNX Runtime on the CPU. Exit 1 when a --min-agreement or
    --max-drop check fails (as polygraphy's --check does).

    \b
    Example:
      vitdeploy accuracy out/vit_s/model.onnx out/vit_s/model.int8.onnx --accuracy-data val.npz --min-agreement 97 --json acc.json
    """
    from pathlib import Path

    from rich.table import Table

    from vitdeploy.artifact import load_onnx
    from vitdeploy.calibration.accuracy import compare_models, input_shape, load_box_labels
    from vitdeploy.calibration.data import ImageFolder, load_data, load_labels, preprocessing_for
    from vitdeploy.console import console, stage
    from vitdeploy.errors import EXIT_REGRESSION, VitdeployError
    from vitdeploy.weights import banner, from_manifest, is_random

    json_path = json_out
    json_to_stdout(json_out)
    if data_path is None:
        raise VitdeployError("accuracy needs images", "pass --accuracy-data DIR (images, or a .npy/.npz)")
    for p in (reference, candidate):
        load_onnx(p, load_external_data=False)  # missing or unreadable: one line before anything runs
    if batch <= 0 or (num_images is not None and num_images <= 0):
        raise VitdeployError("--run-batch and --accuracy-images must be positive", "e.g. --run-batch 32")
    if _same_file(reference, candidate):
        raise VitdeployError(f"{Path(candidate).name} and {Path(reference).name} are the same graph: agreement would be a "
                             "meaningless 100%", "pass the plain export as REFERENCE and the converted graph as CANDIDATE")
    ref_manifest, cand_manifest = _manifest_beside(reference), _manifest_beside(candidate)
    weights = from_manifest(cand_manifest or ref_manifest)
    models = [((m or {}).get("model") or {}).get("alias") for m in (ref_manifest, cand_manifest)]
    if is_random(weights):
        banner(models[1] or models[0] or Path(candidate).name)
    if all(models) and models[0] != models[1]:
        console.print(f"[yellow]note:[/] {Path(reference).name} is {models[0]} and {Path(candidate).name} is {models[1]}: "
                      "different models, so agreement measures how different they are")
    if Path(data_path).is_dir():  # streamed: a validation folder need not fit in memory
        data = ImageFolder(data_path, preprocessing_for(reference), input_shape(reference), num_images)
    else:
        data = load_data(data_path, preprocessing_for(reference), input_shape(reference), num_images)
    labels = data.labels
    if labels_path:
        if Path(labels_path).suffix == ".json" and _is_box_json(labels_path):
            labels = load_box_labels(labels_path)
        else:
            labels = load_labels(labels_path)
        labels = labels[:num_images] if num_images else labels
    with stage("accuracy") as st:
        res = compare_models(reference, candidate, data, labels, batch=batch, show_progress=True)
        skipped = f", {data.skipped} unreadable files skipped" if getattr(data, "skipped", 0) else ""
        st.detail = f"{res['images']} images" + (" with labels" if labels is not None else "") + skipped
        st.unjudged()  # measured, not judged: the verdict line below says whether the figures pass
    if labels is not None and getattr(data, "skipped", 0):
        raise VitdeployError(f"{data.skipped} image files could not be read, so the labels no longer line up",
                             "remove the unreadable files or run without --labels")
    if max_drop is not None and not any(k in res for k in ("top1_drop", "map50_drop")):
        raise VitdeployError("--max-drop needs labels", "pass --labels, or a .npz with 'labels'")
    table = Table(title=f"{Path(candidate).name} vs {Path(reference).name} ({res['images']} images)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    if res.get("task") == "detection":
        rd = res["reference_detections"]
        table.add_row("detection agreement", f"{res['detection_agreement']:.2f} % of {rd['count']} ({rd['selection']})")
        table.add_row("matched box IoU (mean)", f"{res['matched_iou_mean']:.4f}")
        table.add_row("matched score delta (mean / max)", f"{res['matched_score_delta_mean']:.4f} / {res['matched_score_delta_max']:.4f}")
        table.add_row("per-query box IoU (mean / min)", f"{res['query_box_iou_mean']:.4f} / {res['query_box_iou_min']:.4f}")
        table.add_row("sigmoid score delta (mean / max)", f"{res['score_delta_mean']:.2e} / {res['score_delta_max']:.2e}")
        if "candidate_map50" in res:
            table.add_row("mAP@0.5 reference / candidate", f"{res['reference_map50']:.2f} / {res['candidate_map50']:.2f} %")
            table.add_row("mAP@0.5 drop", f"{res['map50_drop']:+.2f} points")
            table.add_row("mAP@0.5:0.95 drop", f"{res['map50_95_drop']:+.2f} points")
    else:
        table.add_row("top-1 agreement", f"{res['top1_agreement']:.2f} %")
        if labels is not None:
            for k in (1, 5):
                table.add_row(f"top-{k} reference", f"{res[f'reference_top{k}']:.2f} %")
                table.add_row(f"top-{k} candidate", f"{res[f'candidate_top{k}']:.2f} %")
                table.add_row(f"top-{k} drop", f"{res[f'top{k}_drop']:+.2f} points")
        table.add_row("logit cosine (mean / min)", f"{res['cosine_mean']:.6f} / {res['cosine_min']:.6f}")
        table.add_row("max abs error", f"{res['max_abs_error']:.4g}")
    console.print(table)
    failed = gate(res, min_agreement, max_drop)
    emit_json({"reference": str(reference), "candidate": str(candidate), "data": str(data_path), "weights": weights, **res,
               "checks": {"min_agreement": min_agreement, "max_drop": max_drop, "failed": failed}}, json_path)
    if failed:
        console.print(f"[bold red]✘ {'; '.join(failed)}[/]")
        sys.exit(EXIT_REGRESSION)
    _verdict(res, min_agreement, max_drop, weights, console)


def _verdict(res: dict, min_agreement, max_drop, weights, console) -> None:
    from vitdeploy.bench.accuracy import DEFAULT_MIN_AGREEMENT
    from vitdeploy.weights import is_random

    key = "detection_agreement" if res.get("task") == "detection" else "top1_agreement"
    value = res.get(key)
    threshold = DEFAULT_MIN_AGREEMENT if min_agreement is None else min_agreement
    checks = [c for c, v in (("--min-agreement", min_agreement), ("--max-drop", max_drop)) if v is not None]
    name = NAMES[key]
    if is_random(weights):
        console.print(f"• {name} {value:.2f}%: random weights, not judged")
    elif value is not None and value >= threshold:
        console.print(f"[green]✔[/] {name} {value:.2f}% >= {threshold:g}%" + (f" ({', '.join(checks)} passed)" if checks else ""))
    elif checks:
        console.print(f"• {name} {value:.2f}% (below the ✔ mark of {DEFAULT_MIN_AGREEMENT:g}%; {', '.join(checks)} passed)")
    else:
        console.print(f"• {name} {value:.2f}% is below {threshold:g}%: not gated (add --min-agreement / --max-drop to exit 1)")


def _is_box_json(path) -> bool:
    import json
    from pathlib import Path

    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(raw, list) and any(isinstance(x, list) for x in raw)
