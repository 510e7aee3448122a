"""Contract sweep (CPU, no TensorRT, no GPU): every plugin node of every contract graph, every precision,
every tactic, for several PTX targets, through TensorRT's real Python plugin layer.

`tests/test_trt_contract.py` runs the same checks inside `make test` on a sample where compiles are slow;
this drives all of it and records, per launch, the PTX facts TensorRT's AOT launcher depends on
(.target, .version, parameter list, .reqntid, shared memory) and any contract problem.

    python benchmarks/trt_contract_sweep.py --out benchmarks/results/trt_contract_sweep.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def targets(names: list[str]):
    from vitdeploy.plugins import ptx_target

    out = []
    for n in names:
        if n == "portable":
            out.append(ptx_target.for_engine("ampere_plus", None))
        else:
            arch = int(n.removeprefix("sm_").rstrip("a"))
            out.append(ptx_target.PtxTarget(arch, ptx_target.pinned_isa(arch)))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--graphs", default=None, help="comma-separated GraphCase names (default: all)")
    ap.add_argument("--targets", default="sm_90a,sm_87,portable")
    ap.add_argument("--precisions", default="fp16,fp32")
    args = ap.parse_args(argv)

    import triton

    from vitdeploy.bench.environment import git_commit
    from vitdeploy.plugins import ptx_target
    from vitdeploy.testing import contract, contract_graphs
    from vitdeploy.plugins.ptx import parse

    names = args.graphs.split(",") if args.graphs else list(contract_graphs.GRAPHS)
    result = {"benchmark": "trt_contract_sweep", "git": git_commit(), "triton": triton.__version__,
              "plugin_layer": contract.BINDINGS, "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "targets": [t.to_dict() for t in targets(args.targets.split(","))], "rows": []}
    started = time.perf_counter()
    graphs = {}
    with tempfile.TemporaryDirectory() as tmp:  # export first: the plugin layer's stand-in is not around then
        for name in names:
            case = contract_graphs.GRAPHS[name]
            _, nodes = contract_graphs.export_rewritten(case, tmp)
            graphs[name] = (nodes, case.real_nodes() == {case.signature(n) for n in nodes})
    with contract.plugin_layer() as layer:
        for name, (nodes, real) in graphs.items():
            for node in nodes:
                for target in targets(args.targets.split(",")):
                    for precision in args.precisions.split(","):
                        row = {"graph": name, "node": node.key, "count": node.count, "full_model_nodes": real,
                               "target": target.name, "precision": precision}
                        t0 = time.perf_counter()
                        try:
                            with ptx_target.compile_for(target):
                                r = contract.drive(layer, node, precision)
                            row["problems"] = contract.problems(r, layer, max_isa=target.isa, portable=target.portable)
                            row["launches"] = []
                            for la in r.launches:
                                info = parse(la.ptx, la.kernel_name)
                                row["launches"].append({
                                    "tactic": la.tactic, "kernel": la.kernel_name, "ptx_target": info.target,
                                    "ptx_isa": info.isa_text, "params": list(info.params), "reqntid": info.reqntid,
                                    "shared_bytes": la.shared.get_constant_value() + info.static_shared,
                                    "at_batch_2": la.evaluate(2)})
                        except Exception as e:
                            row["problems"] = [f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"]
                        row["seconds"] = round(time.perf_counter() - t0, 2)
                        result["rows"].append(row)
                        print(f"{name:16s} {target.name:7s} {precision} {node.key[:60]:60s} "
                              f"{'ok' if not row['problems'] else row['problems'][0][:80]}", flush=True)
                        args.out.parent.mkdir(parents=True, exist_ok=True)
                        args.out.write_text(json.dumps(result, indent=1))
    rows = result["rows"]
    result["summary"] = {"rows": len(rows), "ok": sum(not r["problems"] for r in rows),
                         "launches": sum(len(r.get("launches", [])) for r in rows),
                         "max_shared_bytes": max((la["shared_bytes"] for r in rows for la in r.get("launches", [])), default=0),
                         "seconds": round(time.perf_counter() - started, 1)}
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result["summary"]))
    return 0 if all(not r["problems"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
