"""PyTorch → ONNX export, verified: build the model, export it, prove the ONNX computes what PyTorch computes.

The dynamo exporter (torch.export) is tried first because it is where PyTorch's
ONNX support is going; models it cannot trace fall back to the TorchScript
exporter, and, where the opset is not pinned, to another opset. Every attempt is
recorded with the operator that stopped it; a failure of all of them is one line
naming each exporter, opset and operator. Known exporter failures of popular
models are patched around while exporting (`export_patches.py`).
`export_verified` is the stage as the build's export step and `vitdeploy export` run it:
export, parity vs PyTorch at one or two batch sizes, and the manifest fields.
"""
from __future__ import annotations

import contextlib
import io
import logging
import re
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
    HF ModelOutput its keys, a namedtuple, dataclass or SimpleNamespace its field names (tuples inside them
    `key_0, ...`); None entries (absent optional outputs) are left out."""
    import torch

    if isinstance(out, torch.Tensor):
        return [("output", out)]
    if isinstance(out, dict):  # ModelOutput is an OrderedDict of its non-None fields
        items = list(out.items())
    elif isinstance(out, tuple) and hasattr(out, "_fields"):  # a namedtuple: its field names
        items = list(zip(out._fields, out))
    elif isinstance(out, (tuple, list)):
        items = [(f"output_{i}", v) for i, v in enumerate(out)]
    elif hasattr(out, "__dict__") and any(isinstance(v, torch.Tensor) for v in vars(out).values()):
        items = list(vars(out).items())  # a dataclass or SimpleNamespace of tensors: its attribute names
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
    normalized = normalize_export(out_path, size, opts.batch)
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
        "postprocessing": postprocessing_for(info, model),
        "batch": opts.batch.to_dict(),
        "export": {
            "exporter": res.exporter,
            "fallback_reason": res.fallback_reason,
            "opset": res.opset,
            **({"attempts": res.attempts} if len(res.attempts) > 1 else {}),
            **({"patches": res.patches} if res.patches else {}),
            **io_signature(out_path),
            **({"normalized": normalized} if normalized else {}),
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


def export_verified_isolated(info: ModelInfo, out_path: Path, opts: ExportOptions) -> tuple[ExportResult, dict, dict]:
    """`export_verified`, in a child process when the model's weights are over the external-data threshold.

    PyTorch's dynamo exporter (torch 2.14.1) leaves about twice the model's weights alive in the process after
    it returns, held from C++ (deleting the module and the ONNX program frees nothing); for ViT-H that is
    5 GB every later step of the build would carry. A child process gives it all back when it ends. Smaller
    models export in this process (a child costs seconds of start-up)."""
    size = _weight_bytes(info, opts)
    from vitdeploy.onnx_files import external_threshold

    if size is None or size <= external_threshold():
        return export_verified(info, out_path, opts)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(export_verified, info, out_path, opts).result()


def _weight_bytes(info: ModelInfo, opts: ExportOptions) -> int | None:
    """The module's parameter and buffer bytes, from a build on the meta device (no weights made); None when the
    model cannot be built that way (not a timm architecture, or weights the build downloads or reads)."""
    if info.source != "timm" or opts.pretrained:
        return None
    try:
        model = build_model(info, img_size=opts.img_size or info.input_size, small=opts.small, device="meta")
    except Exception:
        return None
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def normalize_export(path: Path, size, batch: BatchSpec) -> dict | None:
    """Compute the export's FP64 index/grid islands in FP32 (`deploy.normalize`), in place.

    The TorchScript exporter writes some grids in FP64 although PyTorch computes them in FP32;
    ONNX Runtime cannot run them (no FP64 GridSample) and TensorRT casts DOUBLE down anyway.
    The parity check that follows then compares the normalised graph with PyTorch.
    """
    import numpy as np

    from vitdeploy.console import phase
    from vitdeploy.deploy.normalize import describe, find_fp64_islands, normalize_fp64
    from vitdeploy.onnx_files import load_onnx_model, save_onnx

    if not find_fp64_islands(load_onnx_model(path, load_external_data=False)):  # the graph alone: no weights read
        return None
    model = load_onnx_model(path)
    phase("computing the export's FP64 index/grid islands in FP32")
    feeds = {model.graph.input[0].name: random_images(batch.opt, size, seed=7).astype(np.float32)}
    normalized, report = normalize_fp64(model, feeds)
    if report["normalized"]:
        save_onnx(normalized, path)
    report["summary"] = describe(report)
    return report


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
