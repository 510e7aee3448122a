"""A Triton Inference Server model repository entry: REPO/NAME/{config.pbtxt, 1/model.*, ...}.

`config.pbtxt` is built as Triton's own `ModelConfig` protobuf (tritonclient's
`model_config_pb2`), written with protobuf's text format, parsed back with the same
message type and compared with the artifact's I/O before anything is published: a
config Triton would refuse, or one whose I/O differs from the plan's, is never written.

Batching follows Triton's convention: with a dynamic batch dimension `max_batch_size`
is the profile's max and dims leave the batch out; a static graph gets
`max_batch_size: 0` and its full dims.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from vitdeploy.deploy.serving.served import Served
from vitdeploy.errors import VitdeployError

TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "float64": "TYPE_FP64",
                "int64": "TYPE_INT64", "int32": "TYPE_INT32", "int16": "TYPE_INT16", "int8": "TYPE_INT8",
                "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL"}
PLATFORMS = {"engine": ("tensorrt_plan", "model.plan"), "onnx": ("onnxruntime_onnx", "model.onnx")}
MARK = "# Written by vitdeploy"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def model_config_pb2():
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as e:
        raise VitdeployError(f"Triton's model-config protobuf is not installed ({e.name or e})",
                             "pip install 'vitdeploy[serving]' (tritonclient[grpc,http])") from None
    return model_config_pb2


def check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise VitdeployError(f"--name '{name}' is not a usable Triton model name",
                             "use letters, digits, '_', '.' and '-', starting with a letter or digit")


def _dims(shape: list) -> list[int]:
    return [int(d) if isinstance(d, int) and d > 0 else -1 for d in shape]


def preferred_sizes(batch: dict) -> list[int]:
    """The profile's opt and max: the sizes the engine was tuned for and the largest it takes."""
    return sorted({b for b in (batch["opt"], batch["max"]) if b > 1})


def build_config(served: Served, name: str, instances: int = 1, max_queue_delay_us: int = 100,
                 labels_file: str | None = None):
    """The `ModelConfig` message for `served`."""
    pb = model_config_pb2()
    platform, filename = PLATFORMS[served.kind]
    cfg = pb.ModelConfig(name=name, platform=platform, default_model_filename=filename)
    batched = bool(served.batch["dynamic"])
    cfg.max_batch_size = int(served.batch["max"]) if batched else 0
    for section, tensors in (("input", served.io["inputs"]), ("output", served.io["outputs"])):
        for t in tensors:
            if t["dtype"] not in TRITON_TYPES:
                raise VitdeployError(f"tensor '{t['name']}' has dtype {t['dtype']}, which Triton has no type for",
                                     "report the model")
            dims = _dims(t["shape"])
            if batched:
                if not dims or dims[0] != -1:
                    raise VitdeployError(f"tensor '{t['name']}' has a static first dimension {t['shape']} in a "
                                         "dynamic-batch artifact", "rebuild with --dynamic-batch")
                dims = dims[1:]
            entry = getattr(cfg, section).add(name=t["name"], data_type=pb.DataType.Value(TRITON_TYPES[t["dtype"]]),
                                              dims=dims)
            if section == "output" and labels_file and t is served.io["outputs"][0]:
                entry.label_filename = labels_file  # Triton's classification extension
    if batched:
        cfg.dynamic_batching.preferred_batch_size.extend(preferred_sizes(served.batch))
        cfg.dynamic_batching.max_queue_delay_microseconds = int(max_queue_delay_us)
    # An engine runs on a GPU only; the ONNX graph runs on a GPU where the server has one, else on CPUs.
    kind = pb.ModelInstanceGroup.KIND_GPU if served.kind == "engine" else pb.ModelInstanceGroup.KIND_AUTO
    cfg.instance_group.add(kind=kind, count=int(instances))
    return cfg


def header(served: Served) -> str:
    m = served.manifest.get("model") or {}
    return (f"{MARK} from {served.build_dir} ({m.get('alias', '?')}, {served.precision}).\n"
            f"# Serves {served.form}.\n")


def render(cfg, served: Served) -> str:
    from google.protobuf import text_format

    return header(served) + text_format.MessageToString(cfg)


def parse(text: str):
    """`config.pbtxt` text -> ModelConfig, through Triton's protobuf; a one-line error when it does not parse."""
    from google.protobuf import text_format

    pb = model_config_pb2()
    try:
        return text_format.Parse(text, pb.ModelConfig())
    except text_format.ParseError as e:
        raise VitdeployError(f"config.pbtxt does not parse as Triton's ModelConfig: {e}", "report this bug") from None


def io_of_config(cfg) -> dict:
    """{"inputs"/"outputs": [{"name", "dtype", "shape" with -1 for the batch}]} as Triton will see them."""
    pb = model_config_pb2()
    back = {v: k for k, v in TRITON_TYPES.items()}
    out = {}
    for section, key in (("input", "inputs"), ("output", "outputs")):
        out[key] = [{"name": t.name, "dtype": back[pb.DataType.Name(t.data_type)],
                     "shape": ([-1] if cfg.max_batch_size > 0 else []) + list(t.dims)}
                    for t in getattr(cfg, section)]
    return out


def check(cfg, served: Served) -> None:
    """The parsed config declares exactly the artifact's I/O (names, order, types, dims) and a legal batch."""
    want = {k: [{"name": t["name"], "dtype": t["dtype"], "shape": _dims(t["shape"])} for t in served.io[k]]
            for k in ("inputs", "outputs")}
    got = io_of_config(cfg)
    if got != want:
        raise VitdeployError(f"config.pbtxt declares {got}, the artifact has {want}", "report this bug")
    if cfg.max_batch_size > 0 and cfg.max_batch_size > int(served.batch["max"]):
        raise VitdeployError(f"max_batch_size {cfg.max_batch_size} exceeds the artifact's {served.batch['max']}",
                             "report this bug")
    for size in cfg.dynamic_batching.preferred_batch_size:
        if not 1 <= size <= cfg.max_batch_size:
            raise VitdeployError(f"preferred batch size {size} is outside 1..{cfg.max_batch_size}", "report this bug")


def preprocess_spec(served: Served, name: str, cfg, labels_file: str | None) -> dict:
    """preprocess.json: what the client must do to an image before Triton sees it, and how to read the outputs."""
    from vitdeploy.deploy.serving.spec import postprocessing, preprocessing

    pp = preprocessing(served)
    inp = served.io["inputs"][0]
    static = None if cfg.max_batch_size > 0 else (inp["shape"][0] if isinstance(inp["shape"][0], int) else 1)
    return {
        "model": name,
        "input": {"name": inp["name"], "datatype": TRITON_TYPES[inp["dtype"]].removeprefix("TYPE_"),
                  "layout": "NCHW", "color": "RGB", "max_batch_size": cfg.max_batch_size, "static_batch": static},
        "outputs": [{"name": o["name"], "datatype": TRITON_TYPES[o["dtype"]].removeprefix("TYPE_")}
                    for o in served.io["outputs"]],
        "input_size": pp["input_size"], "interpolation": pp["interpolation"], "crop_pct": pp["crop_pct"],
        "crop_mode": pp["crop_mode"], "resize": pp["resize"], "scale": "1/255", "mean": pp["mean"], "std": pp["std"],
        "postprocessing": postprocessing(served),
        "labels_file": labels_file,
    }


def readme(served: Served, name: str, cfg, repo: Path) -> str:
    """The model folder's README: what is served, what the server needs, how to call it."""
    platform = cfg.platform
    lines = [f"# {name}", "", f"Written by `vitdeploy package` from `{served.build_dir}`.", "",
             f"- platform: `{platform}`; serves {served.form}."]
    if served.kind == "engine":
        trt = (served.manifest.get("engine") or {}).get("tensorrt")
        lines.append(f"- The plan needs the server's TensorRT to be the one that built it ({trt}) and the same GPU "
                     "architecture, unless it was built version- or hardware-compatible (see 1/manifest.json).")
        kinds = {p.get("kind") for p in served.plugins}
        if "TensorRT stock" in kinds:
            ops = ", ".join(p["op"] for p in served.plugins if p.get("kind") == "TensorRT stock")
            lines.append(f"- Plugins: {ops} from TensorRT's stock libnvinfer_plugin, which Triton's TensorRT backend "
                         "loads itself at start-up: nothing to add.")
        if "vitdeploy AOT" in kinds:
            ops = ", ".join(p["op"] for p in served.plugins if p.get("kind") == "vitdeploy AOT")
            lines.append(f"- Plugins: {ops} are vitdeploy ahead-of-time plugins compiled into the plan: no plugin "
                         "library and no Python needed on the server.")
        if not kinds:
            lines.append("- No plugins.")
    else:
        lines.append("- ONNX Runtime runs it on the server's GPU (CUDA execution provider) or, without one, on its "
                     "CPUs (`KIND_AUTO`); no plugin nodes, so any Triton with the onnxruntime backend loads it.")
        ver = served.record.get("verified")
        if ver:
            lines.append(f"- Verified against the FP32 export on {ver['images']} {ver['data']}: cosine min "
                         f"{ver['cosine_min']:.5f}, max-abs {ver['max_abs_error']:.2e}.")
        if served.record.get("note"):
            lines.append(f"- {served.record['note']}.")
    if cfg.max_batch_size > 0:
        lines.append(f"- Batching: dynamic, up to {cfg.max_batch_size}; preferred sizes "
                     f"{list(cfg.dynamic_batching.preferred_batch_size)}, queue delay "
                     f"{cfg.dynamic_batching.max_queue_delay_microseconds} µs.")
    else:
        from vitdeploy.deploy.serving.served import rebuild_command

        lines.append("- Batching: none (static batch): `max_batch_size: 0`, full dims, so Triton cannot batch "
                     f"requests. For dynamic batching rebuild and package again: `{rebuild_command(served.manifest, served.build_dir)}`.")
    pp = served.manifest.get("preprocessing") or {}
    lines.append(f"- Preprocessing from {pp.get('source') or 'the model registry'}"
                 + (f" ({pp['source_detail']})" if pp.get("source_detail") else "") + ".")
    lines += ["- Preprocessing is the client's job (Triton receives tensors): `preprocess.json` says what, "
              "`client.py` does it with the code `vitdeploy infer` runs (inlined). With `--ensemble`, "
              f"`{name}_ensemble` takes encoded JPEG/PNG bytes and does it on the server.", "", "```bash",
              f"tritonserver --model-repository {repo}",
              f"python {repo / name / 'client.py'} IMAGE.jpg --url localhost:8000", "```", ""]
    return "\n".join(lines)


def _ours(folder: Path) -> bool:
    cfg = folder / "config.pbtxt"
    try:
        return cfg.is_file() and cfg.read_text().startswith(MARK)
    except OSError:
        return False


def write_repository(served: Served, repo: Path, name: str, instances: int = 1, max_queue_delay_us: int = 100) -> dict:
    """Assemble REPO/NAME in a staging folder, validate config.pbtxt, then move it into place (replacing
    an earlier vitdeploy-written NAME, never anything else). Returns what was written."""
    from vitdeploy.artifact import atomic_copy, atomic_write_json, ensure_writable_dir
    from vitdeploy.deploy.serving import spec

    check_name(name)
    dest = repo / name
    if dest.exists() and not _ours(dest):
        raise VitdeployError(f"{dest} exists and was not written by vitdeploy", "choose another --name or remove it")
    repo, _ = ensure_writable_dir(repo)
    names = spec.class_names(served)
    labels_file = "labels.txt" if names else None
    cfg = build_config(served, name, instances, max_queue_delay_us,
                       labels_file if names and spec.is_classifier(served) else None)
    text = render(cfg, served)
    parsed = parse(text)  # what Triton will read, not what we meant to write
    check(parsed, served)
    stage = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=repo))
    try:
        folder = stage / name
        (folder / "1").mkdir(parents=True)
        (folder / "config.pbtxt").write_text(text)
        _, filename = PLATFORMS[served.kind]
        if served.kind == "onnx":  # with its external data files, under the names the graph gives them
            from vitdeploy.onnx_files import copy_onnx

            copy_onnx(served.file, folder / "1" / filename)
        else:
            atomic_copy(served.file, folder / "1" / filename)
        manifest = dict(served.manifest)
        manifest["serving"] = {"platform": cfg.platform, "file": filename, "source": str(served.file),
                               "form": served.form, "io_source": served.io_source, **({"plugin_free": served.record}
                                                                                       if served.record else {})}
        atomic_write_json(folder / "1" / "manifest.json", manifest)
        atomic_write_json(folder / "preprocess.json", preprocess_spec(served, name, parsed, labels_file))
        if names:
            (folder / "labels.txt").write_text("\n".join(names) + "\n")
        from vitdeploy.deploy.serving.standalone import render as render_standalone

        (folder / "client.py").write_text(render_standalone(Path(__file__).with_name("triton_client.py")))
        os.chmod(folder / "client.py", 0o755)
        (folder / "README.md").write_text(readme(served, name, parsed, repo))
        old = stage / f"{name}.old"
        if dest.exists():
            os.replace(dest, old)
        try:
            os.replace(folder, dest)
        except OSError:
            if old.exists():
                os.replace(old, dest)  # the earlier version stays served
            raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return {"folder": dest, "config": parsed, "text": text, "labels": labels_file}
