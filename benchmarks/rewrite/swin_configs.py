"""Sweep: the `swin` rewrite on random small Swin V1/V2 configurations with non-square inputs (CPU).

Each seed draws a timm Swin (V1 for even seeds, V2 for odd ones: spread logit scales, q/v
biases) whose input is non-square and whose clamped per-dimension windows are non-square in
at least one block; each is exported with both exporters and rewritten in plugin and native
mode. Recorded per run: blocks timm has, candidates found and replaced, the notes of any block
left alone, the rewritten graph's max relative error against PyTorch (and the exported graph's,
before any rewrite, for comparison), and the time taken.
Hugging Face Swinv2Model configurations are swept the same way.

    python benchmarks/rewrite/swin_configs.py --out benchmarks/results/rewrite_swin_configs.json
    python benchmarks/rewrite/swin_configs.py --seeds 4 --out /tmp/s.json     # a quick look

tests/test_swin_rewrite.py runs four of these configurations (and imports `random_swin` from here).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def random_swin(seed: int):
    """A random small timm Swin with a non-square input: V1 for even seeds, V2 for odd ones.

    Stage maps, windows and shifts come out clamped per dimension (non-square windows, mixed shifts,
    padding); V2 gets spread logit scales and q/v biases so its cosine path and padding matter.
    Returns (model, (H, W)).
    """
    import timm
    import torch

    rng = np.random.default_rng(seed)
    while True:  # draw until some block's window is non-square (the point of the exercise)
        stages = int(rng.integers(2, 5))
        depths = [int(d) for d in rng.integers(1, 3, stages)]
        depths[int(rng.integers(0, stages))] = 2  # at least one shifted block
        window = int(rng.integers(3, 9))
        h, w = (4 * int(v) for v in rng.integers(6, 22, 2))
        maps = [(-(-h // 2 ** (i + 2)), -(-w // 2 ** (i + 2))) for i in range(stages)]
        if h != w and any(min(mh, window) != min(mw, window) for mh, mw in maps):
            break
    v2 = bool(seed % 2)
    torch.manual_seed(seed)
    name = "swinv2_tiny_window8_256" if v2 else "swin_tiny_patch4_window7_224"
    model = timm.create_model(name, depths=tuple(depths), embed_dim=16, num_heads=(1, 2, 4, 8)[:stages],
                              window_size=window, img_size=(h, w), num_classes=10).eval()
    if v2:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n.endswith("logit_scale"):
                    p.uniform_(0.5, 5.0)  # exp: 1.6 .. 100 (clamped)
                elif n.endswith(("q_bias", "v_bias")):
                    p.normal_(0, 0.5)
    return model, (h, w)


def hf_swinv2(seed: int):
    """A small transformers Swinv2Model on a non-square input: square windows (HF clamps them by the
    map's height), padded shifted blocks (HF pads before it rolls), its mask added twice (-200)."""
    import torch
    from transformers import Swinv2Config, Swinv2Model

    torch.manual_seed(seed)
    cfg = Swinv2Config(image_size=(160, 224), embed_dim=32, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8], window_size=7)
    model = Swinv2Model(cfg).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("logit_scale"):
                p.uniform_(0.5, 4.6)
    return model, (160, 224)


def run_one(model, size, exporter: str, workdir: Path) -> list[dict]:
    import onnx
    import torch

    from vitdeploy.deploy.export import export_onnx
    from vitdeploy.deploy.rewrite.driver import run_passes
    from vitdeploy.onnxrt import session

    h, w = size
    path = workdir / f"m_{exporter}.onnx"
    t0 = time.perf_counter()
    names = ("logits",) if hasattr(model, "layers") else ("last_hidden_state",)  # timm | transformers
    res = export_onnx(model, torch.randn(1, 3, h, w), path, exporter=exporter, output_names=names)
    export_s = time.perf_counter() - t0
    m = onnx.load(str(path))
    x = np.random.default_rng(0).standard_normal((1, 3, h, w)).astype(np.float32)
    with torch.no_grad():
        out = model(torch.from_numpy(x))
    ref = (out if isinstance(out, torch.Tensor) else out.last_hidden_state).numpy()
    sess = session(m)
    exported = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    export_err = float(np.abs(exported - ref).max() / np.abs(ref).max())  # before any rewrite: the floor
    rows = []
    for mode in ("plugin", "native"):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rewritten, rep = run_passes(m, ["swin"], mode)
        p = rep["passes"][0]
        sess = session(rewritten)
        got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        rows.append({"exporter": res.exporter, "mode": mode, "found": p["found"], "replaced": p["replaced"],
                     "notes": p["notes"], "refused": [c for c in p["candidates"] if not c["replaced"]],
                     "max_rel_err": float(np.abs(got - ref).max() / np.abs(ref).max()), "export_rel_err": export_err,
                     "export_s": round(export_s, 2), "rewrite_s": round(time.perf_counter() - t0, 2)})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", type=int, default=12, help="random timm configurations (seeds 0..N-1)")
    ap.add_argument("--exporters", default="dynamo,torchscript")
    args = ap.parse_args(argv)

    from benchmarks.kernels.common import environment

    cases = [("timm", s) for s in range(args.seeds)] + [("hf_swinv2", 0)]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for source, seed in cases:
            model, size = random_swin(seed) if source == "timm" else hf_swinv2(seed)
            desc = {"source": source, "seed": seed, "input": list(size)}
            if source == "timm":
                blocks = [b for layer in model.layers for b in layer.blocks]
                desc.update(version=2 if seed % 2 else 1, blocks=len(blocks),
                            windows=[list(b.window_size) for b in blocks], shifts=[list(b.shift_size) for b in blocks])
            for exporter in args.exporters.split(","):
                try:
                    rows = run_one(model, size, exporter, Path(tmp))
                except Exception as e:  # an exporter that cannot trace this model: recorded, not fatal
                    rows = [{"exporter": exporter, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}]
                for r in rows:
                    results.append({**desc, **r})
                    ok = "error" not in r and r["replaced"] == r["found"] == desc.get("blocks", r["found"]) and r["max_rel_err"] <= 1e-4
                    print(f"{source} seed {seed} {size[0]}x{size[1]} {r['exporter']:<11} {r.get('mode', '-'):<6} "
                          + (r["error"] if "error" in r else
                             f"{r['replaced']}/{r['found']} replaced, rel err {r['max_rel_err']:.1e}") + ("" if ok else "  <-- check"),
                          flush=True)
    good = [r for r in results if "error" not in r]
    summary = {"runs": len(results), "runs_with_error": len(results) - len(good),
               "runs_every_block_replaced": sum(r["replaced"] == r["found"] == r.get("blocks", r["found"]) for r in good),
               "worst_rel_err": max((r["max_rel_err"] for r in good), default=None)}
    env = dict(environment("cpu"), device="cpu (ONNX Runtime; the plugin nodes run their PyTorch reference)")
    data = {"benchmark": "rewrite_swin_configs", "environment": env, "summary": summary, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(args.out.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(args.out)
    print(f"wrote {args.out}: {summary}")
    return 0 if summary["runs_every_block_replaced"] == len(good) and not summary["runs_with_error"] else 1


if __name__ == "__main__":
    sys.exit(main())
