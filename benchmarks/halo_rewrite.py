"""Record the `halo` pass on every HaloNet alias: found/replaced, parity with PyTorch, bytes written (CPU).

    python benchmarks/halo_rewrite.py --out benchmarks/results/halo_rewrite.json
    python benchmarks/halo_rewrite.py --models halonet26t --out /tmp/halo.json

For each alias (random weights, vitdeploy's builder, 256x256): dynamo export at static batch 1
and at dynamic batch 1:2:4, then the pass in plugin and native mode. Recorded per run: HaloAttn
found / replaced (with the measured geometry of each), the largest per-candidate difference
from the subgraph it replaced, the rewritten graph vs PyTorch (max-abs and relative, at batch 1,
and 3 for the dynamic export), node counts, and the bytes every node of the graph writes at
batch 1 (ONNX shape inference; the native mode's point is to write fewer than the exporter's
pad/unfold/transpose copies and expanded relative logits).
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODELS = ("halonet26t", "sehalonet33ts", "halonet50ts", "eca_halonext26ts")


def bytes_written(model) -> int:
    """Bytes of every tensor the graph's nodes write, from static shapes (unknown shapes count 0)."""
    import numpy as np
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    sizes = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.output]:
        t = vi.type.tensor_type
        dims = [d.dim_value for d in t.shape.dim]
        if dims and all(d > 0 for d in dims):
            sizes[vi.name] = int(np.prod(dims)) * onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).itemsize
    return sum(sizes.get(o, 0) for n in model.graph.node for o in n.output)


def run(alias: str, dynamic: bool, workdir: Path) -> dict:
    import numpy as np
    import onnx
    import torch

    from vitdeploy.deploy.export import BatchSpec, export_onnx
    from vitdeploy.deploy.rewrite.driver import run_passes
    from vitdeploy.models import build_model, get_info
    from vitdeploy.onnxrt import session
    from vitdeploy.parity import random_images

    info = get_info(alias)
    torch.manual_seed(0)
    model = build_model(info)
    batch = BatchSpec(1, 2, 4) if dynamic else BatchSpec.static(1)
    path = workdir / f"{alias}_{'dynamic' if dynamic else 'static'}.onnx"
    started = time.perf_counter()
    export_onnx(model, torch.from_numpy(random_images(batch.opt, info.input_size)), path, batch=batch, exporter="dynamo")
    entry = {"alias": alias, "batch": batch.to_dict(), "export_seconds": round(time.perf_counter() - started, 1)}
    src = onnx.load(str(path))
    entry["nodes_exported"] = len(src.graph.node)
    if not dynamic:
        entry["bytes_written_exported"] = bytes_written(src)
    for mode in ("plugin", "native"):
        started = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out, report = run_passes(src, ["halo"], mode)
        rep = report["passes"][0]
        rec = {"found": rep["found"], "replaced": rep["replaced"], "nodes_after": rep["nodes_after"],
               "candidates": [{"name": c["name"], "replaced": c["replaced"], "max_abs_vs_subgraph": c.get("max_abs"),
                               **({"reason": c["reason"]} if c.get("reason") else {})} for c in rep["candidates"]],
               "notes": rep["notes"], "refusals": [str(w.message) for w in caught if str(w.message).startswith("halo:")],
               "whole_graph_vs_export": report.get("whole_graph", {}).get("passed"),
               "rewrite_seconds": round(time.perf_counter() - started, 1)}
        sess = session(out)
        parity = []
        for b in ((1, 3) if dynamic else (1,)):
            x = random_images(b, info.input_size, seed=10 + b)
            with torch.no_grad():
                ref = model(torch.from_numpy(x)).numpy()
            got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
            err = float(np.abs(got - ref).max())
            parity.append({"batch": b, "max_abs": err, "ref_max_abs": float(np.abs(ref).max()),
                           "relative": err / max(float(np.abs(ref).max()), 1e-30)})
        rec["vs_pytorch"] = parity
        rec["within_1e-4"] = all(p["max_abs"] <= 1e-4 for p in parity)
        if not dynamic:
            rec["bytes_written"] = bytes_written(out)
        entry[mode] = rec
    if not dynamic:  # shape inference cannot size the plugin's output, so plugin = every byte outside the HaloAttn regions
        outside = entry["plugin"]["bytes_written"]
        entry["halo_region_bytes"] = {"exporter": entry["bytes_written_exported"] - outside,
                                      "native": entry["native"]["bytes_written"] - outside,
                                      "note": "bytes written inside the HaloAttn subgraphs at batch 1, their outputs included"}
        print(f"{alias} {'dynamic' if dynamic else 'static'} {mode}: {rep['replaced']}/{rep['found']} replaced, "
              f"vs PyTorch max-abs {max(p['max_abs'] for p in parity):.2e}", flush=True)
    return entry


def main(argv=None) -> int:
    import tempfile

    from benchmarks.kernels.common import environment
    from vitdeploy.artifact import atomic_write_json
    from vitdeploy.deploy.export_step import versions

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/halo_rewrite.json")
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args(argv)
    result = {"what": "the halo rewrite pass on timm's dynamo exports of the HaloNet aliases (random weights, CPU, ONNX Runtime)",
              "environment": environment("cpu"), "versions": versions(), "runs": []}
    ok = True
    with tempfile.TemporaryDirectory(prefix="vitdeploy-halo-") as tmp:
        for alias in args.models.split(","):
            for dynamic in (False, True):
                entry = run(alias, dynamic, Path(tmp))
                result["runs"].append(entry)
                ok &= all(entry[m]["found"] == entry[m]["replaced"] > 0 and entry[m]["within_1e-4"] for m in ("plugin", "native"))
                atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
