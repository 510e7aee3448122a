"""Build a model, export it to ONNX and prove the ONNX computes what PyTorch computes."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vitdeploy.deploy.export import BatchSpec, ExportResult, export_onnx

from vitdeploy.errors import VerificationError
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


def verify_against_torch(model, onnx_path: Path, output_names, size, batches, tol: Tolerance, seed: int = 0) -> dict:
    """Run PyTorch and ONNX Runtime on the same inputs at each batch size; raise if they differ."""
    import torch

    from vitdeploy.onnxrt import session

    sess = session(onnx_path)
    in_name = sess.get_inputs()[0].name
    runs = []
    for i, b in enumerate(batches):
        x = random_images(b, size, seed=seed + i)
        with torch.no_grad():
            out = model(torch.from_numpy(x))
        refs = [out] if isinstance(out, torch.Tensor) else [getattr(out, n) for n in output_names]
        refs = [r.detach().float().numpy() for r in refs]
        got = sess.run(None, {in_name: x})
        runs.append({"batch": b, "outputs": [p.to_dict() for p in compare_all(output_names, refs, got, tol)]})
    worst = {}
    for run in runs:
        for o in run["outputs"]:
            w = worst.setdefault(o["name"], {"max_abs": 0.0, "cosine": 1.0})
            w["max_abs"] = max(w["max_abs"], o["max_abs"])
            w["cosine"] = min(w["cosine"], o["cosine"])
    passed = all(o["passed"] for r in runs for o in r["outputs"])
    return {"passed": passed, "tolerance": tol.to_dict(), "batches": batches, "runs": runs, "worst": worst}


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
    phase(f"exporting to ONNX ({exporter} exporter)")
    res = export_onnx(
        model, example, out_path, opset=opts.opset, batch=opts.batch, output_names=info.outputs, exporter=exporter
    )
    phase(f"parity vs PyTorch ({res.exporter} export, batch {','.join(map(str, parity_batches(opts.batch)))})")
    parity = verify_against_torch(model, out_path, info.outputs, size, parity_batches(opts.batch), opts.tolerance)
    fields = {
        "model": {
            "alias": info.alias,
            "family": info.family,
            "source": info.source,
            "name": info.name,
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "weights": "pretrained" if opts.pretrained else ("checkpoint" if opts.checkpoint else "random"),
            "reduced": bool(opts.small),
        },
        "preprocessing": preprocessing(info, model if info.source == "timm" else None, size),
        "labels": labels_for(info, model),
        "postprocessing": postprocessing_for(info),
        "batch": opts.batch.to_dict(),
        "export": {
            "exporter": res.exporter,
            "fallback_reason": res.fallback_reason,
            "opset": res.opset,
            **io_signature(out_path),
            "parity": parity,
        },
        "versions": versions(),
    }
    if opts.pretrained:
        fields["model"]["pretrained_tag"] = pretrained_tag(info, model)
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


def summarize_parity(parity: dict) -> str:
    parts = [f"{n} max-abs {w['max_abs']:.2e} cos {w['cosine']:.6f}" for n, w in parity["worst"].items()]
    return ", ".join(parts) + f" (batch {','.join(map(str, parity['batches']))})"


