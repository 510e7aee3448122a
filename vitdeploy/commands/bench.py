"""`vitdeploy bench`: latency and throughput of an artifact or a registry model."""
from __future__ import annotations

import sys

import click

from vitdeploy.bench.backends import BACKENDS
from vitdeploy.commands.options import IMG_SIZE, emit_json, json_option, json_to_stdout, parse_img_size, renamed
from vitdeploy.errors import VitdeployError

BACKEND_NAMES = list(BACKENDS)


def parse_batches(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise VitdeployError(f"--batch-sizes '{text}' is not a comma-separated list of integers", "for example --batch-sizes 1,8,64") from None
    if not values or any(v < 1 for v in values):
        raise VitdeployError(f"--batch-sizes '{text}' needs batch sizes of at least 1", "for example --batch-sizes 1,8,64")
    return list(dict.fromkeys(values))


def parse_backends(text: str | None) -> list[str | None]:
    if text is None:
        return [None]
    names = [v.strip() for v in text.split(",") if v.strip()]
    bad = [n for n in names if n not in BACKEND_NAMES]
    if bad or not names:
        raise VitdeployError(f"unknown backend '{bad[0] if bad else text}'", f"choose from {', '.join(BACKEND_NAMES)}")
    return list(dict.fromkeys(names))


def _trt_importable() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:  # absent, or a stub package that raises at import
        return False
    return True


def make_backend(artifact: str | None, alias: str | None, backend: str | None, device: str | None,
                 precision: str | None, img_size, cuda_graph: bool, threads: int | None = None):
    """(backend, resolved artifact or None) for the flags; every impossible combination is a one-line error.
    `img_size` is None, an int (square) or (H, W), as `--img-size` parses it everywhere."""
    from vitdeploy.bench.backends import backend_class

    img_size = parse_img_size(img_size)
    if artifact and alias:
        raise VitdeployError("pass either an ARTIFACT or --model, not both", "--model builds the PyTorch model from the registry")
    if not artifact and not alias:
        raise VitdeployError("nothing to benchmark", "pass an ONNX file, an engine, an artifact directory, or --model ALIAS")
    art = None
    if artifact:
        from vitdeploy.bench.identity import resolve

        art = resolve(artifact)
        if backend is None:
            backend = "trt" if art.engine is not None and (art.onnx is None or _trt_importable()) else "ort"
    backend = backend or "torch"
    if backend in ("torch", "torch-compile"):
        if art is not None:
            from vitdeploy.models import REGISTRY

            recorded = art.manifest.get("model") or {}
            spec = recorded.get("spec") if recorded.get("route", "alias") != "alias" else art.model
            if not spec or (recorded.get("route", "alias") == "alias" and spec not in REGISTRY):
                raise VitdeployError(f"the {backend} backend builds the model in PyTorch, and {artifact} names none",
                                     "use --model MODEL")
            alias = spec
            # Same model, same input size and (on the GPU) same precision as the artifact, so runs line up.
            size = (art.manifest.get("preprocessing") or {}).get("input_size")
            if img_size is None and size:
                img_size = (int(size[1]), int(size[2]))
            if precision is None and device == "cuda" and art.precision in ("fp16", "bf16"):
                precision = art.precision
        return backend_class(backend)(alias, device=device or "cpu", precision=precision or "fp32",
                                      img_size=img_size, cuda_graph=cuda_graph,
                                      threads=threads), art
    if art is None:  # --model with an artifact backend: build what it runs, as Ultralytics exports on the fly
        if backend == "trt" and not _trt_importable():
            raise VitdeployError("the trt backend needs TensorRT, which is not installed here", "use --backend ort")
        from vitdeploy.bench.identity import resolve
        from vitdeploy.pipeline.for_backend import ensure_built

        out, _ = ensure_built(alias, backend, precision, img_size)
        art, precision, img_size = resolve(str(out)), None, None
    if precision is not None and art.precision and precision != art.precision:
        raise VitdeployError(f"{artifact} is {art.precision}; --precision {precision} applies to the PyTorch backends only",
                             "an artifact's precision is fixed when it is built")
    if img_size is not None:
        raise VitdeployError("--img-size applies to --model only", "an artifact's input size is fixed when it is exported")
    path = art.path_for(backend)
    if backend == "trt":
        if device == "cpu":
            raise VitdeployError("the trt backend runs on the GPU only", "drop --device cpu or use --backend ort")
        if threads is not None:
            raise VitdeployError("--threads applies to CPU work (ort, torch on the CPU)", "drop --threads for --backend trt")
        return backend_class("trt")(path, model=art.model, precision=art.precision or "unknown", cuda_graph=cuda_graph), art
    from vitdeploy.onnxgraph import graph_precision

    # One label per graph, read from the graph: the same file benched alone or through its directory agrees.
    prec = art.precision if path == art.onnx and art.precision else graph_precision(path)
    return backend_class("ort")(path, model=art.model, precision=prec, device=device or "cpu", manifest=art.manifest,
                                threads=threads), art


def print_run(run: dict, env: dict) -> None:
    """The run's table (fitted to the console, at most 100 columns, no number cut), then its warnings:
    the run's own, each batch's, and one noise line for all noisy batches."""
    from vitdeploy.bench.environment import device_name
    from vitdeploy.bench.schema import run_label
    from vitdeploy.bench.stats import is_cv_warning, noise_warning
    from vitdeploy.bench.tables import console_width, run_table
    from vitdeploy.console import console

    if run["results"]:
        console.print()
        console.print(run_table(run, f"{run_label(run)} on {device_name(env, run['device'])}", console_width()))
    for w in run.get("warnings") or []:
        console.print(f"  [yellow]warning:[/] {w}")
    for r in run["results"]:
        for w in r["warnings"]:
            if not is_cv_warning(w):
                console.print(f"  [yellow]batch {r['batch']}:[/] {w}")
        err = (r.get("cuda_graph") or {}).get("error")
        if err:
            console.print(f"  [yellow]batch {r['batch']}:[/] CUDA graph capture failed, timed plain launches ({err})")
    noise = noise_warning(run["results"], run["device"])
    if noise:
        console.print(f"  [yellow]warning:[/] {noise}")
    for s in run["skipped"]:
        console.print(f"  [yellow]batch {s['batch']} skipped:[/] {s['reason']}")
    acc = run.get("accuracy")
    if acc and acc.get("headline"):
        h = acc["headline"]
        console.print(f"  accuracy: {h.get('label') or h['name']}: {h['value']:.2f}%")


def accuracy_why_unjudged(head: dict | None, weights: dict, min_agreement: float) -> str:
    from vitdeploy.weights import is_random

    if head is None:
        return ""
    if is_random(weights):
        return " (random weights: not judged)"
    return f" (below --min-agreement {min_agreement:g}%)"


@click.command("bench")
@click.argument("artifact", required=False, type=click.Path())
@click.option("--model", "alias", help="An alias, timm/NAME, a Hugging Face directory or FILE.py:FACTORY: built in PyTorch "
              "(torch backends) or, for ort/trt, built with 'vitdeploy build' into build/NAME_PRECISION first (cached).")
@click.option("--backend", metavar="NAME[,NAME]", help="trt, ort, torch, torch-compile; several (comma-separated) run one after "
              "another into one result. Default: trt for engines, ort for ONNX, torch for --model.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), help="Default: cuda for trt, else cpu.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]), help="PyTorch backends only (default fp32).")
@click.option("--img-size", type=IMG_SIZE, metavar="H [W]",
              help="Input size for --model: H W, HxW, or one number for a square (default: the model's).")
@click.option("--batch-sizes", "batch_text", default="1", show_default=True, help="Comma-separated batch sizes, e.g. 1,8,64.")
@click.option("--warmup-ms", type=click.FloatRange(min=0), default=200, show_default=True, help="Warm-up time per batch.")
@click.option("--duration-s", type=click.FloatRange(min=0), default=3.0, show_default=True, help="Measured time per batch.")
@click.option("--min-iters", type=click.IntRange(min=1), default=10, show_default=True, help="Minimum measured iterations per batch.")
@click.option("--mode", type=click.Choice(["compute", "end-to-end"]), default="compute", show_default=True,
              help="compute: device-resident buffers; end-to-end: adds pinned host<->device copies (CUDA).")
@click.option("--cuda-graph/--no-cuda-graph", default=True, show_default=True, help="Replay a CUDA graph when capture succeeds.")
@json_option("the versioned result")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads (ORT intra-op, torch); default: the runtime's. "
              "Recorded: runs with different threads are not compared.")
@click.option("--accuracy-data", type=click.Path(exists=True),
              help="Held-out images folder or .npy/.npz (not the calibration set): add 'vitdeploy accuracy' figures "
                   "(final ONNX vs the plain export its manifest lists, in ORT).")
@click.option("--min-agreement", type=click.FloatRange(0, 100), default=None,
              help="Top-1 / detection agreement (%) that earns a ✔ (default 99).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@renamed("--batch", "batch_text", "--batch-sizes")
def command(artifact, alias, backend, device, precision, img_size, batch_text, warmup_ms, duration_s, min_iters, mode,
            cuda_graph, json_out, threads, accuracy_data, min_agreement, quiet):
    """Measure latency (min/mean/median/p90/p95/p99/max, CV) and throughput per batch size.

    ARTIFACT is an ONNX file, a TensorRT engine plan, or a directory written by
    'vitdeploy export'/'build' (its engine for trt, its final ONNX for ort).
    Ctrl-C keeps the batch sizes already measured.

    \b
    Examples:
      vitdeploy bench build/swin_t --backend trt --batch-sizes 1,8,64 --json swin_t.json
      vitdeploy bench --model vit_t --backend ort      # builds build/vit_t_fp32 first (reused next time)
      vitdeploy bench --model vit_t --backend torch,torch-compile --device cuda --precision fp16
      vitdeploy bench out/vit_t/model.onnx --duration-s 1
    """
    from vitdeploy.bench import environment, schema
    from vitdeploy.bench.runner import Settings, run_batches
    from vitdeploy.console import console, stage

    json_path = json_out
    json_to_stdout(json_out)
    batches = parse_batches(batch_text)
    names = parse_backends(backend)
    settings = Settings(warmup_ms=float(warmup_ms), duration_s=float(duration_s), min_iters=int(min_iters))
    env: dict | None = None
    runs: list[dict] = []
    acc_record = None
    from vitdeploy.bench.accuracy import DEFAULT_MIN_AGREEMENT

    min_agreement = DEFAULT_MIN_AGREEMENT if min_agreement is None else min_agreement
    bannered = False
    for name in names:
        be, art = make_backend(artifact, alias, name, device, precision, img_size, cuda_graph, threads)
        if accuracy_data and acc_record is None:  # fail before minutes of timing, not after
            from vitdeploy.bench.accuracy import check_possible

            check_possible(art, accuracy_data)
        from vitdeploy.weights import is_random

        if not bannered and is_random(be.identity()["weights"]):
            from vitdeploy.weights import banner

            banner(alias or artifact)
            bannered = True
        if env is None:
            env = environment.collect(be.device)
        elif be.device == "cuda" and "gpu" not in env:
            env["gpu"] = environment.collect("cuda")["gpu"]
        run = run_batches(be, batches, mode, settings, progress=not quiet)
        del be  # free the model/engine before the next backend loads its own
        runs.append(run)
        if run["interrupted"]:
            print_run(run, env)
            break
        if accuracy_data:
            if acc_record is None:
                from vitdeploy.bench import accuracy

                with stage("accuracy") as st:
                    acc_record = accuracy.measure(art, accuracy_data)
                    head = acc_record["headline"]
                    st.detail = f"{head['label']}: {head['value']:.2f}%" if head else "no headline figure"
                    if not (head and accuracy.judged(head["name"], head["value"], acc_record["weights"], min_agreement)):
                        st.unjudged()
                        st.detail += accuracy_why_unjudged(head, acc_record["weights"], min_agreement)
            run["accuracy"] = acc_record
        print_run(run, env)
    interrupted = any(r["interrupted"] for r in runs)
    if not interrupted and not any(r["results"] for r in runs):  # an error, so no result file either
        skipped = [s["reason"] for r in runs for s in r["skipped"]]
        raise VitdeployError("no batch size could be measured", skipped[0] if skipped else None)
    doc = schema.new_document(env, runs)
    if json_path == "-":
        emit_json(doc, "-")
    elif json_path:
        schema.write(json_path, doc)
        console.print(f"[green]✔[/] wrote {json_path}")
    if interrupted:
        console.print("[yellow]interrupted:[/] kept the batch sizes measured before Ctrl-C")
        sys.exit(130)
