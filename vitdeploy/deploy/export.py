"""PyTorch → ONNX export.

The dynamo exporter (torch.export) is tried first because it is where PyTorch's
ONNX support is going; models it cannot trace fall back to the TorchScript
exporter. Which one ran, and why the fallback happened, is recorded.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

from vitdeploy.errors import VitdeployError

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
