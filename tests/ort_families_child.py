"""Child process for tests/test_onnxrt_families.py: open vitdeploy plugin graphs of several families
in one fresh process, in a given order, and check every output against the PyTorch reference.

    python tests/ort_families_child.py {alive|released|threads} FAMILY [FAMILY ...]

FAMILY: swin | convit | detr_vitdeploy | detr_stock | halo (a one-node graph of that plugin, FP32 or, with
a `:fp16` suffix, FP16 I/O) or a path to an .onnx file (opened and run on seeded inputs, no reference).
It runs in its own process because the bug it guards against (ops registered under an open session)
kills the process with SIGSEGV: the parent sees the exit code instead of losing pytest.
Prints one line `OK {json}` and exits 0 when every check holds.
"""
from __future__ import annotations

import gc
import json
import sys
import threading

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

from vitdeploy.onnxrt import session

TOL = 1e-4


def _graph(spec, inputs: dict[str, np.ndarray], out_shape, attrs: dict, fp16: bool) -> onnx.ModelProto:
    """A graph whose only node is the plugin, with its spec's domain and attributes."""
    def elem(a):
        if a.dtype == np.int32:
            return TensorProto.INT32
        return TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT

    ins = [helper.make_tensor_value_info(n, elem(a), a.shape) for n, a in inputs.items()]
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT, out_shape)
    node = helper.make_node(spec.name, list(inputs), ["out"], domain=spec.domain, **spec.node_attrs(**attrs))
    g = helper.make_graph([node], f"one_{spec.name}", ins, [out])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(spec.domain, 1)])
    m.ir_version = 10
    return m


def _case(family: str, seed: int):
    """(graph, feeds, expected output) for one family's plugin node."""
    fam, _, prec = family.partition(":")
    fp16 = prec == "fp16"
    g = torch.Generator().manual_seed(seed)
    t = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    if fam == "swin":
        from vitdeploy.plugins.window_attention.reference import window_attention
        from vitdeploy.plugins.window_attention.spec import SPEC

        h, w, ws, shift, heads, c = 5, 6, 3, 1, 2, 8  # both sides padded, shifted: every code path
        attrs = dict(window_size=ws, shift_size=shift, num_heads=heads, height=h, width=w, scale=(c // heads) ** -0.5)
        args = dict(qkv=t(2, h * w, 3 * c), bias=t(heads, ws * ws, ws * ws), pad_qkv=t(3 * c))
        want = window_attention(*args.values(), **attrs)
    elif fam == "convit":
        from vitdeploy.plugins.gated_positional_attention.reference import gated_positional_attention
        from vitdeploy.plugins.gated_positional_attention.spec import SPEC

        n, c, heads = 9, 8, 2
        attrs = dict(num_heads=heads, scale=(c // heads) ** -0.5)
        args = dict(qk=t(2, n, 2 * c), v=t(2, n, c), pos=t(heads, n, n).softmax(-1), gate=torch.rand(heads, generator=g))
        want = gated_positional_attention(*args.values(), **attrs)
    elif fam in ("detr_vitdeploy", "detr_stock"):
        from vitdeploy.plugins.msda.reference import msda
        from vitdeploy.plugins.msda.spec import STOCK_SPEC, VITDEPLOY_SPEC

        SPEC = VITDEPLOY_SPEC if fam == "detr_vitdeploy" else STOCK_SPEC
        shapes = torch.tensor([[4, 5], [2, 3]], dtype=torch.int32)
        starts = torch.tensor([0, 20], dtype=torch.int32)
        n, m, d, lq, p = 2, 2, 4, 3, 2
        attrs = {} if SPEC is STOCK_SPEC else dict(num_points=[p, p])  # the stock plugin has no attributes
        args = dict(value=t(n, 26, m, d), spatial_shapes=shapes, level_start_index=starts,
                    sampling_locations=torch.rand(n, lq, m, 2, p, 2, generator=g) * 1.2 - 0.1,
                    attention_weights=torch.rand(n, lq, m, 2, p, generator=g))
        want = msda(*args.values())
    elif fam == "halo":
        from vitdeploy.plugins.halo_attention.reference import halo_attention
        from vitdeploy.plugins.halo_attention.spec import SPEC

        block, halo, heads, dqk, dv, hw = 2, 1, 2, 4, 4, 4
        win = block + 2 * halo
        attrs = dict(block_size=block, halo_size=halo, num_heads=heads, dim_head_qk=dqk, dim_head_v=dv,
                     scale=dqk ** -0.5, scale_pos_embed=0, block_stride=1)
        args = dict(q=t(2, heads * dqk, hw, hw), kv=t(2, heads * (dqk + dv), hw, hw),
                    height_rel=t(2 * win - 1, dqk), width_rel=t(2 * win - 1, dqk))
        want = halo_attention(*args.values(), **attrs)
    else:
        raise SystemExit(f"unknown family {family}")
    if fp16:  # the reference sees what the graph sees: FP16-rounded inputs
        args = {k: (v.half().float() if v.is_floating_point() else v) for k, v in args.items()}
        want = {"swin": lambda: window_attention(*args.values(), **attrs),
                "convit": lambda: gated_positional_attention(*args.values(), **attrs)}.get(fam, lambda: msda(*args.values()))()
    feeds = {k: (v.numpy().astype(np.float16) if fp16 and v.is_floating_point() else v.numpy()) for k, v in args.items()}
    return _graph(SPEC, feeds, tuple(want.shape), attrs, fp16), feeds, want.numpy()


class Opened:
    """One family's session plus what it must compute."""

    def __init__(self, family: str, seed: int):
        self.family = family
        if family.endswith(".onnx"):
            from vitdeploy.deploy.rewrite.probe import static_feeds

            model = onnx.load(family)
            self.feeds, self.want = static_feeds(model, batch=1, seed=seed), None
            self.sess = session(model)
        else:
            model, self.feeds, self.want = _case(family, seed)
            self.sess = session(model)

    def check(self) -> float:
        got = self.sess.run(None, self.feeds)[0].astype(np.float32)
        if self.want is None:
            if not np.isfinite(got).all():
                raise AssertionError(f"{self.family}: non-finite output")
            return 0.0
        err = float(np.abs(got - self.want).max() / max(1.0, float(np.abs(self.want).max())))
        tol = 2e-3 if self.family.endswith(":fp16") else TOL
        if err > tol:
            raise AssertionError(f"{self.family}: relative max error {err:.3g} > {tol}")
        return err


def main(mode: str, families: list[str]) -> dict:
    errors: dict[str, float] = {}
    if mode == "alive":
        opened = []
        for i, fam in enumerate(families):
            opened.append(Opened(fam, i))
            errors[f"{i}:{fam}:first"] = opened[-1].check()
        for i, o in enumerate(opened):  # every earlier session still runs after the later ones registered
            errors[f"{i}:{o.family}:again"] = o.check()
        while opened:  # and is freed cleanly (freeing a session with dangling ops crashed too)
            opened.pop(0)
            gc.collect()
    elif mode == "released":
        for i, fam in enumerate(families):
            o = Opened(fam, i)
            errors[f"{i}:{fam}"] = o.check()
            del o
            gc.collect()
    elif mode == "threads":
        barrier = threading.Barrier(len(families))
        opened: dict[int, Opened] = {}
        failures: list[str] = []

        def work(i, fam):
            try:
                barrier.wait()
                opened[i] = Opened(fam, i)  # sessions created concurrently
                for k in range(3):
                    errors[f"{i}:{fam}:{k}"] = opened[i].check()
            except Exception as e:  # noqa: BLE001 - reported to the parent
                failures.append(f"{fam}: {type(e).__name__}: {e}")

        threads = [threading.Thread(target=work, args=(i, f)) for i, f in enumerate(families)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        if failures:
            raise AssertionError("; ".join(failures))
        for i, o in sorted(opened.items()):
            errors[f"{i}:{o.family}:main"] = o.check()
    else:
        raise SystemExit(f"unknown mode {mode}")
    from vitdeploy.plugins.ort import ort_registered

    return {"mode": mode, "families": families, "max_rel_err": max(errors.values()), "checks": len(errors),
            "registered": sorted(ort_registered())}


if __name__ == "__main__":
    print("OK " + json.dumps(main(sys.argv[1], sys.argv[2:])), flush=True)
