"""A Triton ensemble that takes encoded images: NAME_preprocess (Python backend) -> NAME.

What Triton users otherwise write by hand: clients send JPEG/PNG bytes ("IMAGE", TYPE_STRING) to
NAME_ensemble; NAME_preprocess decodes and preprocesses them with vitdeploy's own preprocessing
(`image_transform`, inlined into its model.py by `standalone.render`, driven by the manifest's
`preprocessing` in preprocess.json), and NAME runs the network. Both configs are built as Triton's
`ModelConfig` protobuf, printed, parsed back and checked: the ensemble's steps must connect (every
tensor a step reads is the ensemble's input or an earlier step's output, with the type and dims the
step's model declares) before anything is published.

Batching follows NAME: with a dynamic batch both new models have its max_batch_size and IMAGE has
dims [1] (one image per batch entry); a static-batch NAME takes exactly its N images (IMAGE dims [N]).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from vitdeploy.deploy.serving.served import Served
from vitdeploy.deploy.serving.triton import MARK, TRITON_TYPES, model_config_pb2, parse
from vitdeploy.errors import VitdeployError

IMAGE = "IMAGE"
PREPROCESSED = "preprocessed"


def names(name: str) -> tuple[str, str]:
    return f"{name}_preprocess", f"{name}_ensemble"


def build_configs(served: Served, name: str, main_cfg, instances: int = 1):
    """(preprocess ModelConfig, ensemble ModelConfig) for the served model's config `main_cfg`."""
    pb = model_config_pb2()
    pre_name, ens_name = names(name)
    inp = main_cfg.input[0]
    batched = main_cfg.max_batch_size > 0
    image_dims = [1] if batched else [int(served.io["inputs"][0]["shape"][0])]
    pre = pb.ModelConfig(name=pre_name, backend="python", max_batch_size=main_cfg.max_batch_size)
    pre.input.add(name=IMAGE, data_type=pb.DataType.Value("TYPE_STRING"), dims=image_dims)
    pre.output.add(name=inp.name, data_type=inp.data_type, dims=list(inp.dims))
    if batched:
        pre.dynamic_batching.max_queue_delay_microseconds = main_cfg.dynamic_batching.max_queue_delay_microseconds
    pre.instance_group.add(kind=pb.ModelInstanceGroup.KIND_CPU, count=int(instances))
    ens = pb.ModelConfig(name=ens_name, platform="ensemble", max_batch_size=main_cfg.max_batch_size)
    ens.input.add(name=IMAGE, data_type=pb.DataType.Value("TYPE_STRING"), dims=image_dims)
    for o in main_cfg.output:
        out = ens.output.add(name=o.name, data_type=o.data_type, dims=list(o.dims))
        if o.label_filename:
            out.label_filename = o.label_filename
    step = ens.ensemble_scheduling.step.add(model_name=pre_name, model_version=-1)
    step.input_map[IMAGE] = IMAGE
    step.output_map[inp.name] = PREPROCESSED
    step = ens.ensemble_scheduling.step.add(model_name=name, model_version=-1)
    step.input_map[inp.name] = PREPROCESSED
    for o in main_cfg.output:
        step.output_map[o.name] = o.name
    return pre, ens


def check(ens, models: dict) -> None:
    """The parsed ensemble against its models' parsed configs: every step's inputs are available with the
    type and dims its model declares, and every ensemble output is produced. One line when not."""
    have = {t.name: (t.data_type, list(t.dims)) for t in ens.input}
    for step in ens.ensemble_scheduling.step:
        cfg = models.get(step.model_name)
        if cfg is None:
            raise VitdeployError(f"ensemble step {step.model_name} names no model written here", "report this bug")
        declared_in = {t.name: (t.data_type, list(t.dims)) for t in cfg.input}
        for model_input, tensor in step.input_map.items():
            if tensor not in have or model_input not in declared_in or have[tensor] != declared_in[model_input]:
                raise VitdeployError(f"ensemble step {step.model_name} reads {tensor} as {model_input}, which does not "
                                     "match what is available", "report this bug")
        declared_out = {t.name: (t.data_type, list(t.dims)) for t in cfg.output}
        for model_output, tensor in step.output_map.items():
            if model_output not in declared_out:
                raise VitdeployError(f"{step.model_name} has no output {model_output}", "report this bug")
            have[tensor] = declared_out[model_output]
    for o in ens.output:
        if have.get(o.name) != (o.data_type, list(o.dims)):
            raise VitdeployError(f"ensemble output {o.name} is not produced as declared", "report this bug")
    if ens.max_batch_size != models[ens.ensemble_scheduling.step[-1].model_name].max_batch_size:
        raise VitdeployError("the ensemble's max_batch_size differs from its model's", "report this bug")


def _render(cfg, served: Served, what: str) -> str:
    from google.protobuf import text_format

    return (f"{MARK} from {served.build_dir} ({served.alias or '?'}, {served.precision}).\n# {what}\n"
            + text_format.MessageToString(cfg))


def write(served: Served, repo: Path, name: str, main_cfg, instances: int = 1) -> dict:
    """REPO/NAME_preprocess (config.pbtxt, 1/model.py, 1/preprocess.json) and REPO/NAME_ensemble (config.pbtxt,
    empty 1/), staged and validated, then moved into place (replacing only what vitdeploy wrote)."""
    import json

    from vitdeploy.deploy.serving import spec
    from vitdeploy.deploy.serving.standalone import render as render_standalone
    from vitdeploy.deploy.serving.triton import _ours

    pre_name, ens_name = names(name)
    for folder in (pre_name, ens_name):
        if (repo / folder).exists() and not _ours(repo / folder):
            raise VitdeployError(f"{repo / folder} exists and was not written by vitdeploy", "choose another --name or remove it")
    pre, ens = build_configs(served, name, main_cfg, instances)
    texts = {pre_name: _render(pre, served, f"Decodes and preprocesses images for {name} (step 1 of {ens_name})."),
             ens_name: _render(ens, served, f"Encoded images in, {name}'s outputs out: {pre_name}, then {name}.")}
    parsed = {k: parse(v) for k, v in texts.items()}
    check(parsed[ens_name], {pre_name: parsed[pre_name], name: main_cfg})
    pp = spec.preprocessing(served)
    inp = served.io["inputs"][0]
    static = None if main_cfg.max_batch_size > 0 else [int(d) for d in inp["shape"]]
    pre_spec = {**{k: pp[k] for k in ("input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode", "resize")},
                "source": pp.get("source"), "source_detail": pp.get("source_detail"),
                "ensemble": {"preprocess_output": inp["name"], "dtype": inp["dtype"], "static_shape": static}}
    stage = Path(tempfile.mkdtemp(prefix=f".{name}.ensemble.", dir=repo))
    try:
        for folder, text in texts.items():
            (stage / folder / "1").mkdir(parents=True)
            (stage / folder / "config.pbtxt").write_text(text)
        (stage / pre_name / "1" / "model.py").write_text(render_standalone(Path(__file__).with_name("triton_preprocess_model.py")))
        (stage / pre_name / "1" / "preprocess.json").write_text(json.dumps(pre_spec, indent=2) + "\n")
        for folder in texts:
            old = stage / f"{folder}.old"
            if (repo / folder).exists():
                os.replace(repo / folder, old)
            os.replace(stage / folder, repo / folder)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    client_spec = repo / name / "preprocess.json"  # the client's --ensemble mode reads where to send bytes
    if client_spec.is_file():
        from vitdeploy.artifact import atomic_write_json

        doc = json.loads(client_spec.read_text())
        doc["ensemble"] = {"model": ens_name, "input": IMAGE, "datatype": "BYTES",
                           "dims": list(parsed[ens_name].input[0].dims), "max_batch_size": main_cfg.max_batch_size}
        atomic_write_json(client_spec, doc)
    return {"preprocess": repo / pre_name, "ensemble": repo / ens_name, "configs": parsed,
            "image_dims": list(parsed[ens_name].input[0].dims), "type": TRITON_TYPES.get(inp["dtype"])}
