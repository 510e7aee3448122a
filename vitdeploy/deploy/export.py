"""PyTorch → ONNX export, verified: build the model, export it, prove the ONNX computes what PyTorch computes.

The dynamo exporter (torch.export) is tried first because it is where PyTorch's
ONNX support is going; models it cannot trace fall back to the TorchScript
exporter. Which one ran, and why the fallback happened, is recorded.
`export_verified` is the stage as the build's export step and `vitdeploy export` run it:
export, parity vs PyTorch at one or two batch sizes, and the manifest fields.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from vitdeploy.errors import VerificationError, VitdeployError
from vitdeploy.models import (
    ModelInfo, build_model, check_exporter, labels_for, postprocessing_for, preprocessing, pretrained_tag,
)
from vitdeploy.onnxgraph import io_signature
from vitdeploy.parity import Tolerance, compare_all, random_images

DEFAULT_OPSET = 18
TORCHSCRIPT_MAX_OPSET = 20  # the TorchScript exporter writes no newer opset


@dataclass
class BatchSpec:
    """Static batch (`min == opt == max`) or a dynamic range for TensorRT profiles."""

    min: int = 1
    opt: int = 1
    max: int = 1

    @property
    def dynamic(self) -> bool:
        return not (self.min == self.opt == self.max)

    @classmethod
    def static(cls, n: int) -> "BatchSpec":
        if n < 1:
            raise VitdeployError(f"--batch must be at least 1, got {n}", "use --batch 1")
        return cls(n, n, n)

    @classmethod
    def parse(cls, text: str) -> "BatchSpec":
        try:
            lo, opt, hi = (int(v) for v in text.split(":"))
        except ValueError:
            raise VitdeployError(
                f"--dynamic-batch '{text}' is not MIN:OPT:MAX", "for example --dynamic-batch 1:8:32"
            ) from None
        if not 1 <= lo <= opt <= hi:
            raise VitdeployError(
                f"--dynamic-batch {text} must satisfy 1 <= MIN <= OPT <= MAX", "for example --dynamic-batch 1:8:32"
            )
        return cls(lo, opt, hi)

    def to_dict(self) -> dict:
        return {"min": self.min, "opt": self.opt, "max": self.max, "dynamic": self.dynamic}


@dataclass
class ExportResult:
    path: Path
    exporter: str  # "dynamo" | "torchscript"
    opset: int
    input_names: list[str]
    output_names: list[str]
    fallback_reason: str | None = None


@contextlib.contextmanager
def _quiet():
    """The exporters print progress and warnings meant for PyTorch developers, not our users."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lvl in zip(loggers, levels):
            lg.setLevel(lvl)


def _export_dynamo(model, example, path: Path, opset: int, in_names, out_names, batch: BatchSpec) -> None:
    import torch

    dynamic_shapes = None
    if batch.dynamic:
        # min=1 trips torch.export's 0/1 specialisation; the graph is valid for 1 anyway.
        dim = torch.export.Dim("batch", min=max(2, batch.min) if batch.min > 1 else 1, max=max(batch.max, 2))
        dynamic_shapes = ({0: dim},)
    with _quiet():
        prog = torch.onnx.export(
            model,
            (example,),
            None,
            dynamo=True,
            opset_version=opset,
            input_names=in_names,
            output_names=out_names,
            dynamic_shapes=dynamic_shapes,
            external_data=False,
            optimize=True,
        )
        prog.save(str(path), external_data=False)


def _export_torchscript(model, example, path: Path, opset: int, in_names, out_names, batch: BatchSpec) -> None:
    import torch

    dynamic_axes = {n: {0: "batch"} for n in [*in_names, *out_names]} if batch.dynamic else None
    with _quiet():
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=in_names,
            output_names=out_names,
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )


class _OutputAdapter:
    """Turns HF model outputs into a plain tuple so both exporters name outputs the same way."""

    def __new__(cls, model, output_names):
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = model

            def forward(self, x):
                out = self.inner(x)
                if isinstance(out, torch.Tensor):
                    return out
                return tuple(getattr(out, n) for n in output_names)

        return Wrapped().eval()


def check_opset(opset: int, exporter: str) -> None:
    """One line when the opset cannot be written by the chosen exporter (before any work is done)."""
    if not 17 <= opset <= 23:
        raise VitdeployError(f"--opset {opset} is not supported", "use an opset from 17 to 23 (LayerNormalization needs 17)")
    if exporter == "torchscript" and opset > TORCHSCRIPT_MAX_OPSET:
        raise VitdeployError(f"the TorchScript exporter writes opsets up to {TORCHSCRIPT_MAX_OPSET}, not {opset}",
                             f"use --opset {TORCHSCRIPT_MAX_OPSET} or less, or --exporter dynamo")


def export_onnx(
    model,
    example,
    path: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    batch: BatchSpec | None = None,
    output_names: tuple[str, ...] = ("logits",),
    input_name: str = "input",
    exporter: str = "auto",
) -> ExportResult:
    """Export `model` on `example`; `exporter` is auto (dynamo, then TorchScript), dynamo or torchscript."""
    import onnx
    import torch

    check_opset(opset, exporter)
    batch = batch or BatchSpec()
    path = Path(path)
    wrapped = _OutputAdapter(model, list(output_names))
    in_names, out_names = [input_name], list(output_names)
    fallback_reason = None
    used = None
    with torch.no_grad():
        if exporter in ("auto", "dynamo"):
            try:
                _export_dynamo(wrapped, example, path, opset, in_names, out_names, batch)
                used = "dynamo"
            except Exception as e:  # torch.export raises many types; all mean "cannot trace"
                if exporter == "dynamo":
                    raise VitdeployError(
                        f"the dynamo exporter failed: {str(e).splitlines()[0][:200]}", "try --exporter torchscript"
                    ) from None
                fallback_reason = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            # torch's dynamo exporter has no opset-17 translations: it writes 18 and down-converts,
            # keeping 18 when that fails. The user asked for `opset`; TorchScript can write it.
            written = _opset_of(path) if used == "dynamo" else opset
            if exporter == "auto" and written != opset and opset <= TORCHSCRIPT_MAX_OPSET:
                fallback_reason = f"the dynamo exporter wrote opset {written}, not the requested {opset}"
                used = None
        if used is None:
            if opset > TORCHSCRIPT_MAX_OPSET:
                raise VitdeployError(
                    f"the dynamo exporter failed ({fallback_reason}) and TorchScript writes opsets up to "
                    f"{TORCHSCRIPT_MAX_OPSET}, not {opset}", f"use --opset {TORCHSCRIPT_MAX_OPSET} or less")
            _export_torchscript(wrapped, example, path, opset, in_names, out_names, batch)
            used = "torchscript"
    drop_default_scatter_reduction(path)
    onnx.checker.check_model(str(path))
    real_opset = _opset_of(path)
    if real_opset != opset:
        raise VitdeployError(f"the {used} exporter wrote opset {real_opset}, not the requested {opset}",
                             "try another --opset or --exporter")
    return ExportResult(path, used, real_opset, in_names, out_names, fallback_reason)


SCATTER_OPS = ("ScatterND", "ScatterElements")


def drop_scatter_reduction_none(model) -> int:
    """Delete `reduction="none"` from ScatterND/ScatterElements nodes (in place); returns how many.

    "none" is the default, so the graph means the same; the dynamo exporter writes it out (for the
    `aten.slice_scatter` in e.g. Deformable DETR's box head) and TensorRT < 10.9 rejects ScatterND's
    `reduction` attribute whatever its value (onnx-tensorrt 10.1-GA onnxOpImporters.cpp ScatterND).
    """
    dropped = 0
    for node in model.graph.node:
        if node.op_type in SCATTER_OPS and node.domain in ("", "ai.onnx"):
            for a in list(node.attribute):
                if a.name == "reduction" and a.s in (b"none", "none"):
                    node.attribute.remove(a)
                    dropped += 1
    return dropped


def drop_default_scatter_reduction(path: Path) -> int:
    """drop_scatter_reduction_none on the file at `path`, rewritten only when something changed."""
    import onnx

    from vitdeploy.artifact import atomic_save_onnx

    model = onnx.load(str(path))
    dropped = drop_scatter_reduction_none(model)
    if dropped:
        atomic_save_onnx(model, path)
    return dropped


def _opset_of(path: Path) -> int | None:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)


# ----------------------------------------------------------------------------- the verified export

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
    normalized = normalize_export(out_path, size, opts.batch)
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
        "postprocessing": postprocessing_for(info, model),
        "batch": opts.batch.to_dict(),
        "export": {
            "exporter": res.exporter,
            "fallback_reason": res.fallback_reason,
            "opset": res.opset,
            **io_signature(out_path),
            "parity": parity,
            **({"normalized": normalized} if normalized else {}),
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


def normalize_export(path: Path, size, batch: BatchSpec) -> dict | None:
    """Compute the export's FP64 index/grid islands in FP32 (`deploy.normalize`), in place.

    The TorchScript exporter writes some grids in FP64 although PyTorch computes them in FP32;
    ONNX Runtime cannot run them (no FP64 GridSample) and TensorRT casts DOUBLE down anyway.
    The parity check that follows then compares the normalised graph with PyTorch.
    """
    import numpy as np
    import onnx

    from vitdeploy.artifact import atomic_write_bytes
    from vitdeploy.console import phase
    from vitdeploy.deploy.normalize import describe, find_fp64_islands, normalize_fp64

    model = onnx.load(str(path))
    if not find_fp64_islands(model):
        return None
    phase("computing the export's FP64 index/grid islands in FP32")
    feeds = {model.graph.input[0].name: random_images(batch.opt, size, seed=7).astype(np.float32)}
    normalized, report = normalize_fp64(model, feeds)
    if report["normalized"]:
        atomic_write_bytes(path, normalized.SerializeToString())
    report["summary"] = describe(report)
    return report


def summarize_parity(parity: dict) -> str:
    parts = [f"{n} max-abs {w['max_abs']:.2e} cos {w['cosine']:.6f}" for n, w in parity["worst"].items()]
    return ", ".join(parts) + f" (batch {','.join(map(str, parity['batches']))})"
