"""`vitdeploy verify`: do two ONNX graphs compute the same outputs?"""
from __future__ import annotations

import click

from vitdeploy.commands.common import emit_json, json_option, json_to_stdout, renamed


def load_inputs(path: str, names: list[str]) -> dict:
    """Arrays for the graph inputs `names` from an NPZ file (one array per input, by name)."""
    import numpy as np

    from vitdeploy.errors import VitdeployError

    try:
        data = dict(np.load(path))
    except FileNotFoundError:
        raise VitdeployError(f"inputs file {path} does not exist", "check the --inputs path") from None
    except Exception as e:
        raise VitdeployError(f"{path} is not a readable NPZ file ({type(e).__name__})", "save it with numpy.savez") from None
    missing = [n for n in names if n not in data]
    if missing:
        raise VitdeployError(f"{path} has no array named '{missing[0]}'", f"the graph inputs are: {', '.join(names)}")
    return {n: data[n] for n in names}


def compare_graphs(a: str, b: str, *, atol: float, rtol: float, min_cosine: float, inputs_npz: str | None = None,
                   batch: int = 2, seed: int = 0) -> dict:
    """Both graphs on the same inputs through `vitdeploy.onnxrt.session`; per-output parity."""
    from vitdeploy.artifact import load_onnx
    from vitdeploy.deploy.rewrite.probe import static_feeds
    from vitdeploy.errors import VitdeployError
    from vitdeploy.onnxrt import session
    from vitdeploy.parity import Tolerance, compare
    from pathlib import Path

    if batch < 1:
        raise VitdeployError(f"--run-batch must be at least 1, got {batch}", "use --run-batch 1")
    ma, mb = load_onnx(Path(a)), load_onnx(Path(b))
    sa, sb = session(ma), session(mb)
    names_a = [i.name for i in sa.get_inputs()]
    names_b = [i.name for i in sb.get_inputs()]
    if sorted(names_a) != sorted(names_b):
        raise VitdeployError(f"the graphs have different inputs: {names_a} vs {names_b}", "compare two versions of one model")
    outs_a = [o.name for o in sa.get_outputs()]
    outs_b = [o.name for o in sb.get_outputs()]
    if outs_a != outs_b:
        raise VitdeployError(f"the graphs have different outputs: {outs_a} vs {outs_b}", "compare two versions of one model")
    feeds = load_inputs(inputs_npz, names_a) if inputs_npz else static_feeds(ma, batch=batch, seed=seed)
    try:
        ra, rb = sa.run(None, _as_input_types(sa, feeds)), sb.run(None, _as_input_types(sb, feeds))
    except Exception as e:
        hint = ("check --inputs shapes and dtypes" if inputs_npz else
                f"A and B must take the same input shapes ({_shapes(sa)} vs {_shapes(sb)}); "
                "for a static-batch graph pass its --run-batch")
        raise VitdeployError(f"ONNX Runtime failed on the inputs: {' '.join(str(e).split())[:300]}", hint) from None
    tol = Tolerance(atol=atol, rtol=rtol, min_cosine=min_cosine)
    per = [compare(n, x, y, tol).to_dict() for n, x, y in zip(outs_a, ra, rb)]
    return {"a": a, "b": b, "passed": all(p["passed"] for p in per), "outputs": per, "tolerance": tol.to_dict(),
            "inputs": {k: list(v.shape) for k, v in feeds.items()}, "source": inputs_npz or f"random (seed {seed})"}


def worst_line(o: dict, atol: float, rtol: float) -> str:
    """'max-abs 0.000552 at [0, 17] (A 3.2101, B 3.21065) vs bound 0.00422 = atol 0.0001 + rtol 0.001 x max|A| 4.12'."""
    idx = ", ".join(map(str, o.get("worst_index") or []))
    where = f" at [{idx}] (A {o['worst_ref']:.6g}, B {o['worst_got']:.6g})" if idx and o["max_abs"] > 0 else ""
    return (f"max-abs {o['max_abs']:.3g}{where} vs bound {o['bound']:.3g} = atol {atol:g} + rtol {rtol:g} x "
            f"max|A| {o['ref_max']:.4g}")


def _as_input_types(sess, feeds: dict) -> dict:
    """The same values in each graph's float type: an FP32 graph and an FP16-I/O copy take the same inputs."""
    want = {i.name: i.type for i in sess.get_inputs()}
    cast = {"tensor(float16)": "float16", "tensor(float)": "float32"}
    return {k: v.astype(cast[want[k]]) if want.get(k) in cast and v.dtype.kind == "f" else v for k, v in feeds.items()}


def _shapes(sess) -> str:
    return ", ".join(f"{i.name} {'x'.join(str(d) if isinstance(d, int) else '?' for d in i.shape)}" for i in sess.get_inputs())


@click.command("verify")
@click.argument("a", metavar="A.onnx", type=click.Path(dir_okay=False))
@click.argument("b", metavar="B.onnx", type=click.Path(dir_okay=False))
@click.option("--atol", type=float, default=1e-4, show_default=True, help="Absolute tolerance on max |A-B|.")
@click.option("--rtol", type=float, default=1e-3, show_default=True,
              help="Relative tolerance: the bound on max |A-B| is atol + rtol * max|A|.")
@click.option("--min-cosine", type=float, default=0.9999, show_default=True, help="Lowest cosine similarity accepted.")
@click.option("--inputs", "inputs_npz", type=click.Path(dir_okay=False), help="NPZ with one array per graph input (default: seeded random).")
@click.option("--run-batch", "batch", type=int, default=2, show_default=True,
              help="Batch size for random inputs of a dynamic-batch graph.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for random inputs.")
@json_option("the comparison")
@renamed("--batch", "batch", "--run-batch", type=int)
def command(a, b, atol, rtol, min_cosine, inputs_npz, batch, seed, json_out):
    """Run A and B through ONNX Runtime (plugin nodes on their CPU reference) on the same inputs
    and compare every output: max-abs error and cosine similarity. Exits 3 when any output
    differs beyond tolerance, 0 when all match.

    \b
    Examples:
      vitdeploy verify out/swin_t/model.onnx out/swin_t/model.rewritten.onnx
      vitdeploy verify a.onnx b.onnx --atol 1e-3 --inputs batch.npz
    """
    import time

    from vitdeploy.console import console
    from vitdeploy.errors import VerificationError

    as_json = json_to_stdout(json_out)
    started = time.perf_counter()
    result = compare_graphs(a, b, atol=atol, rtol=rtol, min_cosine=min_cosine, inputs_npz=inputs_npz, batch=batch, seed=seed)
    from vitdeploy.weights import banner, beside, is_random

    result["weights"] = beside(b) if beside(b)["kind"] != "unknown" else beside(a)
    if is_random(result["weights"]):
        banner(b)
    emit_json(result, json_out)
    if not as_json:
        for o in result["outputs"]:
            mark = "[green]✔[/]" if o["passed"] else "[red]✘[/]"
            console.print(f"{mark} {o['name']:<16} {worst_line(o, atol, rtol)}  cosine {o['cosine']:.8f}")
    if not result["passed"]:
        bad = next(o for o in result["outputs"] if not o["passed"])
        raise VerificationError(f"{a} and {b} differ: {bad['name']} {worst_line(bad, atol, rtol)}, cosine {bad['cosine']:.6f}",
                                f"min cosine {min_cosine}; loosen --atol/--rtol only if this error is expected")
    if not as_json:
        share = lambda o: o["max_abs"] / o["bound"] if o["bound"] else 0.0  # noqa: E731  (bound 0: max-abs is 0 too)
        worst = max(result["outputs"], key=share)
        console.print(f"[green]✔[/] [bold]verify[/]     {len(result['outputs'])} output(s) match within their bounds; tightest: "
                      f"{worst['name']} at {share(worst):.1%} of its bound"
                      f"  [dim]{time.perf_counter() - started:.1f} s[/]")
