"""`vitdeploy calibrate`: INT8 on its own: (export) -> load data -> calibrate -> check -> publish.

The Q/DQ graph is `calibration.quantization.quantize_int8`, as in the build's precision step; this
adds the calibration cache reuse, the check on the calibration images, calibration.json and the
manifest update.
"""
from __future__ import annotations

from pathlib import Path

from vitdeploy.console import console, next_steps, stage
from vitdeploy.errors import VitdeployError

INT8_NAME = "model.int8.onnx"
CACHE_NAME = "calibration_cache.json"
REPORT_NAME = "calibration.json"
CHECK_IMAGES = 64


def run_calibrate(*, alias=None, onnx_path=None, checkpoint=None, img_size=None, data_path, method="entropy",
                  num_images=256, batch=8, exclude=(), quantize_first_last=False, cache_path=None, out_dir,
                  export_batch=None, num_classes=None) -> dict:
    from vitdeploy.artifact import MANIFEST_NAME, atomic_write_json, load_manifest, load_onnx, manifest_beside, staging
    from vitdeploy.calibration.accuracy import compare_models
    from vitdeploy.calibration.cache import load_cache, save_cache
    from vitdeploy.calibration.data import load_data, preprocessing_for
    from vitdeploy.calibration.quantization import quantize_int8
    from vitdeploy.onnxgraph import model_input

    out = Path(out_dir)
    if alias:
        from vitdeploy.deploy.export import BatchSpec
        from vitdeploy.pipeline.export import run_export

        size = ((img_size, img_size) if isinstance(img_size, int) else tuple(img_size)) if img_size else None
        run_export(alias, str(out), img_size=size, batch=export_batch or BatchSpec(),  # as `export` and `build`
                   checkpoint=checkpoint, num_classes=num_classes, show_next=False)
        onnx_path = out / "model.onnx"
        preprocessing = load_manifest(out).get("preprocessing")
    else:
        onnx_path = Path(onnx_path)
        if not onnx_path.is_file():
            raise VitdeployError(f"ONNX file {onnx_path} does not exist", "check the --onnx path")
        preprocessing = preprocessing_for(onnx_path)
    from vitdeploy.weights import banner, beside, from_manifest, is_random

    weights = from_manifest(load_manifest(out)) if alias else beside(onnx_path)
    if is_random(weights) and not alias:  # run_export said it already for --model
        banner(str(onnx_path))
    cache = load_cache(cache_path) if cache_path else None
    in_shape = model_input(load_onnx(onnx_path, load_external_data=False))[1]
    static_batch = in_shape[0] if isinstance(in_shape[0], int) and in_shape[0] > 0 else None
    if static_batch and batch != static_batch:
        console.print(f"  [dim]the graph has a static batch of {static_batch}: calibrating in batches of {static_batch}[/]")
        batch = static_batch
    data = None
    if cache is None:
        with stage("data") as st:
            data = load_data(data_path, preprocessing, in_shape, num_images)
            st.detail = f"{len(data)} images from {data_path}" + (f", {data.skipped} unreadable skipped" if data.skipped else "")
            if preprocessing is None and Path(data_path).is_dir():
                st.detail += " (no manifest: ImageNet mean/std assumed)"
    with stage("calibrate") as st:
        qdq, cache, summary = quantize_int8(onnx_path, data, method, exclude=exclude,
                                            quantize_first_last=quantize_first_last, cache=cache, batch=batch)
        source = f", ranges from {len(data)} images" if data is not None else " (ranges from cache)"
        st.detail = (f"{method}: {len(summary['int8_nodes'])} MatMul/Gemm/Conv INT8, {len(summary['fp16_nodes'])} FP16, "
                     f"{summary['quantize_linear']} Q / {summary['dequantize_linear']} DQ{source}")
    report = {"source_onnx": str(onnx_path), "data": str(data_path), "data_resolved": str(Path(data_path).resolve()),
              "weights": weights, **summary}
    if data is not None:
        with stage("check") as st:
            check = data.take(CHECK_IMAGES)
            agreement = compare_models(str(onnx_path), qdq, check, batch=batch)
            report["check_vs_fp32"] = {"data": "calibration images (not held out)", "data_role": "calibration", **agreement}
            figure = (f"detection agreement {agreement['detection_agreement']:.1f}%" if agreement.get("task") == "detection"
                      else f"segmentation agreement {agreement['segmentation_agreement']:.1f}%"
                      if agreement.get("task") == "segmentation"
                      else f"top-1 agreement {agreement['top1_agreement']:.1f}%, cosine {agreement['cosine_mean']:.4f}")
            # On the images the ranges were fitted to: a sanity check, not an accuracy figure, so no ✔ for it.
            st.unjudged()
            st.detail = (f"INT8 vs FP32 on {agreement['images']} calibration images (not held out): {figure}; "
                         "measure held-out data with 'vitdeploy accuracy'")
    with staging(out) as tmp:
        from vitdeploy.artifact import atomic_save_onnx

        atomic_save_onnx(qdq, tmp / INT8_NAME)  # external data when over the protobuf limit
        save_cache(tmp / CACHE_NAME, cache)
        atomic_write_json(tmp / REPORT_NAME, report)
        manifest_path = out / MANIFEST_NAME
        if manifest_path.is_file() and Path(onnx_path).resolve().parent == out.resolve():
            from vitdeploy.artifact import sha256_file

            manifest = load_manifest(manifest_path)
            manifest.setdefault("files", {})["onnx_int8"] = {"path": INT8_NAME, "sha256": sha256_file(tmp / INT8_NAME)}
            manifest.setdefault("precision", {})["int8"] = {
                "method": method, "calibration_cache": CACHE_NAME, "excluded": summary["excluded"],
                "int8_nodes": len(summary["int8_nodes"]), "check_vs_fp32": report.get("check_vs_fp32"),
            }
            atomic_write_json(tmp / MANIFEST_NAME, manifest)
    console.print(f"[green]✔[/] wrote {out / INT8_NAME}, {out / CACHE_NAME} and {out / REPORT_NAME}")
    from vitdeploy.deploy.engine import trtexec_shapes

    # the export's batch range, when there is one; an unreadable manifest only costs the shapes on a suggested command
    shapes = trtexec_shapes(manifest_beside(Path(onnx_path)) or {})
    next_steps([
        f"vitdeploy accuracy {onnx_path} {out / INT8_NAME} --accuracy-data HELD_OUT_IMAGES/ --min-agreement 97",
        f"trtexec --onnx={out / INT8_NAME} --stronglyTyped --saveEngine={out / 'model.int8.plan'}{shapes}",
    ])
    return report
