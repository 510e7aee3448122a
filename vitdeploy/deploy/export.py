"""PyTorch → ONNX export.

The dynamo exporter (torch.export) is tried first because it is where PyTorch's
ONNX support is going; models it cannot trace fall back to the TorchScript
exporter, and, where the opset is not pinned, to another opset. Every attempt is
recorded with the operator that stopped it; a failure of all of them is one line
naming each exporter, opset and operator. Known exporter failures of popular
models are patched around while exporting (`export_patches.py`).
"""
from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from dataclasses import dataclass, field
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
    attempts: list[dict] = field(default_factory=list)  # every exporter/opset tried, in order, and why it failed
    patches: list[str] = field(default_factory=list)  # export patches (deploy/export_patches.py) that changed the trace


@contextlib.contextmanager
def _quiet():
    """The exporters print progress and warnings meant for PyTorch developers, not our users -- some from C++
    (TorchScript's "Torch IR graph at exception"), so stdout is silenced at the file-descriptor level."""
    import os
    import sys
    import tempfile

    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    sys.stdout.flush()
    saved = None
    try:
        saved = os.dup(1)
    except OSError:  # no fd 1 (an embedding host): Python-level silence only
        pass
    sink = tempfile.TemporaryFile()
    try:
        if saved is not None:
            os.dup2(sink.fileno(), 1)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)
        sink.close()
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
        prog.save(str(path), external_data=_weights_over_threshold(model))


def _weights_over_threshold(model) -> bool:
    """Whether the module's parameters and buffers are over the external-data threshold (vitdeploy.onnx_files)."""
    from vitdeploy.onnx_files import external_threshold

    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors) > external_threshold()


def normalise_storage(path: Path) -> None:
    """One data file beside the graph (`NAME.data`) when the weights are over the threshold, none below it:
    TorchScript writes one file per tensor above 2 GiB and none below; dynamo's save already writes one."""
    import onnx

    from vitdeploy.onnx_files import consolidate_external_data, data_files, external_threshold, save_onnx

    graph = onnx.load(str(path), load_external_data=False)
    if data_files(path, graph):
        del graph
        consolidate_external_data(path)
    elif path.stat().st_size > external_threshold():
        save_onnx(graph, path, external=True)


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


def flatten_outputs(out) -> list[tuple[str, object]]:
    """A module's outputs as (name, tensor) pairs: a tensor is `output`, a tuple/list `output_0, ...`, a dict or
    HF ModelOutput its keys (tuples inside them `key_0, ...`); None entries (absent optional outputs) are left out."""
    import torch

    if isinstance(out, torch.Tensor):
        return [("output", out)]
    if isinstance(out, dict):  # ModelOutput is an OrderedDict of its non-None fields
        items = list(out.items())
    elif isinstance(out, (tuple, list)):
        items = [(f"output_{i}", v) for i, v in enumerate(out)]
    else:
        raise TypeError(f"the model returned a {type(out).__name__}, not tensors")
    flat = []
    for name, v in items:
        if isinstance(v, torch.Tensor):
            flat.append((name, v))
        elif isinstance(v, (tuple, list)):
            flat.extend((f"{name}_{i}", t) for i, t in enumerate(v) if isinstance(t, torch.Tensor))
    return flat


def select_outputs(out, names) -> list:
    """The tensors `names` refer to in a module's output: by name, or by position when none of the names is one of
    the output's own (--output-names renaming all of them); a single tensor is the one output, whatever its name."""
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    pairs = flatten_outputs(out)
    flat = dict(pairs)
    missing = [n for n in names if n not in flat]
    if len(missing) == len(names) == len(pairs):  # --output-names renamed every output: by position
        return [t for _, t in pairs]
    if missing:
        raise VitdeployError(f"the model has no output '{missing[0]}' (it returns {', '.join(flat) or 'nothing'})",
                             "pass --output-names with names it returns, or none to keep its own")
    return [flat[n] for n in names]


class _OutputAdapter:
    """Turns tensors, tuples, dicts and HF model outputs into a plain tuple in `output_names` order, so both
    exporters name outputs the same way."""

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
                picked = select_outputs(out, output_names)
                return picked[0] if len(picked) == 1 else tuple(picked)

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
    fallback_opsets: tuple[int, ...] = (),
) -> ExportResult:
    """Export `model` on `example`; `exporter` is auto (dynamo, then TorchScript), dynamo or torchscript.

    `fallback_opsets`: opsets to try, in order, when every exporter fails at `opset` (empty: `opset` is pinned).
    """
    import torch

    from vitdeploy.deploy.export_patches import patched

    check_opset(opset, exporter)
    batch = batch or BatchSpec()
    path = Path(path)
    wrapped = _OutputAdapter(model, list(output_names))
    in_names, out_names = [input_name], list(output_names)
    attempts: list[dict] = []
    used = None
    for attempt_opset, name in plan_attempts(exporter, opset, fallback_opsets):
        if attempt_opset != opset and not _opset_may_help(attempts, name):
            continue  # this exporter failed at the requested opset for a reason another opset does not change
        _remove_export(path)
        try:
            with torch.no_grad(), patched() as applied:
                (_export_dynamo if name == "dynamo" else _export_torchscript)(
                    wrapped, example, path, attempt_opset, in_names, out_names, batch)
            normalise_storage(path)
            drop_default_scatter_reduction(path)
            # torch's dynamo exporter has no opset-17 translations: it writes 18 and down-converts,
            # keeping 18 when that fails. The user asked for `opset`; TorchScript can write it.
            written = _opset_of(path)
            if written != attempt_opset:
                raise _WrongOpset(f"the {name} exporter wrote opset {written}, not the requested {attempt_opset}")
        except VitdeployError:
            _remove_export(path)
            raise
        except Exception as e:  # the exporters raise many types; each means "this one could not export it"
            attempts.append({"exporter": name, "opset": attempt_opset, **describe_failure(e)})
            _remove_export(path)
            continue
        attempts.append({"exporter": name, "opset": attempt_opset, "ok": True, "patches": applied})
        used = (name, attempt_opset, applied)
        break
    if used is None:
        _remove_export(path)
        raise export_failure(attempts, exporter, opset, fallback_opsets)
    import onnx

    onnx.checker.check_model(str(path))
    failed = [a for a in attempts if not a.get("ok")]
    reason = "; ".join(attempt_line(a) for a in failed) if failed else None
    if reason:
        reason += f"; used {used[0]} (opset {used[1]})"
    return ExportResult(path, used[0], used[1], in_names, out_names, reason, attempts, list(used[2]))


class _WrongOpset(Exception):
    pass


def _remove_export(path: Path) -> None:
    """A failed or superseded attempt's files: the graph and what its exporter wrote beside it (its data file;
    TorchScript's one file per tensor above 2 GiB goes into the folder the caller stages the export in)."""
    import onnx

    from vitdeploy.onnx_files import data_files

    if path.is_file():
        try:
            names = data_files(path, onnx.load(str(path), load_external_data=False))
        except Exception:  # a half-written graph: only its own name is known
            names = []
        for n in names:
            (path.parent / n).unlink(missing_ok=True)
    path.unlink(missing_ok=True)
    Path(f"{path}.data").unlink(missing_ok=True)


def _opset_may_help(attempts: list[dict], exporter: str) -> bool:
    """Whether `exporter`'s failure at the requested opset mentions the opset (TorchScript: "... to ONNX opset
    version 18 is not supported"; a wrong opset written), so that another opset is worth a try."""
    mine = [a for a in attempts if a["exporter"] == exporter and not a.get("ok")]
    return not mine or any("opset" in (a.get("error") or "") for a in mine)


def plan_attempts(exporter: str, opset: int, fallback_opsets=()) -> list[tuple[int, str]]:
    """(opset, exporter) pairs in the order they are tried: each exporter at the requested opset, then the
    fallback opsets. TorchScript writes no opset above 20."""
    exporters = ["dynamo", "torchscript"] if exporter == "auto" else [exporter]
    out = []
    for o in [opset, *[f for f in fallback_opsets if f != opset]]:
        for name in exporters:
            if name == "torchscript" and o > TORCHSCRIPT_MAX_OPSET:
                continue
            if (o, name) not in out:
                out.append((o, name))
    return out


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_OPERATOR_PATTERNS = (
    re.compile(r"target=torch\.ops\.([\w.]+)"),  # dynamo: "Error when translating node ... target=torch.ops.aten.x.default"
    re.compile(r"Exporting the operator '([\w:.]+)'"),  # TorchScript: UnsupportedOperatorError
    re.compile(r"OpOverload\(op='([\w.]+)'"),  # dynamo dispatcher: no ONNX function for an overload
    re.compile(r"\b(aten::\w+|prim::\w+|aten\.\w+(?:\.\w+)?)"),
)


def describe_failure(e: BaseException) -> dict:
    """{"operator": "aten.unfold" or None, "error": "Type: first line of the innermost cause"} for an exporter exception."""
    if isinstance(e, _WrongOpset):
        return {"operator": None, "error": str(e)}
    chain, seen = [], set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    text = _ANSI.sub("", "\n".join(str(c) for c in chain))
    operator = None
    for pat in _OPERATOR_PATTERNS:
        m = pat.search(text)
        if m:
            operator = re.sub(r"^(aten|prims?)\.(\w+)\.\w+$", r"\1.\2", m.group(1))
            break
    # torch's ONNX exporter lists the causes under "## Exception summary", innermost first
    summary = text.split("## Exception summary", 1)[1] if "## Exception summary" in text else ""
    m = re.search(r"<class '([\w.]+)'>: (.+)", summary)
    if m:
        error = f"{m.group(1).rsplit('.', 1)[-1]}: {m.group(2).strip()}"
    else:
        inner = chain[-1]
        lines = [ln.strip() for ln in _ANSI.sub("", str(inner)).splitlines() if ln.strip()]
        error = f"{type(inner).__name__}: {lines[0]}" if lines else type(inner).__name__
    return {"operator": operator, "error": error[:240]}


def attempt_line(a: dict) -> str:
    """'dynamo (opset 18) failed on aten.scaled_dot_product_attention: AssertionError: only 4D ...'"""
    on = f" on {a['operator']}" if a.get("operator") else ""
    return f"{a['exporter']} (opset {a['opset']}) failed{on}: {_short(a.get('error') or '')}"


def _short(error: str, limit: int = 140) -> str:
    """The first sentence of an exporter's message (they run to paragraphs), at most `limit` characters."""
    first = re.split(r"(?<=[a-z0-9)'\]])\. ", error, maxsplit=1)[0]
    return first if len(first) <= limit else first[: limit - 1] + "…"


def export_failure(attempts: list[dict], exporter: str, opset: int, fallback_opsets) -> VitdeployError:
    """The one line for an export no exporter managed: every attempt (grouped by exporter), then what is left to try."""
    if len(attempts) == 1 and "wrote opset" in (attempts[0].get("error") or ""):
        return VitdeployError(attempts[0]["error"], "try another --opset or --exporter")
    groups: dict[str, list[dict]] = {}
    for a in attempts:
        groups.setdefault(a["exporter"], []).append(a)
    parts = []
    for name, tries in groups.items():
        opsets = "/".join(str(a["opset"]) for a in tries)
        last = tries[-1]
        on = f" on {last['operator']}" if last.get("operator") else ""
        parts.append(f"{name} (opset {opsets}) failed{on}: {_short(last.get('error') or '')}")
    left = []
    if exporter != "auto":
        left.append("--exporter auto (tries both exporters)")
    if not fallback_opsets:
        left.append(f"another --opset (tried only {opset})")
    hint = ("try " + " or ".join(left)) if left else \
        "export the model yourself (torch.onnx.export) and pass --onnx FILE; please report the model and operator"
    return VitdeployError("ONNX export failed: " + "; then ".join(parts), hint)


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

    model = onnx.load(str(path), load_external_data=False)  # the graph: its weights stay where they are
    dropped = drop_scatter_reduction_none(model)
    if dropped:
        atomic_save_onnx(model, path)
    return dropped


def _opset_of(path: Path) -> int | None:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
