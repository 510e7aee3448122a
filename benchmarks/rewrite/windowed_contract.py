"""The windowed encoders' plugin nodes (issue 24) at their real sizes, through TensorRT's plugin layer and the
AOT launch emulator -- what tests/test_trt_contract.py does for the graphs of `make test`, for the
GraphCases too slow for it (`suite=False`: a 1024-px SAM export, full-width probes, big interpreter runs).

    python benchmarks/rewrite/windowed_contract.py --out benchmarks/results/contract_windowed_encoders.json

For each graph (sam_vit_b, maxvit_t, hiera_t; `vitdeploy.testing.contract_graphs`): export at the real
model's attributes (reduced depth) and rewrite; check that its distinct plugin nodes are the full model's;
drive one node per kernel variant through the parser's and builder's calls at FP16 and FP32, every tactic,
for sm_90a (problems listed, output shapes against the ONNX Runtime face); then emulate each of those
launches on Triton's interpreter (nodes reduced as `aot_emulator.REDUCERS` says) against the reference.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

GRAPHS = ("sam_vit_b", "maxvit_t", "hiera_t")


def main(argv=None) -> int:
    from benchmarks.kernels.timing import environment
    from vitdeploy.artifact import atomic_write_json
    from vitdeploy.plugins import ptx_target
    from vitdeploy.testing import aot_emulator, contract, contract_graphs

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--graphs", default=",".join(GRAPHS))
    args = ap.parse_args(argv)
    target = ptx_target.PtxTarget(90, ptx_target.pinned_isa(90))
    result = {"what": "windowed-encoder plugin nodes through tensorrt.plugin (contract) and the AOT launch emulator",
              "environment": environment("cpu"), "target": target.name, "graphs": []}
    ok = True
    with tempfile.TemporaryDirectory(prefix="vitdeploy-wcontract-") as tmp, contract.plugin_layer() as layer:
        for name in args.graphs.split(","):
            case = contract_graphs.GRAPHS[name]
            started = time.perf_counter()
            _, nodes = contract_graphs.export_rewritten(case, Path(tmp))
            entry = {"graph": name, "note": case.note, "export_rewrite_seconds": round(time.perf_counter() - started, 1),
                     "nodes": [n.key for n in nodes],
                     "full_model_nodes_match": {case.signature(n) for n in nodes} == case.real_nodes(), "contract": []}
            selections = []
            for prec in ("fp16", "fp32"):
                chosen = contract_graphs.nodes_for(case, nodes, prec, lambda n: 0)
                for node in chosen:
                    with ptx_target.compile_for(target):
                        r = contract.drive(layer, node, prec)
                    bad = contract.problems(r, layer, max_isa=target.isa, portable=target.portable)
                    shapes_ok = r.output_dims(3) == contract.reference_output_shapes(node, 3)
                    entry["contract"].append({"node": node.key, "precision": prec, "tactics": r.tactics,
                                              "shared": [la.shared.get_constant_value() for la in r.launches],
                                              "problems": bad, "output_shapes_match_ort": shapes_ok})
                    ok &= not bad and shapes_ok
                    selections.append((prec, node, [f"{node.graph}: {node.key}"]))
            started = time.perf_counter()
            outcomes = aot_emulator.start(aot_emulator.plan(layer, selections, target=target)).wait()
            entry["emulation"] = {"launches": len(outcomes), "wrong": [o.message() for o in outcomes if not o.ok],
                                  "reduced": sorted({o.job.note for o in outcomes if o.job.note}),
                                  "seconds": round(time.perf_counter() - started, 1)}
            ok &= entry["full_model_nodes_match"] and not entry["emulation"]["wrong"]
            result["graphs"].append(entry)
            atomic_write_json(args.out, result)
            print(f"{name}: {len(nodes)} distinct nodes, full model's: {entry['full_model_nodes_match']}, contract "
                  f"{sum(not c['problems'] for c in entry['contract'])}/{len(entry['contract'])} clean, emulated launches "
                  f"{len(outcomes) - len(entry['emulation']['wrong'])}/{len(outcomes)} equal the reference", flush=True)
    print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
