"""`vitdeploy package`: a build directory -> a Triton model repository entry and/or a DeepStream config."""
from __future__ import annotations

from pathlib import Path

import click

PLATFORM_CHOICES = ["auto", "tensorrt", "onnx"]


def package(build_dir: Path, *, triton_repo: Path | None = None, name: str | None = None, instances: int = 1,
            max_queue_delay_us: int = 100, platform: str = "auto", deepstream: Path | None = None,
            show_next: bool = True) -> dict:
    """Validate everything cheap first, then resolve the artifact (maybe minutes: a plugin-free graph), then write."""
    from vitdeploy.console import console, next_steps, stage
    from vitdeploy.deploy.serving import artifact, deepstream as ds, triton
    from vitdeploy.errors import VitdeployError
    from vitdeploy.pipeline.plugin_free import served_artifact

    if triton_repo is None and deepstream is None:
        raise VitdeployError("nothing to package", "pass --triton-repo REPO and/or --deepstream DIR")
    if instances < 1:
        raise VitdeployError(f"--instances must be at least 1, got {instances}", "e.g. --instances 2")
    if max_queue_delay_us < 0:
        raise VitdeployError(f"--max-queue-delay-us must be 0 or more, got {max_queue_delay_us}", "e.g. --max-queue-delay-us 100")
    manifest = artifact.load_build(build_dir)
    name = name or (manifest.get("model") or {}).get("alias") or build_dir.resolve().name
    if triton_repo is not None:
        triton.model_config_pb2()  # the protobuf is needed to validate: fail before any work
        triton.check_name(name)
        dest = triton_repo / name
        if dest.exists() and not triton._ours(dest):
            raise VitdeployError(f"{dest} exists and was not written by vitdeploy", "choose another --name or remove it")
    if deepstream is not None:  # before a plugin-free graph is made for nothing
        ds.check_task((manifest.get("postprocessing") or {}).get("task"), (manifest.get("model") or {}).get("alias"))
    served = served_artifact(build_dir, platform, manifest)
    console.print(f"  serving {served.form}; I/O from {served.io_source}")
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
    if deepstream is not None:
        with stage("deepstream") as st:
            res = ds.write(served, deepstream)
            sc = res["scale"]
            st.detail = f"{res['config']} ({res['names']} labels, network-mode {ds.NETWORK_MODE.get(served.precision, 0)})"
        if sc.exact:
            console.print(f"  net-scale-factor {sc.factor:.6g} and offsets reproduce the normalisation exactly")
        else:
            console.print(f"  DeepStream takes one scale: net-scale-factor {sc.factor:.6g} for std "
                          f"{served.manifest.get('preprocessing', {}).get('std')}; worst-case input error "
                          f"{sc.worst_error:.4g} ({ds.CHANNELS[sc.worst_channel]} channel at pixel {sc.worst_pixel})")
        console.print("  nvinfer scales the whole frame to the network size; timm's eval transform also "
                      "centre-crops, so framing differs")
        result["deepstream"] = res
    if show_next:
        nxt = []
        if triton_repo is not None:
            nxt += [f"tritonserver --model-repository {triton_repo}",
                    f"python {triton_repo / name / 'client.py'} IMAGE.jpg --url localhost:8000"]
        if deepstream is not None:
            nxt.append(f"# DeepStream: [primary-gie] config-file={result['deepstream']['config']}")
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
def command(build_dir, triton_repo, name, instances, max_queue_delay_us, platform, deepstream):
    """Hand BUILD_DIR to a server: a Triton model repository entry and/or a DeepStream config.

    config.pbtxt comes from the artifact's real I/O and is parsed back with Triton's own
    model-config protobuf before it is published. Where no engine was built the
    repository serves a plugin-free ONNX under onnxruntime_onnx, verified against the
    FP32 export, so it runs today on any Triton. preprocess.json and client.py do what
    'vitdeploy infer' does to an image before it reaches the server.

    \b
    Examples:
      vitdeploy package build/swin_t --triton-repo models
      vitdeploy package build/swin_t --triton-repo models --name swin --instances 2 --max-queue-delay-us 500
      vitdeploy package build/convit_t --deepstream ds/convit_t
    """
    package(build_dir, triton_repo=triton_repo, name=name, instances=instances, max_queue_delay_us=max_queue_delay_us,
            platform=platform, deepstream=deepstream)
