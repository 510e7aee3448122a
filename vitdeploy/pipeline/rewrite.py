"""`vitdeploy rewrite`: the rewrite stage on its own: load an ONNX graph, run verified passes, publish the result.

Which passes run: the ones named, else the model family's (when the graph sits in a vitdeploy
artifact directory, i.e. next to a manifest.json), else every pass that supports the mode (a
pass that finds nothing leaves the graph as it is). The passes and the whole-graph comparison
are `pipeline.steps.rewrite_verified`, as in the build's rewrite step; nothing is written when
the comparison fails. The graph is written atomically, and when it lands in the artifact
directory it came from, the manifest records the rewrite.
"""
from __future__ import annotations

import time
from pathlib import Path

from vitdeploy.artifact import (
    MANIFEST_NAME, atomic_write_bytes, atomic_write_json, load_onnx, manifest_beside, sha256_file,
)
from vitdeploy.errors import VitdeployError


def choose_passes(requested: list[str] | None, manifest: dict | None, mode: str) -> tuple[list[str], str]:
    """(pass names, why these) for this run."""
    from vitdeploy.deploy.rewrite import PASSES, load_pass

    if requested:
        unknown = [n for n in requested if n not in PASSES]
        if unknown:
            raise VitdeployError(f"unknown rewrite pass '{unknown[0]}'", f"choose from {', '.join(PASSES)}")
        return list(requested), "--passes"
    alias = (manifest or {}).get("model", {}).get("alias")
    if alias:
        from vitdeploy.models import get_info

        try:
            return list(get_info(alias).passes), f"passes for {alias} (manifest)"
        except VitdeployError:
            pass
    usable = [n for n in PASSES if mode in load_pass(n).modes]
    return usable, "every installed pass"


def run_rewrite(in_path: str, out_path: str, *, passes: list[str] | None = None, mode: str = "plugin",
                options: dict | None = None, as_json: bool = False) -> dict:
    """Rewrite IN into OUT; returns the report (the same dict `--json` prints)."""
    from vitdeploy.console import console, stage
    from vitdeploy.pipeline.steps import rewrite_verified

    src, dst = Path(in_path), Path(out_path)
    if dst.resolve() == src.resolve():
        raise VitdeployError("-o must differ from the input graph", "write the rewrite next to it, e.g. model.rewritten.onnx")
    if not dst.parent.is_dir():
        raise VitdeployError(f"output directory {dst.parent} does not exist", "create it or choose another -o")
    model = load_onnx(src)
    manifest = manifest_beside(src, strict=True)  # the artifact directory's, if `src` sits in one
    names, why = choose_passes(passes, manifest, mode)

    def work():
        # refusals are in the report (print_report), not printed twice; nothing is written when the
        # end-to-end comparison fails
        rewritten, report, _ = rewrite_verified(model, names, mode, options,
                                                "nothing was written; rerun with fewer --passes and report the model")
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
