"""`vitdeploy package`: a build directory -> a Triton model repository entry and/or a DeepStream config."""
from __future__ import annotations

from pathlib import Path

import click

PLATFORM_CHOICES = ["auto", "tensorrt", "onnx"]


def _apply_user_files(manifest: dict, preprocess_file, labels_file) -> list[str]:
    """--preprocess / --labels replace what the build recorded (in memory: the build directory is not changed;
    the served copy of the manifest records them)."""
    from vitdeploy.deploy.preprocess import describe_source, load_labels_file, load_preprocess_file

    notes = []
    inputs = ((manifest.get("export") or {}).get("inputs") or [{}])
    shape = inputs[0].get("shape") if inputs else None
    size = list(shape[1:]) if shape and len(shape) == 4 and all(isinstance(d, int) and d > 0 for d in shape[1:]) else \
        (manifest.get("preprocessing") or {}).get("input_size")
    if preprocess_file:
        manifest["preprocessing"] = load_preprocess_file(preprocess_file, size)
        notes.append(f"preprocessing: {describe_source(manifest['preprocessing'])}")
    if labels_file:
        n = (manifest.get("labels") or {}).get("num_classes")
        outputs = (manifest.get("export") or {}).get("outputs") or []
        if n is None and outputs and (manifest.get("postprocessing") or {}).get("task") in (None, "classification"):
            last = (outputs[0].get("shape") or [None])[-1]
            n = last if isinstance(last, int) and last > 0 else None
        manifest["labels"] = load_labels_file(labels_file, n)
        notes.append(f"labels: {manifest['labels']['num_classes']} names from {Path(labels_file).name}")
    return notes


def _what_is_served(served, manifest: dict) -> list[tuple[str, str]]:
    """(style, line) for the terminal: precision served vs built, and batching, before anything is written."""
    from vitdeploy.deploy.serving.served import precision_of, rebuild_command

    out = []
    built = precision_of(manifest)
    if built.startswith("int8") and not served.precision.startswith("int8"):
        why = served.record.get("note") or "no INT8 graph could be served"
        out.append(("yellow", f"⚠ the build is {built} but this serves {served.precision.upper()}: {why}"))
    elif built.startswith("int8"):
        out.append(("green", f"serves INT8: {served.file.name} ({served.precision}, explicit Q/DQ)"))
    if not served.batch["dynamic"]:
        out.append(("yellow", f"static batch {served.batch['max']}: Triton cannot batch requests (max_batch_size 0); "
                              f"for dynamic batching: {rebuild_command(manifest, served.build_dir)}"))
    return out


def package(build_dir: Path, *, triton_repo: Path | None = None, name: str | None = None, instances: int = 1,
            max_queue_delay_us: int = 100, platform: str = "auto", deepstream: Path | None = None,
            preprocess_file: Path | None = None, labels_file: Path | None = None, ensemble: bool = False,
            show_next: bool = True) -> dict:
    """Validate everything cheap first, then resolve the artifact (maybe minutes: a plugin-free graph), then write."""
    from vitdeploy.console import console, next_steps, stage
    from vitdeploy.deploy.serving import deepstream as ds
    from vitdeploy.deploy.serving import spec, triton
    from vitdeploy.deploy.serving.served import load_build, rebuild_command
    from vitdeploy.errors import VitdeployError
    from vitdeploy.pipeline.plugin_free import served_artifact

    if triton_repo is None and deepstream is None:
        raise VitdeployError("nothing to package", "pass --triton-repo REPO and/or --deepstream DIR")
    if ensemble and triton_repo is None:
        raise VitdeployError("--ensemble is a Triton model", "add --triton-repo REPO")
    if instances < 1:
        raise VitdeployError(f"--instances must be at least 1, got {instances}", "e.g. --instances 2")
    if max_queue_delay_us < 0:
        raise VitdeployError(f"--max-queue-delay-us must be 0 or more, got {max_queue_delay_us}", "e.g. --max-queue-delay-us 100")
    manifest = load_build(build_dir)
    notes = _apply_user_files(manifest, preprocess_file, labels_file)
    spec.require_preprocessing(manifest, build_dir)  # never a guessed normalisation in a serving config
    name = name or (manifest.get("model") or {}).get("alias") or build_dir.resolve().name
    if triton_repo is not None:
        triton.model_config_pb2()  # the protobuf is needed to validate: fail before any work
        triton.check_name(name)
        for folder in [name] + ([f"{name}_preprocess", f"{name}_ensemble"] if ensemble else []):
            dest = triton_repo / folder
            if dest.exists() and not triton._ours(dest):
                raise VitdeployError(f"{dest} exists and was not written by vitdeploy", "choose another --name or remove it")
    task = (manifest.get("postprocessing") or {}).get("task")
    if deepstream is not None:  # before a plugin-free graph is made for nothing
        ds.check_task(task, (manifest.get("model") or {}).get("alias"))
    for line in notes:
        console.print(f"  {line}")
    pp = manifest.get("preprocessing") or {}
    console.print(f"  preprocessing from {pp.get('source') or 'the model registry (recorded before sources)'}"
                  + (f": {pp['source_detail']}" if pp.get("source_detail") else ""))
    served = served_artifact(build_dir, platform, manifest)
    console.print(f"  serving {served.form}; I/O from {served.io_source}")
    for style, line in _what_is_served(served, manifest):
        console.print(f"  [{style}]{line}[/]")
    result: dict = {"served": served}
    if triton_repo is not None:
        with stage("triton") as st:
            res = triton.write_repository(served, triton_repo, name, instances, max_queue_delay_us)
            cfg = res["config"]
            batching = (f"max_batch_size {cfg.max_batch_size}, preferred {list(cfg.dynamic_batching.preferred_batch_size)}"
                        if cfg.max_batch_size else "max_batch_size 0 (static batch)")
            st.detail = (f"{res['folder']}/config.pbtxt: {cfg.platform}, {batching}, "
                         f"{len(cfg.input)} input / {len(cfg.output)} outputs; parsed with Triton's ModelConfig, "
                         "I/O matches the artifact")
        result["triton"] = res
        if ensemble:
            from vitdeploy.deploy.serving import ensemble as ens

            with stage("ensemble") as st:
                er = ens.write(served, triton_repo, name, res["config"], instances)
                st.detail = (f"{er['ensemble']}/config.pbtxt: encoded image bytes -> {er['preprocess'].name} "
                             f"(Python backend, the manifest's preprocessing) -> {name}; parsed with Triton's ModelConfig")
            result["ensemble"] = er
    if deepstream is not None:
        with stage("deepstream") as st:
            res = ds.write(served, deepstream)
            sc = res["scale"]
            st.detail = (f"{res['config']} ({res['names']} labels{' (placeholders: pass --labels FILE)' if res['placeholder_labels'] else ''}"
                         f", network-mode {ds.NETWORK_MODE.get(served.precision, 0)}"
                         + (", INT8 from the Q/DQ graph, calibration cache beside it" if res.get("calibration") else "") + ")")
        if sc.exact:
            console.print(f"  net-scale-factor {sc.factor:.6g} and offsets reproduce the normalisation exactly")
        else:
            console.print(f"  DeepStream takes one scale: net-scale-factor {sc.factor:.6g} for std "
                          f"{res['preprocessing']['std']}; worst-case input error "
                          f"{sc.worst_error:.4g} ({ds.CHANNELS[sc.worst_channel]} channel at pixel {sc.worst_pixel})")
        console.print("  nvinfer scales the whole frame to the network size; the model's eval transform "
                      f"({res['preprocessing']['resize']['mode']}, crop_pct {res['preprocessing']['crop_pct']:g}) frames it differently")
        result["deepstream"] = res
    if show_next:
        nxt = []
        if triton_repo is not None:
            nxt += [f"tritonserver --model-repository {triton_repo}",
                    f"python {triton_repo / name / 'client.py'} IMAGE.jpg --url localhost:8000"]
            if ensemble:
                nxt.append(f"python {triton_repo / name / 'client.py'} IMAGE.jpg --ensemble   # send the JPEG bytes")
        if deepstream is not None:
            nxt.append(f"# DeepStream: [primary-gie] config-file={result['deepstream']['config']}")
        if not served.batch["dynamic"]:
            nxt.append(rebuild_command(manifest, build_dir) + "   # then package again: dynamic batching")
        next_steps(nxt)
    return result


@click.command("package")
@click.argument("build_dir", metavar="BUILD_DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option("--triton-repo", type=click.Path(file_okay=False, path_type=Path), metavar="REPO",
              help="Triton model repository: writes REPO/NAME/config.pbtxt, REPO/NAME/1/model.*, client.py.")
@click.option("--name", help="Model name in the repository (default: the model alias).")
@click.option("--instances", type=int, default=1, show_default=True, help="Model instances (instance_group count).")
@click.option("--max-queue-delay-us", type=int, default=100, show_default=True,
              help="Dynamic batching: how long Triton waits to fill a batch (µs).")
@click.option("--platform", type=click.Choice(PLATFORM_CHOICES), default="auto", show_default=True,
              help="auto: the engine where one was built, else a plugin-free ONNX for ONNX Runtime.")
@click.option("--deepstream", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Also write a DeepStream nvinfer config (classifiers) with labels and the model into DIR.")
@click.option("--preprocess", "preprocess_file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.json",
              help="The model's preprocessing, where the build does not state it (a user's ONNX), or to replace it: "
                   "mean/std/interpolation/crop, or a Hugging Face preprocessor_config.json (docs/serving.md).")
@click.option("--labels", "labels_file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Class names: one per line, a JSON list, or an index -> name JSON (a config.json's id2label).")
@click.option("--ensemble", is_flag=True,
              help="Also write a Triton ensemble NAME_ensemble that takes encoded images (JPEG/PNG bytes): a Python "
                   "backend model NAME_preprocess runs the manifest's preprocessing, then NAME.")
def command(build_dir, triton_repo, name, instances, max_queue_delay_us, platform, deepstream, preprocess_file,
            labels_file, ensemble):
    """Hand BUILD_DIR to a server: a Triton model repository entry and/or a DeepStream config.

    config.pbtxt comes from the artifact's real I/O and is parsed back with Triton's own
    model-config protobuf before it is published. Where no engine was built the
    repository serves a plugin-free ONNX under onnxruntime_onnx, verified against the
    FP32 export, so it runs today on any Triton (an INT8 build's, in INT8, with the build's
    calibration). preprocess.json and client.py do what 'vitdeploy infer' does to an image
    before it reaches the server, with the same code; --ensemble lets clients send JPEGs.
    A build that does not state its preprocessing (a user's ONNX) needs --preprocess:
    nothing is written with a guessed normalisation.

    \b
    Examples:
      vitdeploy package build/swin_t --triton-repo models
      vitdeploy package build/swin_t --triton-repo models --name swin --instances 2 --max-queue-delay-us 500
      vitdeploy package build/convit_t --deepstream ds/convit_t
      vitdeploy package build/hf --triton-repo models --preprocess preprocessor_config.json --labels labels.txt --ensemble
    """
    package(build_dir, triton_repo=triton_repo, name=name, instances=instances, max_queue_delay_us=max_queue_delay_us,
            platform=platform, deepstream=deepstream, preprocess_file=preprocess_file, labels_file=labels_file,
            ensemble=ensemble)
