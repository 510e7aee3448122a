"""The `rewrite` command's flow: load an ONNX graph, run verified passes, publish the result.

Which passes run: the ones named, else the model family's (when the graph sits in a vitdeploy
artifact directory, i.e. next to a manifest.json), else every installed pass that supports the
mode (a pass that finds nothing leaves the graph as it is). The rewritten graph is compared with
the original end to end before anything is written; it is written atomically, and when it lands
in the artifact directory it came from, the manifest records the rewrite.
"""
from __future__ import annotations

import importlib.util
import time
import warnings
from pathlib import Path

from vitdeploy.deploy.artifacts import MANIFEST_NAME, atomic_write_bytes, atomic_write_json, load_manifest, sha256_file
from vitdeploy.errors import VerificationError, VitdeployError


def artifact_manifest(onnx_path: Path) -> dict | None:
    """The manifest of the vitdeploy artifact directory holding `onnx_path`, if any."""
    m = onnx_path.parent / MANIFEST_NAME
    return load_manifest(m) if m.is_file() else None


def installed_passes() -> list[str]:
    from vitdeploy.deploy.rewrite import PASSES

    return [n for n, target in PASSES.items() if importlib.util.find_spec(target.split(":")[0]) is not None]


def choose_passes(requested: list[str] | None, manifest: dict | None, mode: str) -> tuple[list[str], str]:
    """(pass names, why these) for this run."""
    from vitdeploy.deploy.rewrite import PASSES, load_pass

    if requested:
        unknown = [n for n in requested if n not in PASSES]
        if unknown:
            raise VitdeployError(f"unknown rewrite pass '{unknown[0]}'", f"choose from {', '.join(PASSES)}")
        missing = [n for n in requested if n not in installed_passes()]
        if missing:
            raise VitdeployError(f"rewrite pass '{missing[0]}' is not part of this install", "pick another with --passes")
        return list(requested), "--passes"
    alias = (manifest or {}).get("model", {}).get("alias")
    if alias:
        from vitdeploy.models import get_info

        try:
            passes = [n for n in get_info(alias).passes if n in installed_passes()]
            return passes, f"passes for {alias} (manifest)"
        except VitdeployError:
            pass
    usable = [n for n in installed_passes() if mode in load_pass(n).modes]
    return usable, "every installed pass"


def load_model(path: Path):
    from vitdeploy.deploy.artifacts import load_onnx

    return load_onnx(path)


def run_rewrite(in_path: str, out_path: str, *, passes: list[str] | None = None, mode: str = "plugin",
                options: dict | None = None, as_json: bool = False) -> dict:
    """Rewrite IN into OUT; returns the report (the same dict `--json` prints)."""
    from vitdeploy.console import console, stage
    from vitdeploy.deploy.rewrite.driver import run_passes

    src, dst = Path(in_path), Path(out_path)
    if dst.resolve() == src.resolve():
        raise VitdeployError("-o must differ from the input graph", "write the rewrite next to it, e.g. model.rewritten.onnx")
    if not dst.parent.is_dir():
        raise VitdeployError(f"output directory {dst.parent} does not exist", "create it or choose another -o")
    model = load_model(src)
    manifest = artifact_manifest(src)
    names, why = choose_passes(passes, manifest, mode)

    def work():
        with warnings.catch_warnings():  # refusals are in the report; do not print them twice
            warnings.simplefilter("ignore")
            rewritten, report = run_passes(model, names, mode, options=options)
        check_whole_graph(report)  # nothing is written when the end-to-end comparison fails
        report.update(input=str(src), output=str(dst), selected=why, seconds=round(time.perf_counter() - started, 2))
        atomic_write_bytes(dst, rewritten.SerializeToString())
        if manifest is not None and dst.parent.resolve() == src.parent.resolve():
            manifest["rewrite"] = {k: v for k, v in report.items() if k not in ("input", "output")}
            manifest.setdefault("files", {})["rewritten"] = {"path": dst.name, "sha256": sha256_file(dst)}
            atomic_write_json(src.parent / MANIFEST_NAME, manifest)
        return report

    started = time.perf_counter()
    if as_json:
        report = work()
    else:
        with stage("rewrite") as st:
            report = work()
            found = sum(p["found"] for p in report["passes"])
            replaced = sum(p["replaced"] for p in report["passes"])
            st.detail = f"{'+'.join(names) or 'no passes'} ({mode}): {replaced}/{found} subgraphs replaced -> {dst}"
    if not as_json:
        print_report(report, console)
    return report


def check_whole_graph(report: dict, hint: str = "nothing was written; rerun with fewer --passes and report the model") -> None:
    """Raise (exit 3) when the composed rewrites change the graph's outputs end to end."""
    whole = report.get("whole_graph")
    if whole is not None and not whole["passed"]:
        bad = next(o for o in whole["outputs"] if not o["passed"])
        raise VerificationError(
            f"the rewritten graph differs from the input: {bad['name']} max-abs {bad['max_abs']:.3g}, cosine {bad['cosine']:.6f}",
            hint,
        )


def print_report(report: dict, console) -> None:
    """Per pass: found, replaced, nodes before/after; then refusals and notes."""
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for col in ("pass", "mode", "found", "replaced", "nodes before", "nodes after"):
        table.add_column(col, justify="left" if col in ("pass", "mode") else "right")
    for p in report["passes"]:
        table.add_row(p["pass"], p["mode"], str(p["found"]), str(p["replaced"]), str(p["nodes_before"]), str(p["nodes_after"]))
    console.print(table)
    for p in report["passes"]:
        for c in p["candidates"]:
            if not c["replaced"]:
                console.print(f"  [yellow]refused[/] {p['pass']}: {c['name']}: {c.get('reason', '')}")
        for note in p["notes"]:
            console.print(f"  [dim]note[/] {p['pass']}: {note}")
    whole = report.get("whole_graph")
    if whole is not None:
        worst = max(o["max_abs"] for o in whole["outputs"])
        console.print(f"  whole graph vs input: max-abs {worst:.3g} ({'passed' if whole['passed'] else 'FAILED'})")
