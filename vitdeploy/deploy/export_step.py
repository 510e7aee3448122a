"""Build a model, export it to ONNX and prove the ONNX computes what PyTorch computes."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vitdeploy.deploy.export import (
    TORCHSCRIPT_MAX_OPSET, BatchSpec, ExportResult, export_onnx, flatten_outputs, select_outputs,
)
from vitdeploy.errors import VerificationError, VitdeployError
from vitdeploy.models import (
    ModelInfo, build_model, check_exporter, labels_for, postprocessing_for, preprocessing, pretrained_tag,
)
from vitdeploy.onnxgraph import io_signature
from vitdeploy.parity import Tolerance, compare_all, random_images


@dataclass
class ExportOptions:
    img_size: tuple[int, int] | None = None
    batch: BatchSpec = field(default_factory=BatchSpec)
    opset: int = 18
    checkpoint: str | None = None
    pretrained: bool = False
    exporter: str = "auto"
    small: bool = False  # reduced Deformable DETR (tests)
    tolerance: Tolerance = field(default_factory=lambda: Tolerance())
    opset_pinned: bool = False  # --opset given: no other opset is tried when the export fails
    max_opset: int = TORCHSCRIPT_MAX_OPSET  # the newest opset another try may use (the build's TensorRT bound)


def fallback_opsets(opts: ExportOptions) -> tuple[int, ...]:
    """The one other opset an export tries when every exporter fails at the requested one (none when pinned)."""
    if opts.opset_pinned:
        return ()
    return tuple(o for o in (20, 18, 17) if o != opts.opset and o <= opts.max_opset)[:1]


def versions() -> dict:
    """The versions the export ran with, as imported (torch's build tag included)."""
    from vitdeploy.machine import tool_versions

    return tool_versions(("torch", "onnx", "onnxruntime", "timm", "transformers", "onnxscript"), imported=True)


def parity_batches(batch: BatchSpec) -> list[int]:
    """Batch sizes to verify: the static one, or two distinct sizes from a dynamic range."""
    if not batch.dynamic:
        return [batch.opt]
    sizes = sorted({batch.min, batch.max if batch.max <= 4 else max(batch.min + 1, min(batch.opt, 4))})
    if len(sizes) == 1:
        sizes.append(sizes[0] + 1)
    return sizes


def torch_references(model, output_names, size, batches, seed: int = 0) -> list[tuple[object, list]]:
    """(input, PyTorch outputs) for each parity batch: computed before the ONNX is loaded, so the module's
    weights can be freed first and a model is never held twice (PyTorch and ONNX Runtime) for its parity."""
    import torch

    out = []
    for i, b in enumerate(batches):
        x = random_images(b, size, seed=seed + i)
        with torch.no_grad():
            refs = select_outputs(model(torch.from_numpy(x)), output_names)
        out.append((x, [r.detach().float().numpy() for r in refs]))
    return out


def compare_with_onnx(onnx_path: Path, references, output_names, batches, tol: Tolerance) -> dict:
    """ONNX Runtime on the references' inputs, compared output by output."""
    from vitdeploy.onnxrt import session

    sess = session(onnx_path)
    in_name = sess.get_inputs()[0].name
    runs = []
    for b, (x, refs) in zip(batches, references):
        got = sess.run(None, {in_name: x})
        runs.append({"batch": b, "outputs": [p.to_dict() for p in compare_all(output_names, refs, got, tol)]})
    del sess
    worst = {}
    for run in runs:
        for o in run["outputs"]:
            w = worst.setdefault(o["name"], {"max_abs": 0.0, "cosine": 1.0})
            w["max_abs"] = max(w["max_abs"], o["max_abs"])
            w["cosine"] = min(w["cosine"], o["cosine"])
    passed = all(o["passed"] for r in runs for o in r["outputs"])
    return {"passed": passed, "tolerance": tol.to_dict(), "batches": batches, "runs": runs, "worst": worst}


def verify_against_torch(model, onnx_path: Path, output_names, size, batches, tol: Tolerance, seed: int = 0) -> dict:
    """Run PyTorch and ONNX Runtime on the same inputs at each batch size; the parity record."""
    return compare_with_onnx(onnx_path, torch_references(model, output_names, size, batches, seed), output_names,
                             batches, tol)


def export_verified(info: ModelInfo, out_path: Path, opts: ExportOptions) -> tuple[ExportResult, dict, dict]:
    """Export `info` to `out_path`; returns (export result, manifest fields, parity record).

    The fields are what the export and build manifests record (model, preprocessing, labels, batch,
    export with its parity, versions, the checkpoint's sha256). Raises VerificationError (exit 3)
    when ONNX Runtime and PyTorch disagree beyond tolerance.
    """
    import torch

    from vitdeploy.console import phase

    exporter = check_exporter(info, opts.exporter)
    size = opts.img_size or info.input_size
    torch.manual_seed(0)
    phase(f"building {info.alias} ({info.source})")
    model = build_model(info, img_size=size, pretrained=opts.pretrained, checkpoint=opts.checkpoint, small=opts.small)
    example = torch.from_numpy(random_images(opts.batch.opt, size))
    info = probe_outputs(info, model, example)
    phase(f"exporting to ONNX ({exporter} exporter)")
    res = export_onnx(
        model, example, out_path, opset=opts.opset, batch=opts.batch, output_names=info.outputs, exporter=exporter,
        input_name=info.input_name, fallback_opsets=fallback_opsets(opts),
    )
    phase(f"parity vs PyTorch ({res.exporter} export, batch {','.join(map(str, parity_batches(opts.batch)))})")
    batches = parity_batches(opts.batch)
    references = torch_references(model, info.outputs, size, batches)
    fields = {
        "model": {
            "alias": info.alias,
            "family": info.family,
            "source": info.source,
            "name": info.name,
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "weights": "pretrained" if opts.pretrained else ("checkpoint" if opts.checkpoint else "random"),
            "reduced": bool(opts.small),
            **model_fields(info, model, opts),
        },
        "preprocessing": preprocessing(info, model, size),
        "labels": labels_for(info, model),
        "postprocessing": postprocessing_for(info),
        "batch": opts.batch.to_dict(),
        "export": {
            "exporter": res.exporter,
            "fallback_reason": res.fallback_reason,
            "opset": res.opset,
            **({"attempts": res.attempts} if len(res.attempts) > 1 else {}),
            **({"patches": res.patches} if res.patches else {}),
            **io_signature(out_path),
        },
        "versions": versions(),
    }
    if opts.pretrained and "pretrained_tag" not in fields["model"]:
        fields["model"]["pretrained_tag"] = pretrained_tag(info, model)
    del model, example  # the module's weights go before ONNX Runtime loads the graph's: one copy at a time
    import gc

    gc.collect()
    parity = compare_with_onnx(out_path, references, info.outputs, batches, opts.tolerance)
    fields["export"]["parity"] = parity
    if opts.checkpoint:
        from vitdeploy.artifact import sha256_file

        fields["model"]["checkpoint"] = {"path": str(Path(opts.checkpoint).resolve()), "sha256": sha256_file(opts.checkpoint)}
    if not parity["passed"]:
        bad = [o for r in parity["runs"] for o in r["outputs"] if not o["passed"]][0]
        raise VerificationError(
            f"ONNX export of {info.alias} does not match PyTorch: {bad['name']} max-abs {bad['max_abs']:.3g}, "
            f"cosine {bad['cosine']:.6f} (tolerance atol {opts.tolerance.atol:g}, rtol {opts.tolerance.rtol:g})",
            (f"try --exporter {'torchscript' if res.exporter == 'dynamo' else 'dynamo'} or another --opset"
             if len(info.exporters) > 1 else "try another --opset"),
        )
    return res, fields, parity


def probe_outputs(info: ModelInfo, model, example) -> ModelInfo:
    """Run the model once before exporting: a model that does not run at this size is one line, and a model
    whose outputs are not known in advance (a Python factory, a Hugging Face backbone) gets their names here."""
    from dataclasses import replace

    import torch

    h, w = example.shape[-2:]
    try:
        with torch.no_grad():
            out = model(example)
        flat = flatten_outputs(out)
    except VitdeployError:
        raise
    except Exception as e:
        text = (str(e).strip().splitlines() or [""])[0][:160]
        native = None if not all(info.input_size) else (str(info.input_size[0]) if info.input_size[0] == info.input_size[1]
                                                        else "x".join(map(str, info.input_size)))
        raise VitdeployError(f"{info.alias} does not run on a {tuple(example.shape)} input: {type(e).__name__}: {text}",
                             f"try --img-size {native} (its own size)" if native and (h, w) != tuple(info.input_size)
                             else "check --img-size, and that the model takes one image batch [B, 3, H, W]") from None
    if not flat:
        raise VitdeployError(f"{info.alias} returned no tensors", "return the model's output tensors from forward()")
    if info.outputs and info.task:
        select_outputs(out, info.outputs)  # names that are not there: one line now, not a trace error later
        return info
    if info.outputs and info.route != "python":
        select_outputs(out, info.outputs)
        return info
    # a Python factory: its own output names unless --output-names renamed them (by position); a classifier
    # when it returns one [B, classes] tensor
    names = info.outputs or tuple(n for n, _ in flat)
    if len(names) != len(flat):
        raise VitdeployError(f"--output-names gives {len(names)} names, {info.alias} returns {len(flat)} tensors "
                             f"({', '.join(n for n, _ in flat)})", f"give {len(flat)} comma-separated names")
    task = info.task or ("classification" if len(flat) == 1 and flat[0][1].ndim == 2 and flat[0][1].shape[1] > 1
                         else "features")
    return replace(info, outputs=names, task=task)


def model_fields(info: ModelInfo, model, opts: ExportOptions) -> dict:
    """The manifest's record of a model that is not an alias: how --model named it and what was built."""
    if info.route == "alias" and not info.overrides.get("num_classes") and info.input_name == "input":
        return {}
    out: dict = {"route": info.route, "spec": info.spec or info.alias, "task": info.task or None}
    if "num_classes" in info.overrides:
        out["num_classes"] = info.overrides["num_classes"]
    if info.route == "huggingface":
        from pathlib import Path as _Path

        from vitdeploy.sources.hf import directory_digest

        from vitdeploy.sources.hf import hub_id_of

        out["directory"] = {"path": info.spec, "sha256": directory_digest(_Path(info.spec))}
        hub = hub_id_of(info.spec)
        if opts.checkpoint:
            pass
        elif hub:  # a hub snapshot: the hub's weights, at this commit
            out.update(weights="pretrained", pretrained_tag=hub)
        else:  # the directory's own weights (a fine-tune saved with save_pretrained)
            out["weights"] = "checkpoint"
            out["checkpoint"] = {"path": info.spec, "sha256": out["directory"]["sha256"]}
    elif info.route == "python":
        from vitdeploy.sources.python_entry import code_digest

        out["code_sha256"] = code_digest(info.spec)
        if not opts.checkpoint:
            out["weights"] = "unknown"  # whatever the factory loads
    return out


def summarize_parity(parity: dict) -> str:
    parts = [f"{n} max-abs {w['max_abs']:.2e} cos {w['cosine']:.6f}" for n, w in parity["worst"].items()]
    return ", ".join(parts) + f" (batch {','.join(map(str, parity['batches']))})"


