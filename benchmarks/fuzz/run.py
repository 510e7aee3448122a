"""Fuzz the rewrite passes on seeded random small models; every case in this one process.

    python benchmarks/fuzz/run.py --cases 200 --seed 0 --out benchmarks/results/rewrite_fuzz.json
    python benchmarks/fuzz/run.py --seed 0 --only 17                  # replay case 17 of seed 0
    python benchmarks/fuzz/run.py --config '{"family": "timm_swin", ...}'  # replay a printed configuration

Each case: build a random model (benchmarks/fuzz/families.py), export it with the configuration's
exporter and opset, rewrite it with every pass in plugin and in native mode, run the whole rewritten
graph through `vitdeploy.onnxrt.session` (all cases share the process: several plugin families are
open one after another, as in a service), compare with PyTorch (relative max error) and count
replaced against expected blocks. A case fails when:

- miscompile: the rewritten graph differs from PyTorch by more than --tol (relative max error) while
  the plain export does not, or the rewrite's own whole-graph check failed;
- expectation: a pass replaced another number of blocks than `families.EXPECT` says, or touched a
  graph it must leave alone;
- unnamed decline: a block the pass owns was not replaced and its report gives no reason;
- error: anything raised on the way (the traceback's last line is recorded).
A failing case prints its configuration and a replay command. Exit 1 when any case failed.
"""
from __future__ import annotations

import argparse
import collections
import json
import re
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.fuzz import families as F  # noqa: E402

SCHEMA = "vitdeploy.rewrite_fuzz/1"
TOL = 1e-3  # relative max error vs PyTorch (FP32 everywhere; the exports themselves sit near 1e-6)
MODES = ("plugin", "native")
INFO_NOTE = "(kept only if the outputs still match)"  # swin's note on a measured mask: not a decline


def rel_err(ref, got) -> float:
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    if ref.shape != got.shape or not np.isfinite(got).all():
        return float("inf")
    return float(np.abs(ref - got).max(initial=0.0) / max(np.abs(ref).max(initial=0.0), 1e-6))


def _outputs_err(refs, gots) -> float:
    return max(rel_err(r, g) for r, g in zip(refs, gots))


def _torch_outputs(built, x):
    import torch

    with torch.no_grad():
        out = built.model(torch.from_numpy(x))
    if isinstance(out, torch.Tensor):
        return [out.numpy()]
    return [getattr(out, n).numpy() for n in built.outputs]


def _export(built, cfg, path):
    """Export with the case's exporter; if that exporter cannot trace the model, the other one."""
    from vitdeploy.deploy.export import BatchSpec, export_onnx
    from vitdeploy.errors import VitdeployError

    batch = BatchSpec(1, 2, 4) if cfg["dynamic_batch"] else BatchSpec.static(int(built.example.shape[0]))
    try:
        res = export_onnx(built.model, built.example, path, opset=cfg["opset"], batch=batch, output_names=built.outputs,
                          exporter=cfg["exporter"])
        return res.exporter, res.opset, None
    except VitdeployError as e:
        other = "torchscript" if cfg["exporter"] == "dynamo" else "dynamo"
        opset = min(cfg["opset"], 20) if other == "torchscript" else max(cfg["opset"], 18)
        res = export_onnx(built.model, built.example, path, opset=opset, batch=batch, output_names=built.outputs, exporter=other)
        return res.exporter, res.opset, f"{cfg['exporter']} failed: {e.message}"


def _declines(rep: dict) -> list[str]:
    """What a pass report says it did not rewrite: refused candidates and decline notes."""
    out = [f"{c['name']}: {c.get('reason', '')}" for c in rep["candidates"] if not c["replaced"]]
    return out + [n for n in rep["notes"] if INFO_NOTE not in n]


def _same_graph(a, b) -> bool:
    return [(n.op_type, list(n.input), list(n.output)) for n in a.graph.node] == \
           [(n.op_type, list(n.input), list(n.output)) for n in b.graph.node]


def run_case(cfg: dict, workdir: Path, tol: float = TOL) -> dict:
    """One configuration end to end: measure it (`measure`), then hold it to `EXPECT` (`judge`)."""
    return judge(measure(cfg, workdir), tol)


def measure(cfg: dict, workdir: Path) -> dict:
    """Build, export, rewrite in both modes and run; the JSON record of what happened (never raises)."""
    import onnx

    from vitdeploy.deploy.rewrite.driver import run_passes
    from vitdeploy.errors import VitdeployError
    from vitdeploy.onnxrt import session

    rec = {"config": cfg, "modes": {}}
    started = time.perf_counter()
    try:
        built = F.build(cfg)
        rec["blocks"] = dict(collections.Counter(b["kind"] for b in built.blocks))
        path = workdir / f"case{cfg['index']}.onnx"
        rec["exporter"], rec["opset"], fallback = _export(built, cfg, path)
        if fallback:
            rec["export_problem"] = fallback
        x = np.random.default_rng(cfg["seed"] + 1).standard_normal(tuple(built.example.shape)).astype(np.float32)
        ref = _torch_outputs(built, x)
        model = onnx.load(str(path))
        try:
            plain = session(model).run(None, {"input": x})
        except VitdeployError as e:  # an export ONNX Runtime cannot run is the exporter's problem, not the rewrite's
            rec["export_problem"] = f"{rec['exporter']} export does not run in ONNX Runtime: {e.message[:200]}"
            cfg2 = {**cfg, "exporter": "dynamo" if rec["exporter"] == "torchscript" else "torchscript"}
            cfg2["opset"] = max(cfg["opset"], 18) if cfg2["exporter"] == "dynamo" else min(cfg["opset"], 20)
            rec["exporter"], rec["opset"], _ = _export(built, cfg2, path)
            model = onnx.load(str(path))
            plain = session(model).run(None, {"input": x})
        rec["export_rel_err"] = _outputs_err(ref, plain)
        for mode in MODES:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out, report = run_passes(model, list(F.PASSES), mode, options={"msda_impl": cfg.get("msda_impl", "stock")})
            got = session(out).run(None, {"input": x})
            m = {"rel_err": _outputs_err(ref, got), "vs_export": _outputs_err(plain, got), "unchanged": _same_graph(model, out),
                 "passes": {}}
            whole = report.get("whole_graph")
            if whole is not None:
                m["whole_graph_passed"] = whole["passed"]
            for rep in report["passes"]:
                m["passes"][rep["pass"]] = {"found": rep["found"], "replaced": rep["replaced"], "declined": _declines(rep)}
            rec["modes"][mode] = m
    except Exception as e:  # noqa: BLE001 - a fuzz case records whatever broke
        tb = traceback.format_exception(type(e), e, e.__traceback__)
        rec["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
        rec["traceback"] = "".join(tb[-3:])[-1500:]
    rec["seconds"] = round(time.perf_counter() - started, 2)
    return rec


def judge(rec: dict, tol: float = TOL) -> dict:
    """Set `problems` and `status` from the measurements and `families.EXPECT` (which may change)."""
    problems = []
    if "error" in rec:
        problems.append(f"error: {rec['error']}")
    blocks = rec.get("blocks", {})
    expected = F.expected_counts([{"kind": k} for k, n in blocks.items() for _ in range(n)])
    for mode, m in rec["modes"].items():
        if m["rel_err"] > tol and rec["export_rel_err"] <= tol or m.get("whole_graph_passed") is False:
            problems.append(f"miscompile ({mode}): rewritten graph vs PyTorch rel err {m['rel_err']:.3g}, "
                            f"export alone {rec['export_rel_err']:.3g}")
        for name, p in m["passes"].items():
            exp = expected[name]
            p["expected"] = exp
            if p["replaced"] != exp["replace"]:
                problems.append(f"expectation ({mode}): {name} replaced {p['replaced']}, expected {exp['replace']} "
                                f"({_kinds_of(blocks, name)})")
            missing = max(exp["replace"] + exp["decline"] - p["replaced"], 0)
            if len(p["declined"]) < missing:
                problems.append(f"unnamed decline ({mode}): {name} left {missing} of its blocks, "
                                f"its report names {len(p['declined'])}")
        if not blocks and not m["unchanged"]:
            problems.append(f"expectation ({mode}): a model with nothing to replace came back changed")
    rec["problems"] = problems
    kinds = {p.split(" ", 1)[0].rstrip(":") for p in problems}
    rec["status"] = next((k for k in ("miscompile", "error", "unnamed", "expectation") if k in kinds), "ok")
    return rec


def _kinds_of(blocks: dict, pass_name: str) -> str:
    kinds = {k: n for k, n in blocks.items() if F.EXPECT[k][0] == pass_name}
    return ", ".join(f"{n} {k} ({F.EXPECT[k][1]})" for k, n in kinds.items()) or "no blocks of its kind"


def replay_command(cfg: dict) -> str:
    return f"python benchmarks/fuzz/run.py --config '{json.dumps(cfg, separators=(',', ':'))}'"


def print_case(rec: dict, k: int, total: int, console) -> None:
    """One line per case; a failing case adds its problems, its exact configuration and a replay command."""
    cfg = rec["config"]
    errs = [m["rel_err"] for m in rec["modes"].values()]
    plugin = rec["modes"].get("plugin", {}).get("passes", {})
    mark = "[green]✔[/]" if rec["status"] == "ok" else "[red]✘[/]"
    console.print(f"{mark} case {cfg['index']:>4} {cfg['family']:<12} {rec.get('exporter', '?'):<11} "
                  f"replaced {sum(p['replaced'] for p in plugin.values())}/{sum(rec.get('blocks', {}).values())} "
                  f"rel err {max(errs) if errs else float('nan'):.2g}  {rec['seconds']:.1f} s  [{k + 1}/{total}]")
    if rec["status"] != "ok":
        for p in rec["problems"]:
            console.print(f"    {p}")
        console.print(f"    config: {json.dumps(cfg)}")
        console.print(f"    replay: {replay_command(cfg)}")


def summarise(records: list[dict]) -> dict:
    """Per family: cases, blocks by kind, replaced (plugin mode) and the fraction, failures, worst error."""
    fam: dict[str, dict] = {}
    for r in records:
        f = fam.setdefault(r["config"]["family"], {"cases": 0, "blocks": 0, "replaced": 0, "declined_named": 0,
                                                   "export_problems": 0,
                                                   "kinds": collections.Counter(), "failed": 0, "miscompiles": 0,
                                                   "max_rel_err": 0.0, "seconds": 0.0})
        f["cases"] += 1
        f["export_problems"] += "export_problem" in r
        f["seconds"] += r["seconds"]
        f["failed"] += r["status"] != "ok"
        f["miscompiles"] += r["status"] == "miscompile"
        f["kinds"].update(r.get("blocks", {}))
        f["blocks"] += sum(r.get("blocks", {}).values())
        plugin = r["modes"].get("plugin")
        if plugin:
            f["replaced"] += sum(p["replaced"] for p in plugin["passes"].values())
            f["declined_named"] += sum(len(p["declined"]) for p in plugin["passes"].values())
        for m in r["modes"].values():
            f["max_rel_err"] = max(f["max_rel_err"], m["rel_err"])
    for f in fam.values():
        f["kinds"] = dict(f["kinds"])
        f["fraction_replaced"] = round(f["replaced"] / f["blocks"], 4) if f["blocks"] else None
        f["seconds"] = round(f["seconds"], 1)
    return fam


def print_table(summary: dict, records: list[dict], console) -> None:
    from rich.table import Table

    t = Table(title="rewrite fuzz", box=None, pad_edge=False)
    for col in ("family", "cases", "blocks", "replaced", "fraction", "declined (named)", "failed", "miscompiles",
                "max rel err", "export fallbacks", "s"):
        t.add_column(col, justify="left" if col == "family" else "right")
    for name, f in sorted(summary.items()):
        frac = "-" if f["fraction_replaced"] is None else f"{100 * f['fraction_replaced']:.0f}%"
        t.add_row(name, str(f["cases"]), str(f["blocks"]), str(f["replaced"]), frac, str(f["declined_named"]),
                  str(f["failed"]), str(f["miscompiles"]), f"{f['max_rel_err']:.2g}", str(f["export_problems"]),
                  f"{f['seconds']:.0f}")
    console.print(t)
    kinds = collections.Counter()
    for f in summary.values():
        kinds.update(f["kinds"])
    console.print("  blocks by kind: " + ", ".join(f"{k} {n} ({F.EXPECT[k][1]})" for k, n in sorted(kinds.items())))


def environment() -> dict:
    import platform

    import onnxruntime
    import timm
    import torch
    import transformers

    from vitdeploy.bench.environment import git_commit

    return {"python": platform.python_version(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "timm": timm.__version__, "transformers": transformers.__version__, "git": git_commit(REPO),
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=20, help="number of cases (default 20)")
    ap.add_argument("--seed", type=int, default=0, help="run seed: case i of seed S is always the same model")
    ap.add_argument("--start", type=int, default=0, help="first case index (resume a run)")
    ap.add_argument("--only", type=int, action="append", help="run just this case index (repeatable)")
    ap.add_argument("--families", help=f"comma list from {','.join(F.GENERATORS)}")
    ap.add_argument("--config", help="replay one configuration (the JSON a failing case prints)")
    ap.add_argument("--out", help="write the JSON record here (rewritten after every case)")
    ap.add_argument("--tol", type=float, default=TOL, help=f"relative max error vs PyTorch (default {TOL})")
    args = ap.parse_args(argv)

    import logging

    from vitdeploy.artifact import atomic_write_json
    from vitdeploy.console import console

    logging.getLogger("torch._subclasses.fake_tensor").setLevel(logging.CRITICAL)  # dynamo's trace of a failed export

    fams = args.families.split(",") if args.families else None
    unknown = [f for f in fams or [] if f not in F.GENERATORS]
    if unknown:
        ap.error(f"unknown family {unknown[0]}; choose from {', '.join(F.GENERATORS)}")
    if args.cases < 1:
        ap.error("--cases must be at least 1")
    if args.config:
        configs = [json.loads(args.config)]
    else:
        indices = args.only or range(args.start, args.start + args.cases)
        configs = [F.generate(args.seed, i, fams) for i in indices]
    records: list[dict] = []
    env = environment()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vitdeploy_fuzz_") as tmp:
        for k, cfg in enumerate(configs):
            rec = run_case(cfg, Path(tmp), args.tol)
            records.append(rec)
            print_case(rec, k, len(configs), console)
            if args.out:
                atomic_write_json(args.out, _record(args, env, records, started))
    summary = summarise(records)
    print_table(summary, records, console)
    failed = [r for r in records if r["status"] != "ok"]
    console.print(f"{len(records)} cases, {len(failed)} failed, {sum(r['status'] == 'miscompile' for r in records)} miscompiles"
                  f"  [dim]{time.perf_counter() - started:.0f} s[/]")
    if args.out:
        atomic_write_json(args.out, _record(args, env, records, started))
        console.print(f"  wrote {args.out}")
    return 1 if failed else 0


def _record(args, env, records, started) -> dict:
    return document(args.seed, args.tol, env, time.perf_counter() - started, records)


def _reason(text: str) -> str:
    """A decline without the block's name: 'stage 2 block 1: x' / "window attention at 'n' not rewritten: x" -> x."""
    text = re.sub(r"^(window attention at '[^']*' not rewritten|[^:]*(block|layer|core|blend)[^:]*): ", "", text)
    return re.sub(r"\d+", "N", text)  # '12 tokens per window ...' and '6 tokens ...' are one reason


def document(seed: int, tol: float, env: dict, seconds: float, records: list[dict]) -> dict:
    """The JSON file: run settings, the summary per family (with every decline reason and how often it
    was given), the failures with their replay commands, and one compact record per case."""
    summary = summarise(records)
    for fam, f in summary.items():
        reasons = collections.Counter(_reason(d) for r in records if r["config"]["family"] == fam
                                      for p in r["modes"].get("plugin", {}).get("passes", {}).values() for d in p["declined"])
        f["decline_reasons"] = dict(reasons.most_common())
    compact = []
    for r in records:
        c = {k: v for k, v in r.items() if k not in ("modes", "traceback")}
        c["modes"] = {mode: {**{k: v for k, v in m.items() if k != "passes"},
                             "passes": {n: {"found": p["found"], "replaced": p["replaced"], "declined": len(p["declined"])}
                                        for n, p in m["passes"].items()}}
                      for mode, m in r["modes"].items()}
        compact.append(c)
    return {"schema": SCHEMA, "seed": seed, "cases": len(records), "tolerance_rel": tol, "expect": F.EXPECT,
            "environment": env, "seconds": round(seconds, 1), "summary": summary,
            "failed": [{"index": r["config"]["index"], "status": r["status"], "problems": r["problems"],
                        "replay": replay_command(r["config"])} for r in records if r["status"] != "ok"],
            "records": compact}


if __name__ == "__main__":
    sys.exit(main())
