"""TensorRT's AOT plugin launch, reproduced with the CUDA driver, for every vitdeploy plugin at full size.

For each distinct plugin node of swin_t (stages 1-4), swin_b_384, swin_t at 160x320, swinv2_t, convit_t,
Deformable DETR (encoder and decoder, 800x1333) and halonet26t, FP16 and FP32, every tactic:

1. PTX and launch parameters come from TensorRT's real plugin layer (`vitdeploy.testing.contract`
   over the stand-in core): exactly what a TensorRT build hands the AOT launcher.
2. The PTX is loaded with `cuModuleLoadData` (the driver JIT-compiles the pinned ISA) and launched
   with `cuLaunchKernel`: the returned grid, block and dynamic shared memory, TensorRT's argument
   order (inputs, extra int32 scalars, outputs) packed from the PTX signature, no shared-memory
   opt-in (`vitdeploy.testing.driver_launch`).
3. The output is compared with the plugin's PyTorch reference.
4. The AOT launch is timed against the Triton JIT launch of the same kernel configuration (CUDA-graph
   replay for both, so Python launch overhead is out, as in TensorRT). Target: AOT >= 0.95x JIT speed.

The nodes are built from the full-size models' attributes (`GraphCase.full_size_nodes`), which the CPU
contract tests prove equal to those of the real rewritten graphs, so nothing is exported on the GPU.
Compilation (AOT PTX and the JIT kernels) runs first in --jobs worker processes.

    python benchmarks/aot_launch.py --out benchmarks/results/aot_launch_h100.json
    python benchmarks/aot_launch.py --dry-run --cases convit_t --out /tmp/x.json   # CPU: compile + pack only
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vitdeploy.testing import plugin_io  # noqa: E402

TOL = plugin_io.TOL

CASES = ("swin_t", "swin_b_384", "swin_t_160x320", "swinv2_t", "convit_t", "deformable_detr", "halonet26t")
BATCH = {"swin_t": 8, "swin_b_384": 4, "swin_t_160x320": 8, "swinv2_t": 8, "convit_t": 8, "convit_b": 8, "deformable_detr": 1,
         "halonet26t": 8}
TARGET_SPEED = 0.95


# --- per plugin: inputs and reference (vitdeploy.testing.plugin_io, shared with the CPU launch emulator),
# Triton JIT launch of a tactic


def _torch_inputs(node, batch: int, dtype, gen):
    return plugin_io.make_inputs(node, batch, dtype, gen, device="cuda")


def reference(node, inputs):
    return plugin_io.reference(node, inputs)


def jit_launcher(node, inputs, tactic: int, out):
    """A zero-argument callable launching the Triton JIT kernel with the tactic's configuration."""
    a = {k: v for k, v in node.attr_values().items() if not k.startswith("plugin_")}
    if node.op == "WindowAttention":
        from vitdeploy.plugins.window_attention.kernel import window_attention_triton

        return lambda: window_attention_triton(*inputs, heads_per_program=tactic, out=out, **a)
    if node.op == "GatedPositionalAttention":
        from vitdeploy.plugins.gated_positional_attention import kernel as K

        dtype = "fp16" if inputs[0].dtype.itemsize == 2 else "fp32"
        bm, bn, nw, ns = K.config(dtype, tactic)
        return lambda: K.gated_positional_attention_triton(*inputs, block_m=bm, block_n=bn, num_warps=nw, num_stages=ns, **a)
    if node.op == "MultiscaleDeformableAttention":
        from vitdeploy.plugins.msda.kernel import msda_triton

        return lambda: msda_triton(*inputs, tuple(a["num_points"]), a["method"], block_q=tactic, out=out)
    if node.op == "HaloAttention":
        from vitdeploy.plugins.halo_attention.kernel import halo_attention_triton

        return lambda: halo_attention_triton(*inputs, tactic=tactic, out=out, **a)
    raise KeyError(node.op)


def output_shape(node, batch: int) -> tuple:
    d = [batch if isinstance(x, str) else x for x in node.inputs[0].dims]
    if node.op == "WindowAttention":
        return d[0], d[1], d[2] // 3
    if node.op == "GatedPositionalAttention":
        return d[0], d[1], d[2] // 2
    if node.op == "HaloAttention":
        a = node.attr_values()
        return d[0], a["num_heads"] * a["dim_head_v"], d[2], d[3]
    loc = node.inputs[3].dims
    return d[0], loc[1], d[2], d[3]


# --- compile (worker processes) --------------------------------------------------------------------


def nodes_of(case: str):
    from vitdeploy.testing.contract_graphs import GRAPHS

    return GRAPHS[case].full_size_nodes()


def prepare(case: str, index: int, precision: str, arch: int, batch: int, warm_jit: bool) -> dict:
    """Drive one node through the plugin layer (compiling every tactic's PTX for sm_`arch`); optionally
    compile the JIT kernels too, so the timing process finds them in Triton's cache."""
    from vitdeploy.plugins import ptx_target
    from vitdeploy.testing import contract

    node = nodes_of(case)[index]
    target = ptx_target.PtxTarget(arch, ptx_target.pinned_isa(arch))
    started = time.perf_counter()
    with contract.plugin_layer() as layer, ptx_target.compile_for(target):
        res = contract.drive(layer, node, precision)
        problems = contract.problems(res, layer, max_isa=target.isa)
        tactics = [{"tactic": la.tactic, "kernel": la.kernel_name, "ptx": la.ptx, "launch": la.evaluate(batch)}
                   for la in res.launches]
    out = {"case": case, "index": index, "precision": precision, "node": node.key, "target": target.to_dict(),
           "problems": problems, "tactics": tactics, "compile_s": round(time.perf_counter() - started, 2)}
    if warm_jit:
        import torch

        dtype = torch.float16 if precision == "fp16" else torch.float32
        inputs = _torch_inputs(node, batch, dtype, torch.Generator().manual_seed(0))
        res_t = torch.empty(output_shape(node, batch), device="cuda", dtype=dtype)
        for t in tactics:
            jit_launcher(node, inputs, t["tactic"], res_t)()
        torch.cuda.synchronize()
    return out


# --- launch, compare, time ---------------------------------------------------------------------------


def _time(fn, reps: int) -> dict:
    """Median kernel time of `fn`, replayed from a CUDA graph (no Python launch cost), in microseconds."""
    from benchmarks.kernels.timing import time_cuda

    return time_cuda(fn, 10, reps, graphs=True)


def aot_args(inputs, extras: list[int], out) -> list:
    """TensorRT's argument order: input pointers, the extra scalars, output pointers."""
    return [t.data_ptr() for t in inputs] + list(extras) + [out.data_ptr()]


def run_prepared(prep: dict, batch: int, reps: int) -> dict:
    import torch

    from vitdeploy.testing.driver_launch import AotKernel

    node = nodes_of(prep["case"])[prep["index"]]
    dtype = torch.float16 if prep["precision"] == "fp16" else torch.float32
    inputs = _torch_inputs(node, batch, dtype, torch.Generator().manual_seed(prep["index"]))
    ref = reference(node, inputs)
    scale = float(ref.abs().max()) or 1.0
    row = {k: prep[k] for k in ("case", "node", "precision", "target", "problems", "compile_s")}
    row.update(batch=batch, output=list(ref.shape), tactics=[])
    for t in prep["tactics"]:
        rec = {"tactic": t["tactic"], "launch": t["launch"]}
        try:
            kern = AotKernel(t["ptx"], t["kernel"])
            out = torch.empty(ref.shape, device="cuda", dtype=dtype)
            la = t["launch"]
            stream = torch.cuda.current_stream().cuda_stream

            def aot(kern=kern, la=la, out=out):
                kern.launch(la["grid"], la["block"], la["shared"], aot_args(inputs, la["extra"], out),
                            torch.cuda.current_stream().cuda_stream)

            out.fill_(float("nan"))
            kern.launch(la["grid"], la["block"], la["shared"], aot_args(inputs, la["extra"], out), stream)
            torch.cuda.synchronize()
            err = float((out.float() - ref).abs().max()) / scale
            rec.update(max_rel_err=err, correct=bool(err <= TOL[prep["precision"]]))
            jit_out = torch.empty_like(out)
            jit = jit_launcher(node, inputs, t["tactic"], jit_out)
            jit()
            torch.cuda.synchronize()
            rec["jit_max_rel_err"] = float((jit_out.float() - ref).abs().max()) / scale
            if reps:
                ta, tj = _time(aot, reps), _time(jit, reps)
                rec.update(aot_us=ta["median_us"], jit_us=tj["median_us"],
                           aot_speed_vs_jit=tj["median_us"] / ta["median_us"])
            kern.close()
        except Exception as e:  # one failing tactic is a result, not the end of the run
            rec.update(correct=False, error=f"{type(e).__name__}: {str(e).splitlines()[0][:300]}")
        row["tactics"].append(rec)
    row["correct"] = all(r.get("correct") for r in row["tactics"]) and not row["problems"]
    speeds = [r["aot_speed_vs_jit"] for r in row["tactics"] if "aot_speed_vs_jit" in r]
    if speeds:
        row["min_aot_speed_vs_jit"] = min(speeds)
    return row


def environment() -> dict:
    import platform

    import torch
    import triton

    from vitdeploy.bench.environment import git_commit

    env = {"torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version(), "git": git_commit(),
           "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if torch.cuda.is_available():
        from cuda.bindings import driver as cu

        p = torch.cuda.get_device_properties(0)
        cu.cuInit(0)
        _, v = cu.cuDriverGetVersion()
        env.update(device=torch.cuda.get_device_name(0), capability=f"sm_{p.major}{p.minor}",
                   cuda_driver=f"{v // 1000}.{(v % 1000) // 10}", cuda_runtime=torch.version.cuda)
        try:
            import subprocess

            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
        except Exception:
            pass
    return env


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--precisions", default="fp16,fp32")
    ap.add_argument("--reps", type=int, default=30, help="timed CUDA-graph replays per implementation (0: no timing)")
    ap.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    ap.add_argument("--arch", type=int, default=None, help="SM to compile for (default: this GPU; required with --dry-run)")
    ap.add_argument("--dry-run", action="store_true", help="no GPU: compile through the plugin layer and pack arguments only")
    args = ap.parse_args(argv)

    import torch

    cases = [c for c in args.cases.split(",") if c]
    precisions = [p for p in args.precisions.split(",") if p]
    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA device (use --dry-run --arch 90 for the CPU part)", file=sys.stderr)
        return 2
    if args.arch is None:
        if args.dry_run:
            print("error: --dry-run needs --arch", file=sys.stderr)
            return 2
        major, minor = torch.cuda.get_device_capability()
        args.arch = major * 10 + minor
    tasks = [(c, i, p, args.arch, BATCH.get(c, 1), not args.dry_run) for c in cases for i in range(len(nodes_of(c)))
             for p in precisions]
    started = time.perf_counter()
    result = {"benchmark": "aot_launch", "env": environment(), "arch": args.arch, "target_speed": TARGET_SPEED,
              "dry_run": args.dry_run, "rows": []}
    prepared = []
    if args.jobs > 1 and len(tasks) > 1:
        with cf.ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
            futs = {pool.submit(prepare, *t): t for t in tasks}
            for f in cf.as_completed(futs):
                try:
                    prepared.append(f.result())
                except Exception as e:
                    c, i, p = futs[f][:3]
                    result["rows"].append({"case": c, "index": i, "precision": p, "correct": False,
                                           "error": f"compile: {type(e).__name__}: {str(e).splitlines()[0][:300]}"})
    else:
        prepared = [prepare(*t) for t in tasks]
    print(f"compiled {len(prepared)} node/precision pairs in {time.perf_counter() - started:.0f} s", flush=True)
    prepared.sort(key=lambda r: (r["case"], r["index"], r["precision"]))
    for prep in prepared:
        if args.dry_run:
            from vitdeploy.testing.driver_launch import pack_params
            from vitdeploy.plugins.ptx import parse

            for t in prep["tactics"]:
                info = parse(t["ptx"], t["kernel"])
                n_ptr = sum(1 for x in info.params if x == ".u64")
                t["packed"] = len(pack_params(info.params, [0] * (n_ptr - 1) + t["launch"]["extra"] + [0]))
                del t["ptx"]
            result["rows"].append({**prep, "correct": not prep["problems"]})
        else:
            row = run_prepared(prep, BATCH.get(prep["case"], 1), args.reps)
            result["rows"].append(row)
            print(f"{row['case']:16s} {row['precision']} {row['node'][:70]:70s} correct={row['correct']} "
                  f"min AOT/JIT speed={row.get('min_aot_speed_vs_jit', float('nan')):.3f}", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))  # after every case: a crash keeps what was measured
    rows = result["rows"]
    result["summary"] = {"rows": len(rows), "correct": sum(bool(r.get("correct")) for r in rows),
                         "min_aot_speed_vs_jit": min((r["min_aot_speed_vs_jit"] for r in rows if "min_aot_speed_vs_jit" in r),
                                                     default=None), "seconds": round(time.perf_counter() - started, 1)}
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result["summary"]))
    return 0 if all(r.get("correct") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
