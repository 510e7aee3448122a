"""Verify-then-replace: the driver every rewrite pass runs in.

A pass only knows how to *find* its subgraphs (`find`) and how to *emit* a
replacement (`emit`). This module does the rest, the same way for every pass:

1. capture the real activations at every candidate's boundary by running the
   original graph once (ONNX Runtime, seeded random input or user feeds);
2. for each candidate, run the original subgraph and the replacement on those
   activations and on fresh random inputs of the same shape, and compare;
3. splice in only the replacements that matched, warn (naming the candidate)
   about the ones that did not, and leave those untouched;
4. finally compare the whole rewritten graph with the original.

What passes share to find and emit lives beside it: `graph.py` (structural queries),
`probe.py` (ONNX Runtime runs of graphs and pieces, with overridden tensors), `emit.py`
(uniquely named replacement nodes).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from vitdeploy.deploy.rewrite.probe import capture, graph_source, run, standalone, static_feeds
from vitdeploy.errors import VerificationError, VitdeployError
from vitdeploy.onnxgraph import strip_stale_value_info
from vitdeploy.parity import Tolerance, compare

MODES = ("plugin", "native")


@dataclass
class Candidate:
    """One matched subgraph. `inputs`/`outputs` are the tensors crossing its boundary."""

    name: str
    nodes: list[gs.Node]
    inputs: list[gs.Variable]
    outputs: list[gs.Variable]
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Emission:
    """What a pass emits for a candidate: new nodes whose `outputs[i]` replaces `candidate.outputs[i]`;
    `detail` says what the candidate becomes, and why, where a pass chooses (e.g. msda: which plugin)."""

    nodes: list[gs.Node]
    outputs: list[gs.Variable]
    detail: str | None = None


@dataclass
class CandidateResult:
    name: str
    replaced: bool
    max_abs: float | None = None
    cosine: float | None = None
    reason: str | None = None
    emitted: str | None = None  # what a replaced candidate became, where the pass chose (Emission.detail)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class PassReport:
    name: str
    mode: str
    found: int = 0
    replaced: int = 0
    nodes_before: int = 0
    nodes_after: int = 0
    candidates: list[CandidateResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "pass": self.name,
            "mode": self.mode,
            "found": self.found,
            "replaced": self.replaced,
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
            "candidates": [c.to_dict() for c in self.candidates],
            "notes": self.notes,
        }


class RewritePass:
    """Base class: subclasses set `name`, `description`, `modes` and implement find/emit."""

    name = "base"
    description = ""
    modes: tuple[str, ...] = MODES
    tolerance = Tolerance(atol=1e-4, rtol=1e-4, min_cosine=0.99999)

    def __init__(self, **options):
        self.options = options
        # node name -> (kind, cause) for every Softmax / Attention node `find` looked at and leaves
        # (kinds: vitdeploy.deploy.rewrite.census); the driver's census quotes them
        self.verdicts: dict[str, tuple[str, str]] = {}

    def find(self, graph: gs.Graph) -> tuple[list[Candidate], list[str]]:
        """Return matched candidates and notes on near-matches that were deliberately not matched."""
        raise NotImplementedError

    def emit(self, graph: gs.Graph, cand: Candidate, mode: str) -> Emission:
        raise NotImplementedError

    def extra_opsets(self, mode: str) -> dict[str, int]:
        """Custom domains the emitted nodes use (declared in the model's opset imports)."""
        return {}


def _domains(model: onnx.ModelProto) -> dict[str, int]:
    return {o.domain: o.version for o in model.opset_import if o.domain not in ("", "ai.onnx")}


# ----------------------------------------------------------------------------- driver

def verify_candidate(cand: Candidate, emission: Emission, values: dict[str, np.ndarray], opset: int,
                     domains: dict[str, int], tol: Tolerance, seed: int = 0) -> tuple[bool, float, float, str | None]:
    """Original subgraph vs replacement on captured activations and on random inputs."""
    act_inputs = [i for i in cand.inputs if not isinstance(i, gs.Constant)]
    try:
        original = standalone(cand.nodes, act_inputs, cand.outputs, values, opset, domains)
        for new, old in zip(emission.outputs, cand.outputs):
            if new.dtype is None:
                new.dtype = old.dtype if old.dtype is not None else values[old.name].dtype
        replacement = standalone(emission.nodes, act_inputs, emission.outputs, values, opset, domains)
    except Exception as e:  # a malformed emission is a refused candidate, not a crash
        return False, float("inf"), 0.0, f"could not build the subgraphs: {e}"
    rng = np.random.default_rng(seed)
    trials = [{i.name: values[i.name] for i in act_inputs}]
    rand = {}
    for i in act_inputs:
        v = values[i.name]
        rand[i.name] = rng.standard_normal(v.shape).astype(v.dtype) if np.issubdtype(v.dtype, np.floating) else v
    trials.append(rand)
    worst_abs, worst_cos = 0.0, 1.0
    for k, feeds in enumerate(trials):
        try:
            ref = run(original, feeds) if k else [values[o.name] for o in cand.outputs]
            got = run(replacement, feeds)
        except Exception as e:  # ONNX Runtime's whole message: the node, the shapes, the status
            return False, float("inf"), 0.0, f"replacement does not run: {' '.join(str(e).split())}"
        for o, r, g in zip(cand.outputs, ref, got):
            p = compare(o.name, r, g, tol)
            worst_abs, worst_cos = max(worst_abs, p.max_abs), min(worst_cos, p.cosine)
            if not p.passed:
                which = "captured activations" if k == 0 else "random inputs"
                return False, worst_abs, worst_cos, f"output {o.name} differs on {which}: max-abs {p.max_abs:.3g}, cosine {p.cosine:.6f}"
    return True, worst_abs, worst_cos, None


def splice(graph: gs.Graph, cand: Candidate, emission: Emission) -> None:
    """Make the emitted nodes produce the candidate's output tensors; cleanup drops the old nodes."""
    for old, new in zip(cand.outputs, emission.outputs):
        for n in list(old.inputs):
            n.outputs = [o for o in n.outputs if o is not old]
        for n in emission.nodes:
            n.outputs = [old if o is new else o for o in n.outputs]
    graph.nodes.extend(emission.nodes)


def run_pass(model: onnx.ModelProto, rw: RewritePass, mode: str = "plugin",
             feeds: dict[str, np.ndarray] | None = None, seed: int = 0) -> tuple[onnx.ModelProto, PassReport]:
    if mode not in rw.modes:
        raise VitdeployError(f"pass '{rw.name}' has no '{mode}' mode", f"choose from {', '.join(rw.modes)}")
    report = PassReport(rw.name, mode)
    from vitdeploy.onnx_files import infer_shapes

    try:
        inferred = infer_shapes(model)  # over the protobuf limit: on the graph alone (onnx's own cannot)
    except Exception:
        inferred = model
    graph = gs.import_onnx(inferred)
    report.nodes_before = len(graph.nodes)
    with graph_source(graph, inferred):  # activations while finding run `inferred` itself: no copy of the weights
        cands, notes = rw.find(graph)
    report.notes.extend(notes)
    report.found = len(cands)
    if not cands:
        report.nodes_after = report.nodes_before
        return model, report
    feeds = feeds if feeds is not None else static_feeds(model, seed=seed)
    names = sorted({t.name for c in cands for t in [*c.inputs, *c.outputs] if not isinstance(t, gs.Constant)})
    values = capture(model, names, feeds)
    opset = graph.opset
    domains = {**_domains(model), **rw.extra_opsets(mode)}
    from vitdeploy.console import phase

    for i, cand in enumerate(cands):
        phase(f"{rw.name}: verifying candidate {i + 1}/{len(cands)}")
        emission = rw.emit(graph, cand, mode)
        ok, max_abs, cos, why = verify_candidate(cand, emission, values, opset, domains, rw.tolerance, seed)
        if ok:
            splice(graph, cand, emission)
            report.replaced += 1
            for n in emission.nodes:  # a native emission's own attention is this pass's work, not a leftover
                if n.op in ("Softmax", "Attention") and n.domain in (None, "", "ai.onnx"):
                    rw.verdicts[n.name] = ("rewritten", f"{rw.name} {mode} rewrite of {cand.name}: plain attention "
                                                        "in TensorRT's fusible form")
        else:
            warnings.warn(f"{rw.name}: left {cand.name} untouched: {why}", stacklevel=2)
        report.candidates.append(CandidateResult(cand.name, ok, max_abs, cos, why, emission.detail if ok else None))
    graph.cleanup().toposort()
    out = gs.export_onnx(graph, do_type_check=False)
    # Keep the original IR version and opset imports, plus the emitted custom domains.
    out.ir_version = model.ir_version
    del out.opset_import[:]
    out.opset_import.extend(model.opset_import)
    for d, v in rw.extra_opsets(mode).items():
        if report.replaced and not any(o.domain == d for o in out.opset_import):
            out.opset_import.append(onnx.helper.make_opsetid(d, v))
    strip_stale_value_info(out)
    report.nodes_after = len(out.graph.node)
    return out, report


def run_passes(model: onnx.ModelProto, names: list[str], mode: str = "plugin",
               feeds: dict[str, np.ndarray] | None = None, options: dict | None = None,
               check_whole: bool = True) -> tuple[onnx.ModelProto, dict]:
    """Run the named passes in order; returns the rewritten model and a JSON-able report."""
    from vitdeploy.deploy.normalize import find_fp64_islands, normalize_fp64
    from vitdeploy.deploy.rewrite import load_pass

    from vitdeploy.deploy.rewrite.census import attention_census

    feeds = feeds if feeds is not None else static_feeds(model)
    # FP64 index/grid islands (TorchScript exports) are computed in FP32 first: ONNX Runtime cannot run an FP64
    # GridSample, and TensorRT has no FP64. Every candidate and the whole graph are then verified against
    # this normalised original (the report says so); its FP64 version is measured island by island.
    normalized = None
    if find_fp64_islands(model):
        model, normalized = normalize_fp64(model, feeds)
    reports = []
    verdicts: dict[str, tuple[str, str, str]] = {}
    current = model
    for name in names:
        rw = load_pass(name, **(options or {}))
        current, rep = run_pass(current, rw, mode, feeds)
        reports.append(rep.to_dict())
        verdicts.update({node: (*v, rw.name) for node, v in rw.verdicts.items()})
    result = {"mode": mode, "passes": reports,
              "nodes_before": len(model.graph.node), "nodes_after": len(current.graph.node),
              "softmax": attention_census(current, verdicts)}
    if normalized is not None:
        result["normalized"] = {**normalized, "verified_against": "the normalised original (FP64 index/grid islands "
                                "computed in FP32; each island's FP64 and FP32 results compared on these inputs)"}
    if check_whole and any(r["replaced"] for r in reports):
        result["whole_graph"] = whole_graph_parity(model, current, feeds)
    return current, result


def check_whole_graph(report: dict, hint: str = "nothing was written; rerun with fewer --passes and report the model") -> None:
    """Raise (exit 3) when the composed rewrites change the graph's outputs end to end."""
    whole = report.get("whole_graph")
    if whole is not None and not whole["passed"]:
        bad = next(o for o in whole["outputs"] if not o["passed"])
        raise VerificationError(
            f"the rewritten graph differs from the input: {bad['name']} max-abs {bad['max_abs']:.3g}, cosine {bad['cosine']:.6f}",
            hint,
        )


def whole_graph_parity(original: onnx.ModelProto, rewritten: onnx.ModelProto, feeds: dict[str, np.ndarray],
                       tol: Tolerance | None = None) -> dict:
    """End-to-end proof for the composed rewrites: same outputs on the same feeds."""
    tol = tol or Tolerance(atol=1e-4, rtol=1e-3)
    ref = run(original, feeds)
    got = run(rewritten, feeds)
    names = [o.name for o in original.graph.output]
    per = [compare(n, r, g, tol).to_dict() for n, r, g in zip(names, ref, got)]
    return {"passed": all(p["passed"] for p in per), "outputs": per, "tolerance": tol.to_dict()}
