"""TensorRT's AOT plugin launch emulated on the CPU: the kernel an `aot_impl` returned, run under
Triton's interpreter with exactly the grid, scalars and argument order TensorRT would use.

The contract checks (`contract.problems`) read the PTX's parameter *types*; they cannot see a grid
one block short, two int32 scalars swapped, two input pointers swapped or a kernel compiled for the
other precision. A launch through the CUDA driver would (benchmarks/aot_launch.py), but needs a GPU.
This module proves those on the CPU, one `Job` per plugin node, precision and tactic:

1. The node goes through TensorRT's real plugin layer (`contract.drive`) while every AOT compile is
   recorded (`plugins.ptx.COMPILE_LISTENERS`: Triton function, signature, constexprs, warps, PTX).
2. What `aot_impl` returned is bound to the compile that produced it: the recorded PTX, with
   Triton's unused scratch parameters stripped as the faces strip them, must be byte-identical to
   the PTX TensorRT got. Neither the kernel, its constants nor its precision are chosen here.
3. Static checks against that record: the kernel's runtime parameters, in order, are one pointer
   per input of the type the tactic's format combination declares, one i32 per extra scalar, one
   pointer per output (a kernel compiled for the other precision fails here); block = the compile's
   num_warps * 32; shared memory = what the compile needs.
4. Grid, block, shared memory and the extra SymInt32 expressions are evaluated at a concrete batch,
   the graphs' only runtime dimension (`contract.Launch.evaluate`, the stand-in's evaluator of the
   dimension operations NvInferRuntime.h documents).
5. A child process started with TRITON_INTERPRET=1 (Triton reads it once, at import; AOT compiling
   needs it unset, so it cannot be this process) imports the recorded function, checks its module
   is the source that was compiled, and launches it with that grid and TensorRT's argument order:
   input pointers in input order, the extra scalars in order, output pointers, with the recorded
   constexprs. Every buffer lives in one arena whose gaps are 0xFF bytes (NaN in FP16 and FP32) as
   wide as the largest buffer, so a wrong pointer reads NaN, not another tensor, and writes there
   are seen. Outputs start as a NaN with a payload no computation makes (`POISON`), so an element
   no program wrote is told apart from one computed from garbage; inputs are checked unchanged.
6. The output is compared with the plugin's PyTorch reference (`plugin_io.TOL`). On a mismatch the
   child reruns with the extra scalars permuted and with pairs of same-typed input pointers
   swapped, and says which order the kernel computes correctly with.

Sizes. Triton's interpreter runs one program at a time in Python (about 20-250 ms each here), so
nodes whose grid would take minutes are reduced (`REDUCERS`) to fewer windows, queries, blocks or
heads, never below what keeps every code path and tactic: the reduced node is a plugin node of its
own, driven through the plugin layer like the real one, so its grid, scalars and kernel are still
what `aot_impl` derives from the shapes. GatedPositionalAttention and MSDA keep every compile-time
constant, so their emulated PTX is byte-identical to the real node's. Batches: tactic i of a node
runs at `BATCHES[i % 2]` (2, and 3: odd, a multiple of no block size).

This is the launch level of docs/architecture.md's "What is proven where": it proves the launch
TensorRT would make computes the reference, on the interpreter; it does not load the PTX, so the
driver's JIT, shared-memory limits in hardware and timing stay with benchmarks/aot_launch.py.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import itertools
import json
import os
import pickle
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from vitdeploy.testing import contract, plugin_io

BATCHES = (2, 3)
CHILD_TIMEOUT_S = 1800
# outputs start as these NaN bit patterns (quiet NaN, payload 0x25A5..): "never written" is exact
POISON = {"float16": 0x7EA5, "bfloat16": 0x7FA5, "float32": 0x7FA5A5A5}


def plugin_folder(op: str) -> str:
    """The plugin's folder under vitdeploy/plugins (test ids and messages use it): msda, window_attention, ..."""
    from vitdeploy.plugins import TRT_FACES

    return TRT_FACES[op].split(".")[2]


# --- what was compiled ------------------------------------------------------------------------------


def _module_sha(module: str) -> str:
    path = sys.modules[module].__file__ if module in sys.modules else importlib.util.find_spec(module).origin
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


@dataclass(frozen=True)
class KernelRecord:
    """One `triton_ptx` compile: the Triton function (by module and name), its specialization, the PTX."""

    module: str
    qualname: str
    source_sha: str  # of the module file: the child refuses to run other source
    arg_names: tuple[str, ...]  # the function's parameters in definition order
    signature: dict  # name -> Triton type ("*fp16", "i32", "constexpr")
    constexprs: dict
    num_warps: int
    num_stages: int
    name: str
    ptx: str
    shared: int  # dynamic shared memory the compile needs (metadata.shared)

    @property
    def runtime_params(self) -> list[tuple[str, str]]:
        """(name, Triton type) of every non-constexpr parameter, in the order the PTX entry takes them."""
        return [(n, self.signature.get(n, "?")) for n in self.arg_names
                if n not in self.constexprs and self.signature.get(n) != "constexpr"]


@contextlib.contextmanager
def record_compiles():
    """Every AOT compile inside the block, as `KernelRecord`s (a list filled as they happen)."""
    from vitdeploy.plugins import ptx as compiler

    records: list[KernelRecord] = []

    def listener(*, fn, signature, constexprs, num_warps, num_stages, name, ptx, metadata):
        py = getattr(fn, "fn", fn)
        records.append(KernelRecord(py.__module__, py.__qualname__, _module_sha(py.__module__), tuple(fn.arg_names),
                                    dict(signature), dict(constexprs), int(num_warps), int(num_stages), name, ptx,
                                    int(metadata.shared)))

    compiler.COMPILE_LISTENERS.append(listener)
    try:
        yield records
    finally:
        compiler.COMPILE_LISTENERS.remove(listener)


def bind(records: list[KernelRecord], name: str, ptx: str) -> KernelRecord:
    """The compile that produced the (name, PTX) an `aot_impl` returned: byte-identical PTX once Triton's
    unused scratch parameters are stripped as the face strips them (the latest such compile)."""
    from vitdeploy.plugins import ptx as ptxinfo
    from vitdeploy.plugins.ptx import strip_unused_scratch_params

    keep = len(ptxinfo.parse(ptx, name).params)
    found = []
    for r in records:
        if r.name != name:
            continue
        try:
            stripped = strip_unused_scratch_params(r.ptx, name, keep=keep)
        except ValueError:
            continue
        if ptx in (r.ptx, stripped):
            found.append(r)
    if not found:
        raise LookupError(f"kernel {name}: no AOT compile in this build produced the PTX aot_impl returned "
                          f"({len(records)} compiles recorded)")
    return found[-1]


# --- reduced nodes ----------------------------------------------------------------------------------


def _spec_inputs(node, changes: dict) -> list[tuple]:
    """synthetic_node inputs from `node`'s, with {name: (dims, constant or None)} replaced."""
    out = []
    for t in node.inputs:
        dims, value = changes.get(t.name, (t.dims, node.constants.get(t.name) if t.constant else None))
        out.append((t.name, t.elem_type, tuple(dims), value))
    return out


def _reduced(node, attrs: dict, changes: dict, note: str):
    red = contract.synthetic_node(node.op, attrs, _spec_inputs(node, changes), graph=node.graph)
    return red, note


def _reduce_window(node):
    """WindowAttention (and WindowAttentionRelPos): one window per dimension (a padded dimension keeps its
    remainder, so it stays padded and a floor-divided window count shows; a grid keeps one stride-1 grid,
    mask units one unit), heads cut to the fewest with the same tactics (1, 2, 3 or 6). Window, shift,
    head_dim, cosine, mask, pad order, partition and query pooling are kept: same tiles and paths."""
    from vitdeploy.plugins.window_attention.trt import tactics_for

    a = plugin_io.attributes(node)
    (wh, ww), heads = a["window_size"], a["num_heads"]
    h, w = a["height"], a["width"]
    qkv, *tables, pad = node.inputs  # bias, or rel_h and rel_w
    hd = qkv.dims[2] // 3 // heads
    heads2 = next(k for k in (1, 2, 3, 6, heads) if heads % k == 0 and tactics_for(k) == tactics_for(heads))

    def dim(n, win):
        return n if n <= win else (n % win or win)

    h2, w2 = dim(h, wh), dim(w, ww)
    if (h2, w2, heads2) == (h, w, heads):
        return node, ""
    changes = {qkv.name: (("batch", h2 * w2, 3 * heads2 * hd), None)}
    for t in tables:  # per-head constants: the first heads2
        if t.constant:
            v = np.ascontiguousarray(node.constants[t.name][:heads2])
            changes[t.name] = (v.shape, v)
    if pad.constant:
        p = node.constants[pad.name].reshape(3, heads, hd)[:, :heads2].reshape(-1)
        changes[pad.name] = ((3 * heads2 * hd,), np.ascontiguousarray(p))
    attrs = dict(a, height=h2, width=w2, num_heads=heads2, scale=list(a["scale"])[:heads2])
    return _reduced(node, attrs, changes, f"map {h}x{w} -> {h2}x{w2}, heads {heads} -> {heads2}")


def _reduce_gpsa(node):
    """GatedPositionalAttention: fewer tokens, the remainder modulo 16 (the smallest query tile) kept so
    the last tile of every tactic stays partial. N is a runtime scalar: the PTX is the real node's."""
    qk, v, pos, gate = node.inputs
    n = qk.dims[1]
    n2 = n if n <= 32 else 16 + n % 16
    if n2 == n:
        return node, ""
    changes = {qk.name: ((qk.dims[0], n2, qk.dims[2]), None), v.name: ((v.dims[0], n2, v.dims[2]), None)}
    if pos.constant:
        p = node.constants[pos.name][:, :n2, :n2].astype(np.float64)
        changes[pos.name] = ((pos.dims[0], n2, n2), np.ascontiguousarray(p / p.sum(-1, keepdims=True), dtype=np.float32))
    return _reduced(node, plugin_io.attributes(node), changes, f"tokens {n} -> {n2}")


def _reduce_msda(node):
    """MSDA: fewer queries (Lq mod 16, so every tactic's one query block is partial where the real
    node's last one is) and 2 heads; levels, points, head_dim and S unchanged. All are runtime scalars
    or grid sizes: the PTX is the real node's. (An MSDA program costs ~0.3 s on the interpreter.)"""
    value, _, _, loc, attw = node.inputs
    b, s, m, d = value.dims
    lq = loc.dims[1]
    lq2, m2 = (lq if lq <= 16 else lq % 16 or 16), min(m, 2)
    if (lq2, m2) == (lq, m):
        return node, ""
    changes = {value.name: ((b, s, m2, d), None), loc.name: ((b, lq2, m2, *loc.dims[3:]), None),
               attw.name: ((b, lq2, m2, *attw.dims[3:]), None)}
    return _reduced(node, plugin_io.attributes(node), changes, f"queries {lq} -> {lq2}, heads {m} -> {m2}")


def _reduce_halo(node):
    """HaloAttention: one block of the map and at most 2 heads; block, halo, stride, head dims and scales
    are kept (same tiles and code paths; the halo then reads the zero padding around the map)."""
    a = plugin_io.attributes(node)
    q, kv, hrel, wrel = node.inputs
    heads, blk, s = a["num_heads"], a["block_size"], a["block_stride"]
    dqk, dv = a["dim_head_qk"], a["dim_head_v"]
    _, _, h, w = kv.dims
    heads2 = min(heads, 2)
    if (h, w, heads2) == (blk, blk, heads):
        return node, ""
    changes = {q.name: ((q.dims[0], heads2 * dqk, blk // s, blk // s), None),
               kv.name: ((kv.dims[0], heads2 * (dqk + dv), blk, blk), None)}
    return _reduced(node, dict(a, num_heads=heads2), changes, f"map {h}x{w} -> {blk}x{blk}, heads {heads} -> {heads2}")


def _with_runtime_batch(node, note: str):
    """A node whose graph has a static batch (the Deformable DETR export is static at 1) gets a runtime batch
    dimension, so the batch-dependent part of its launch is exercised at BATCHES like the others."""
    if any(isinstance(d, str) for t in node.inputs for d in t.dims):
        return node, note
    batch = {t.dims[0] for t in node.inputs if not t.constant and t.dims}
    if len(batch) != 1:
        return node, note
    (b,) = batch
    changes = {t.name: (("batch", *t.dims[1:]), None) for t in node.inputs if not t.constant}
    attrs = plugin_io.attributes(node)
    red = contract.synthetic_node(node.op, attrs, _spec_inputs(node, changes), graph=node.graph)
    return red, "; ".join(x for x in (note, f"the graph's static batch {b} made a runtime batch") if x)


# op -> node -> (reduced node, what was reduced); the reduced node is what the plugin layer then drives
REDUCERS = {
    "WindowAttention": _reduce_window,
    "WindowAttentionRelPos": _reduce_window,
    "GatedPositionalAttention": _reduce_gpsa,
    "MultiscaleDeformableAttention": _reduce_msda,
    "HaloAttention": _reduce_halo,
}


def reduce(node):
    """(the node the emulator launches for `node`, what was changed): REDUCERS, then a runtime batch."""
    reducer = REDUCERS.get(node.op)
    small, note = reducer(node) if reducer else (node, "")
    return _with_runtime_batch(small, note)


# --- jobs ---------------------------------------------------------------------------------------------

_TRITON_PTR = {"FLOAT": "*fp32", "HALF": "*fp16", "INT32": "*i32", "INT64": "*i64", "BF16": "*bf16", "INT8": "*i8",
               "BOOL": "*i1", "UINT8": "*u8"}
_TORCH = {"FLOAT": "float32", "HALF": "float16", "INT32": "int32", "INT64": "int64", "BF16": "bfloat16", "INT8": "int8",
          "BOOL": "bool", "UINT8": "uint8"}


@dataclass
class Job:
    """One launch to emulate: the (reduced) node, what the plugin layer returned, evaluated at `batch`."""

    id: int
    plugin: str  # folder name
    graphs: list  # "graph: real node key" of every real node this (reduced) node stands for
    note: str  # what was reduced
    node: object  # the PluginNode launched (reduced or real)
    precision: str
    tactic: int
    batch: int
    kernel: KernelRecord | None
    grid: tuple
    block: tuple
    shared: int
    extras: list
    in_types: list  # TensorRT DataType names of the format combination
    out_types: list
    out_shapes: list  # get_output_shapes read back at `batch`
    problems: list = field(default_factory=list)  # found before running
    seed: int = 0
    batch_dims: tuple = ()  # grid dimensions that grow with the batch
    ptx_sha: str = ""  # of the PTX TensorRT got for this tactic
    input_order: list | None = None  # only a `mutant` passes inputs in another order
    expect: str = ""  # a mutant: the launch parameter its message must name
    diag_from: int = 0  # >0: resume the diagnosis at this alternative (the child died in the one before)
    first_result: dict = field(default_factory=dict)  # with diag_from: what the launch itself gave
    run: bool = True  # False: its static problems are the finding (a mutant that needs no launch)

    def input_names(self) -> list[str]:
        """The spec's names of the node's inputs (qk, v, ...), not the graph's tensor names."""
        import importlib as _il

        from vitdeploy.plugins import TRT_FACES

        spec = _il.import_module(TRT_FACES[self.node.op]).SPEC
        names = [t.name for t in spec.inputs]
        return names if len(names) == len(self.node.inputs) else [t.name for t in self.node.inputs]

    def shapes(self) -> str:
        dims = []
        types = self.in_types or [""] * len(self.node.inputs)  # empty when the plugin layer failed
        for name, t, ty in zip(self.input_names(), self.node.inputs, types):
            shape = [self.batch if isinstance(d, str) else d for d in t.dims]
            dims.append(f"{name} {ty}{list(shape)}")
        outs = ", ".join(f"{ty}{list(s)}" for ty, s in zip(self.out_types, self.out_shapes))
        return ", ".join(dims) + (f" -> {outs}" if outs else "")

    def where(self) -> str:
        first = self.graphs[0].split(":")[0]
        tactic = f"tactic {self.tactic}" if self.tactic else "every tactic"
        return (f"{self.plugin} {first} {self.precision} {tactic} batch {self.batch}, "
                f"{self.node.op}({self.shapes()})")


def _static_problems(rec: KernelRecord, ev: dict, in_types: list, out_types: list, ptx_params: tuple) -> list[str]:
    """What the compile record says TensorRT's launch would get wrong, before anything runs."""
    bad = []
    n_in, n_x, n_out = len(in_types), len(ev["extra"]), len(out_types)
    runtime = rec.runtime_params
    want = ([("input", i, _TRITON_PTR.get(t, t)) for i, t in enumerate(in_types)]
            + [("extra scalar", i, "i32") for i in range(n_x)]
            + [("output", i, _TRITON_PTR.get(t, t)) for i, t in enumerate(out_types)])
    names = ", ".join(f"{n}:{t}" for n, t in runtime)
    if len(runtime) != len(want):
        bad.append(f"argument list: kernel {rec.name} takes {len(runtime)} runtime arguments ({names}); TensorRT "
                   f"passes {n_in} input pointers, {n_x} int32 scalars, {n_out} output pointers")
    elif len(ptx_params) != len(runtime):
        bad.append(f"argument list: the PTX entry takes {len(ptx_params)} parameters, the kernel {len(runtime)} ({names})")
    else:
        wrong = [(kind, i, w, n, t) for (kind, i, w), (n, t) in zip(want, runtime) if t != w]
        if wrong:
            ptr_wrong = [x for x in wrong if x[2].startswith("*") and x[4].startswith("*")]
            if ptr_wrong and len(ptr_wrong) == len(wrong):
                got = sorted({x[4] for x in ptr_wrong})
                declared = sorted({t for t in [*in_types, *out_types] if _TRITON_PTR.get(t, t) in {x[2] for x in ptr_wrong}})
                bad.append(f"precision: the tactic's format combination declares {'/'.join(declared)} I/O, but kernel "
                           f"{rec.name} was compiled for {'/'.join(got)} pointers ("
                           + ", ".join(f"{n}:{t}" for k, i, w, n, t in ptr_wrong) + ")")
            else:
                bad.append("argument list: " + "; ".join(f"{k} {i} ({w}) lands in {n}:{t}" for k, i, w, n, t in wrong))
    block = (rec.num_warps * 32, 1, 1)
    if tuple(ev["block"]) != block:
        bad.append(f"block {tuple(ev['block'])}: the kernel was compiled for num_warps={rec.num_warps} ({block[0]} threads)")
    if ev["shared"] != rec.shared:
        bad.append(f"shared memory: aot_impl asks for {ev['shared']} B, the compiled kernel needs {rec.shared} B")
    if any(x < 0 or x >= 2**31 for x in ev["extra"]):
        bad.append(f"extra scalars {ev['extra']} do not fit int32")
    return bad


def prepare(layer, node, precision: str, *, target, batches=BATCHES, first_id: int = 0, covers=None,
            only: int | None = None) -> list[Job]:
    """Drive `node` (reduced first, see REDUCERS) through the plugin layer for `precision`, recording the
    compiles, and make one Job per tactic (the first `only` tactics when given: each one is an AOT compile).
    A node that does not get through the plugin layer is one finding (a Job that does not run)."""
    from vitdeploy.plugins import ptx as ptxinfo
    from vitdeploy.plugins import ptx_target

    small, note = reduce(node)
    try:
        with record_compiles() as records, ptx_target.compile_for(target):
            r = contract.drive(layer, small, precision, only=only)
    except Exception as e:  # the build would fail here: one finding for the node, the other nodes still run
        first = str(e).splitlines()[0][:300] if str(e) else ""
        return [Job(first_id, plugin_folder(node.op), list(covers or [f"{node.graph}: {node.key}"]), note, small, precision,
                    0, batches[0], None, (), (), 0, [], [], [], [],
                    [f"plugin layer: TensorRT's build calls fail for this node ({type(e).__name__}: {first})"],
                    run=False)]
    n_in = len(small.inputs)
    in_types = [t.name for t in r.chosen[0][:n_in]]
    out_types = [t.name for t in r.chosen[0][n_in:]]
    jobs = []
    for i, la in enumerate(r.launches):
        batch = batches[i % len(batches)]
        ev, ev_next = la.evaluate(batch), la.evaluate(batch + 1)
        problems, rec = [], None
        try:
            rec = bind(records, la.kernel_name, la.ptx)
        except LookupError as e:
            problems.append(f"kernel: {e}")
        if rec is not None:
            problems += _static_problems(rec, ev, in_types, out_types, ptxinfo.parse(la.ptx, la.kernel_name).params)
            rec = replace(rec, ptx="")  # the child runs the function, not the PTX
        grid = tuple(int(g) for g in ev["grid"])
        jobs.append(Job(first_id + len(jobs), plugin_folder(node.op), list(covers or [f"{node.graph}: {node.key}"]), note,
                        small, precision, la.tactic, batch, rec, grid, tuple(ev["block"]), int(ev["shared"]),
                        [int(x) for x in ev["extra"]], in_types, out_types, r.output_dims(batch), problems,
                        seed=first_id + len(jobs), batch_dims=tuple(d for d in range(3) if ev["grid"][d] != ev_next["grid"][d]),
                        ptx_sha=hashlib.sha256(la.ptx.encode()).hexdigest()[:16]))
    return jobs


def _programs(job: Job) -> int:
    return int(np.prod(job.grid))


def mutants(jobs: list[Job], first_id: int) -> list[Job]:
    """Copies of the cheapest runnable job of `jobs`, each with one kind of launch mistake issue 21 lists
    (grid one block short, grid without the batch, two input pointers swapped, two extra scalars
    swapped, the other precision's kernel), and the launch parameter its message must name. The tests run
    them with the real jobs to prove the emulator reports each one (a kind a plugin cannot have, e.g.
    two scalars where it passes one, is left out)."""
    ok = [j for j in jobs if j.kernel is not None and not j.problems]
    if not ok:
        return []
    base = min(ok, key=lambda j: (_programs(j), j.id))
    out = []

    def add(expect, **changes):
        out.append(replace(base, id=first_id + len(out), expect=expect, graphs=[f"mutant ({expect}) of job {base.id}"]
                           + base.graphs, **changes))

    grid = list(base.grid)
    d = 0 if grid[0] > 1 else (1 if grid[1] > 1 else 2)
    if grid[d] > 1:
        short = list(grid)
        short[d] -= 1
        add("grid", grid=tuple(short), note=f"grid[{d}] one block short")
    if base.batch_dims:
        d = base.batch_dims[-1]
        nob = list(grid)
        nob[d] //= base.batch
        add("grid", grid=tuple(nob), note="grid without the batch")
    pairs = [(a, b) for a in range(len(base.in_types)) for b in range(a + 1, len(base.in_types))
             if base.in_types[a] == base.in_types[b]]
    if pairs:
        a, b = pairs[0]
        order = list(range(len(base.in_types)))
        order[a], order[b] = b, a
        add("input pointers", input_order=order, note=f"inputs {a} and {b} swapped")
    distinct = [(a, b) for a in range(len(base.extras)) for b in range(a + 1, len(base.extras))
                if base.extras[a] != base.extras[b]]
    if distinct:
        a, b = distinct[0]
        x = list(base.extras)
        x[a], x[b] = x[b], x[a]
        add("extra scalars", extras=x, note=f"extra scalars {a} and {b} swapped")
    other = {"*fp16": "*fp32", "*fp32": "*fp16"}
    k = base.kernel
    sig = {n: other.get(t, t) for n, t in k.signature.items()}
    fake = replace(k, signature=sig)
    mutant_problems = _static_problems(fake, {"grid": base.grid, "block": base.block, "shared": base.shared,
                                                    "extra": base.extras}, base.in_types, base.out_types,
                                       tuple(".u64" if t.startswith("*") else ".u32" for _, t in k.runtime_params))
    add("precision", kernel=fake, problems=mutant_problems, note="the other precision's kernel", run=False)
    return out


# --- running them: one interpreter child for many jobs -----------------------------------------------


@dataclass
class Outcome:
    job: Job
    result: dict  # what the child reported (empty when the job could not run)

    @property
    def problems(self) -> list[str]:
        return list(self.job.problems) + describe(self.job, self.result)

    @property
    def ok(self) -> bool:
        return not self.problems

    def message(self) -> str:
        """First line: plugin, graph, precision, tactic, batch, shapes, and the first problem (the launch
        parameter it concerns, first); then the other problems and the launch, one line each."""
        j = self.job
        problems = self.problems or ["ok"]
        lines = [f"{j.where()}: {problems[0]}"]
        lines += [f"  {p}" for p in problems[1:]]
        lines.append(f"  launch: grid {j.grid}, block {j.block}, shared {j.shared} B, extra scalars {j.extras}")
        if j.note:
            lines.append(f"  reduced for the interpreter: {j.note}")
        lines.append("  stands for: " + "; ".join(j.graphs))
        return "\n".join(lines)


def describe(job: Job, res: dict) -> list[str]:
    """The launch parameter each finding of the child points at, in one line each."""
    if not res:
        return [] if job.problems else ["not run (no result from the interpreter)"]
    out = []
    diag = res.get("diagnosis")
    if diag and diag.get("extras") is not None:
        got = [job.extras[k] for k in diag["extras"]]
        out.append(f"extra scalars: aot_impl returns {job.extras} (in this order), but the kernel computes the reference "
                   f"only when given {got}")
    elif diag and diag.get("inputs") is not None:
        names = job.input_names()
        out.append(f"input pointers: TensorRT passes ({', '.join(names)}) in input order, but the kernel computes the "
                   f"reference only when given ({', '.join(names[k] for k in diag['inputs'])})")
    if res.get("error"):
        out.append(res["error"])
    if res.get("shape_mismatch"):
        out.append(f"output shape: get_output_shapes gives {res['shape_mismatch'][0]}, the reference {res['shape_mismatch'][1]}")
    if res.get("unwritten"):
        u = res["unwritten"]
        out.append(f"grid {job.grid}: {u['count']} of {u['total']} output elements never written "
                   f"(out[{u['where']}]); the grid does not cover the output at batch {job.batch}")
    if res.get("outside"):
        out.append(f"grid/arguments: the kernel wrote {res['outside']} bytes outside every output buffer")
    if res.get("inputs_written"):
        out.append(f"arguments: the kernel wrote into input buffers {res['inputs_written']}")
    if res.get("wrong_written"):
        where = "the elements written" if res.get("unwritten") else "the output"
        out.append(f"values: {where} differ from the reference, max error {res['err_written']:.3g} > "
                   f"{plugin_io.TOL[job.precision]:g}"
                   + ("" if diag else " (no permutation of the extra scalars or same-typed input pointers explains it)"))
    if res.get("diagnosis_crashes"):
        out.append(f"({res['diagnosis_crashes']} other argument orders crashed the interpreter while diagnosing)")
    return out


def _child_env() -> dict:
    import vitdeploy

    root = str(Path(vitdeploy.__file__).resolve().parents[1])
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def start(jobs: list[Job]) -> "Running":
    """Start the interpreter child on the runnable `jobs`; `Running.wait()` returns their Outcomes."""
    return Running(jobs)


class Running:
    """One interpreter child working through a list of jobs; a child that dies is restarted after the
    launch it died in (reported as that launch's finding), so one bad pointer does not hide the rest."""

    def __init__(self, jobs: list[Job]):
        self.jobs = jobs
        self.results: dict[int, dict] = {}
        self.tmp = tempfile.TemporaryDirectory(prefix="aot-emulator-")
        self.round = 0
        self.pending = [j for j in jobs if j.run and j.kernel is not None
                        and not any(p.startswith("argument list") for p in j.problems)]
        self._launch()

    def _launch(self):
        self.round += 1
        base = Path(self.tmp.name)
        self.out_path = base / f"results{self.round}.jsonl"
        jobs_path = base / f"jobs{self.round}.pkl"
        jobs_path.write_bytes(pickle.dumps(self.pending))
        self.err_path = base / f"stderr{self.round}.txt"
        self.proc = subprocess.Popen([sys.executable, "-m", "vitdeploy.testing.aot_emulator", str(jobs_path), str(self.out_path)],
                                     env=_child_env(), stdout=subprocess.DEVNULL, stderr=open(self.err_path, "w"))

    def _collect(self) -> int | None:
        """Read the child's lines; the id of the job it was running when it stopped (None if it finished all)."""
        current = None
        if self.out_path.exists():
            for line in self.out_path.read_text().splitlines():
                if not line.strip():
                    continue
                rec = json.loads(line)
                ev = rec.pop("event")
                if ev == "start":
                    current = (rec["id"], rec.get("alt"))
                elif ev == "result":
                    self.results[rec["id"]] = rec
                    current = None
                elif ev == "diagnosis":
                    self.results[rec["id"]]["diagnosis"] = rec
                    current = None
                elif ev == "diagnosed":
                    current = None
        return current

    def wait(self) -> list[Outcome]:
        while self.pending:
            try:
                rc = self.proc.wait(timeout=CHILD_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                rc = self.proc.wait()
            current = self._collect()
            if rc == 0:
                break
            tail = " | ".join(self.err_path.read_text().strip().splitlines()[-3:])[:400]
            why = f"the interpreter process died (exit {rc}) " + (f"[{tail}]" if tail else "")
            if current is None:  # died outside any launch (at start-up): nothing more will run
                for j in self.pending:
                    self.results.setdefault(j.id, {"id": j.id, "error": f"not run: {why}"})
                break
            job_id, alt = current
            resume = []
            if alt is None:
                self.results[job_id] = {"id": job_id, "error": f"crash: {why} running this launch (reading or writing "
                                                               "through a wrong pointer?)"}
            else:  # died trying another argument order: go on with the next one
                r = self.results[job_id]
                r["diagnosis_crashes"] = r.get("diagnosis_crashes", 0) + 1
                resume = [replace(j, diag_from=alt + 1, first_result=r) for j in self.pending if j.id == job_id]
            self.pending = resume + [j for j in self.pending if j.id not in self.results]
            if self.pending:
                self._launch()
        self.tmp.cleanup()
        return [Outcome(j, self.results.get(j.id, {})) for j in self.jobs]


def plan(layer, selections, *, target, batches=BATCHES, first_id: int = 0) -> list[Job]:
    """Jobs for every tactic of each selected node: `selections` = [(precision, node, [real nodes it stands
    for])]. Nodes whose reduced forms are equal (attributes and shapes) run once per precision, the job
    naming every real node it stands for."""
    jobs: list[Job] = []
    seen: dict[tuple, list] = {}
    for prec, node, covers in selections:
        entry = seen.setdefault((prec, reduce(node)[0].key), [prec, node, []])
        entry[2].extend(c for c in covers if c not in entry[2])
    for prec, node, covers in seen.values():
        jobs += prepare(layer, node, prec, target=target, batches=batches, first_id=first_id + len(jobs), covers=covers)
    return jobs


def every_node(nodes, precisions=("fp16", "fp32")) -> list[tuple]:
    """`plan` selections for every node at every precision, each standing for itself."""
    return [(prec, n, [f"{n.graph}: {n.key}"]) for prec in precisions for n in nodes]


def emulate(layer, nodes, *, precisions=("fp16", "fp32"), target, batches=BATCHES) -> list[Outcome]:
    """Every tactic of every node at every precision, run in one interpreter child: one Outcome per launch."""
    return start(plan(layer, every_node(nodes, precisions), target=target, batches=batches)).wait()


# --- the child (TRITON_INTERPRET=1) -------------------------------------------------------------------

_KERNELS: dict = {}
_REFS: dict = {}


def _kernel(rec: KernelRecord):
    key = (rec.module, rec.qualname)
    if key not in _KERNELS:
        mod = importlib.import_module(rec.module)
        if _module_sha(rec.module) != rec.source_sha:
            raise RuntimeError(f"{rec.module} is not the source that was compiled (file changed since)")
        fn = mod
        for part in rec.qualname.split("."):
            fn = getattr(fn, part)
        names = tuple(getattr(fn, "arg_names", ()))
        if names != rec.arg_names:
            raise RuntimeError(f"{rec.qualname} takes {names}, the compiled one took {rec.arg_names}")
        _KERNELS[key] = fn
    return _KERNELS[key]


def _arena(inputs, out_specs):
    """One uint8 buffer holding every tensor, 256-byte aligned, with 0xFF gaps as wide as the largest one."""
    import torch

    specs = [(t.dtype, tuple(t.shape)) for t in inputs] + list(out_specs)
    sizes = [int(np.prod(s)) * torch.empty((), dtype=d).element_size() for d, s in specs]
    gap = -(-max(max(sizes), 256) // 256) * 256
    offsets, pos = [], gap
    for n in sizes:
        offsets.append(pos)
        pos += -(-max(n, 1) // 256) * 256 + gap
    arena = torch.full((pos,), 0xFF, dtype=torch.uint8)
    views = [arena[o:o + n].view(d).view(s) for o, n, (d, s) in zip(offsets, sizes, specs)]
    for v, t in zip(views, inputs):
        v.copy_(t)
    for v in views[len(inputs):]:
        _bits(v).fill_(POISON[str(v.dtype).split(".")[1]])
    regions = list(zip(offsets, sizes))
    return arena, views, regions


def _bits(t):
    """The tensor's elements as same-width integers (for the poison pattern)."""
    import torch

    return t.view({2: torch.int16, 4: torch.int32}[t.element_size()])


def _slices(mask) -> str:
    """out[...] index summary of the True elements of `mask`, per dimension (a:b where contiguous)."""
    import torch

    parts = []
    idx = torch.nonzero(mask)
    for d in range(mask.dim()):
        vals = torch.unique(idx[:, d]).tolist()
        if len(vals) == mask.shape[d]:
            parts.append(":")
        elif vals == list(range(vals[0], vals[-1] + 1)):
            parts.append(f"{vals[0]}" if len(vals) == 1 else f"{vals[0]}:{vals[-1] + 1}")
        else:
            parts.append("{" + ",".join(map(str, vals[:6])) + (",..." if len(vals) > 6 else "") + "}")
    return ", ".join(parts)


def _execute(job: Job, extras_order=None, input_order=None) -> dict:
    import torch

    fn = _kernel(job.kernel)
    if job.id not in _REFS:
        gen = torch.Generator().manual_seed(job.seed)
        inputs = plugin_io.make_inputs(job.node, job.batch, [getattr(torch, _TORCH[t]) for t in job.in_types], gen)
        _REFS[job.id] = (inputs, plugin_io.reference(job.node, inputs))
    inputs, ref = _REFS[job.id]
    res: dict = {"id": job.id}
    out_specs = [(getattr(torch, _TORCH[t]), tuple(s)) for t, s in zip(job.out_types, job.out_shapes)]
    if tuple(ref.shape) != out_specs[0][1]:
        res["shape_mismatch"] = (list(out_specs[0][1]), list(ref.shape))
        return res
    arena, views, regions = _arena(inputs, out_specs)
    n_in = len(inputs)
    ins, outs = views[:n_in], views[n_in:]
    ins = ins if job.input_order is None else [ins[k] for k in job.input_order]
    ins = ins if input_order is None else [ins[k] for k in input_order]
    extras = job.extras if extras_order is None else [job.extras[k] for k in extras_order]
    names = [n for n, _ in job.kernel.runtime_params]
    kwargs = dict(zip(names, [*ins, *extras, *outs]))
    kwargs.update(job.kernel.constexprs)
    try:
        fn[job.grid](**kwargs)
    except Exception as e:  # the interpreter's own error, e.g. an out-of-range access it caught
        res["error"] = f"the kernel raised {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
        return res
    out = outs[0]
    unwritten = _bits(out) == POISON[str(out.dtype).split(".")[1]]
    if bool(unwritten.any()):
        res["unwritten"] = {"count": int(unwritten.sum()), "total": out.numel(), "where": _slices(unwritten)}
    inside = torch.zeros(arena.numel(), dtype=torch.bool)
    for o, n in regions:
        inside[o:o + n] = True
    outside = int((arena[~inside] != 0xFF).sum())
    if outside:
        res["outside"] = outside
    written = [job.input_names()[k] for k, (v, t) in enumerate(zip(views[:n_in], inputs))
               if not torch.equal(v.view(torch.uint8), t.contiguous().view(torch.uint8))]
    if written:
        res["inputs_written"] = written
    err = plugin_io.relative_error(out, ref)
    res["err"] = err if np.isfinite(err) else float("inf")
    written = ~unwritten
    err_w = plugin_io.relative_error(out[written], ref[written]) if bool(written.any()) else 0.0
    res["err_written"] = err_w if np.isfinite(err_w) else float("inf")
    res["wrong_written"] = not (res["err_written"] <= plugin_io.TOL[job.precision])
    res["ok"] = not any(k in res for k in ("unwritten", "outside", "inputs_written", "error")) and not res["wrong_written"]
    return res


def _needs_diagnosis(res: dict) -> bool:
    """Wrong values (not only a grid too small: then every element written is right) or stray writes."""
    return bool(res.get("wrong_written") or res.get("outside") or res.get("inputs_written"))


def _alternatives(job: Job, res: dict):
    """Other argument orders to try after wrong values: the extra scalars permuted (values that differ
    only) and two same-typed input pointers swapped. Scalars first when elements went unwritten or were
    written outside the output (wrong sizes or counts), pointers first otherwise (wrong data)."""
    n_x = len(job.extras)
    scalars = [{"extras_order": list(p)} for p in itertools.permutations(range(n_x))
               if list(p) != list(range(n_x)) and [job.extras[k] for k in p] != job.extras]
    n_in = len(job.node.inputs)
    pointers = []
    for a, b in itertools.combinations(range(n_in), 2):
        if job.in_types[a] == job.in_types[b]:
            order = list(range(n_in))
            order[a], order[b] = b, a
            pointers.append({"input_order": order})
    sizes_wrong = bool(res.get("unwritten") or res.get("outside"))
    return scalars + pointers if sizes_wrong else pointers + scalars


def _child(jobs_path: str, out_path: str) -> int:
    import torch

    torch.set_num_threads(1)
    jobs = pickle.loads(Path(jobs_path).read_bytes())
    with open(out_path, "a", buffering=1) as out:
        def emit(**kw):
            out.write(json.dumps(kw) + "\n")
            out.flush()

        for job in jobs:
            if not job.diag_from:
                emit(event="start", id=job.id)
                try:
                    res = _execute(job)
                except Exception as e:
                    res = {"id": job.id, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}
                emit(event="result", **res)
            if job.diag_from or _needs_diagnosis(res):
                if job.diag_from:
                    res = job.first_result
                for k, alt in enumerate(_alternatives(job, res)):
                    if k < job.diag_from:
                        continue
                    emit(event="start", id=job.id, alt=k)
                    try:
                        r2 = _execute(job, **alt)
                    except Exception:
                        continue
                    if r2.get("ok"):
                        emit(event="diagnosis", id=job.id, extras=alt.get("extras_order"), inputs=alt.get("input_order"),
                             err=r2["err"])
                        break
                else:
                    emit(event="diagnosed", id=job.id)
            _REFS.pop(job.id, None)
        emit(event="done")
    return 0


if __name__ == "__main__":
    if os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("the AOT launch emulator's child needs TRITON_INTERPRET=1 (set before triton is imported)")
    sys.exit(_child(sys.argv[1], sys.argv[2]))
