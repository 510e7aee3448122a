"""`vitdeploy bench`: latency and throughput of an artifact or a registry model."""
from __future__ import annotations

import click

from vitdeploy.errors import VitdeployError

BACKEND_NAMES = ["trt", "ort", "torch", "torch-compile"]


def parse_batches(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise VitdeployError(f"--batch '{text}' is not a comma-separated list of integers", "for example --batch 1,8,64") from None
    if not values or any(v < 1 for v in values):
        raise VitdeployError(f"--batch '{text}' needs batch sizes of at least 1", "for example --batch 1,8,64")
    return list(dict.fromkeys(values))


def _trt_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorrt") is not None


def make_backend(artifact: str | None, alias: str | None, backend: str | None, device: str | None,
                 precision: str | None, img_size: int | None, cuda_graph: bool):
    """Pick and build the backend the flags describe; every impossible combination is a one-line error."""
    from vitdeploy.bench.backends import backend_class

    if artifact and alias:
        raise VitdeployError("pass either an ARTIFACT or --model, not both", "--model builds the PyTorch model from the registry")
    if not artifact and not alias:
        raise VitdeployError("nothing to benchmark", "pass an ONNX file, an engine, an artifact directory, or --model ALIAS")
    art = None
    if artifact:
        from vitdeploy.bench.artifact import resolve

        art = resolve(artifact)
        if backend is None:
            backend = "trt" if art.engine is not None and (art.onnx is None or _trt_importable()) else "ort"
    backend = backend or "torch"
    if backend in ("torch", "torch-compile"):
        if art is not None:
            from vitdeploy.models import REGISTRY

            if art.model not in REGISTRY:
                raise VitdeployError(f"the {backend} backend builds a registry model, and {artifact} names none",
                                     "use --model ALIAS")
            alias = art.model
        return backend_class(backend)(alias, device=device or "cpu", precision=precision or "fp32",
                                      img_size=(img_size, img_size) if img_size else None, cuda_graph=cuda_graph)
    if art is None:
        raise VitdeployError(f"the {backend} backend runs an artifact, not a registry model",
                             f"export first: vitdeploy export --model {alias} -o out/{alias}, then bench out/{alias}")
    if precision is not None:
        raise VitdeployError("--precision applies to the PyTorch backends only", "an artifact's precision is fixed when it is built")
    if img_size is not None:
        raise VitdeployError("--img-size applies to the PyTorch backends only", "an artifact's input size is fixed when it is exported")
    path = art.path_for(backend)
    if backend == "trt":
        if device == "cpu":
            raise VitdeployError("the trt backend runs on the GPU only", "drop --device cpu or use --backend ort")
        return backend_class("trt")(path, model=art.model, precision=art.precision or "unknown", cuda_graph=cuda_graph)
    from vitdeploy.bench.artifact import onnx_precision

    prec = art.precision if art.precision and path == art.onnx and art.manifest.get("files") else onnx_precision(path)
    return backend_class("ort")(path, model=art.model, precision=prec, device=device or "cpu")


def attach_accuracy(run: dict, backend, data_dir: str) -> None:
    from vitdeploy.bench.accuracy import accuracy_record, load_compare_models

    compare_models = load_compare_models()
    figures = compare_models(backend.artifact or backend.model, data_dir)
    run["accuracy"] = accuracy_record(figures, data_dir)


def print_run(run: dict, env: dict) -> None:
    from rich import box
    from rich.table import Table

    from vitdeploy.bench.stats import CV_WARN

    from vitdeploy.bench.environment import device_name
    from vitdeploy.bench.schema import run_label
    from vitdeploy.console import console

    t = Table(title=f"{run_label(run)} on {device_name(env, run['device'])}", title_justify="left",
              box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    for col in ("batch", "iters", "median", "mean", "p90", "p99", "min", "max", "CV", "img/s", "enqueue", "graph"):
        t.add_column(col, justify="right", no_wrap=True)
    for r in run["results"]:
        s = r["latency_ms"]
        cv = f"{s['cv']:.1%}"
        enq = r.get("host_enqueue_ms")
        graph = r.get("cuda_graph") or {}
        t.add_row(
            str(r["batch"]), str(r["iterations"]), *(_ms(s[k]) for k in ("median", "mean", "p90", "p99", "min", "max")),
            f"[yellow]{cv}[/]" if s["cv"] > CV_WARN else cv, f"{r['throughput_ips']:.1f}",
            _ms(enq["median"]) if enq else "-",
            "yes" if graph.get("used") else ("failed" if graph.get("error") else "-"),
        )
    t.caption = "latencies in ms"
    t.caption_justify = "left"
    wide_print(t)
    for r in run["results"]:
        for w in r["warnings"]:
            console.print(f"  [yellow]batch {r['batch']}:[/] {w}")
        err = (r.get("cuda_graph") or {}).get("error")
        if err:
            console.print(f"  [yellow]batch {r['batch']}:[/] CUDA graph capture failed, timed plain launches ({err})")
    for s in run["skipped"]:
        console.print(f"  [yellow]batch {s['batch']} skipped:[/] {s['reason']}")
    acc = run.get("accuracy")
    if acc and acc.get("headline"):
        console.print(f"  accuracy: {acc['headline']['name']} {acc['headline']['value']:.2f}%")


def wide_print(renderable) -> None:
    """Print tables full width in logs and pipes (rich assumes 80 columns there and would cut numbers)."""
    from rich.console import Console

    from vitdeploy.console import console

    if console.is_terminal:
        console.print(renderable)
    else:
        Console(file=console.file, width=200, highlight=False, no_color=console.no_color).print(renderable)


def _ms(v: float) -> str:
    return f"{v:.4g}"


@click.command("bench")
@click.argument("artifact", required=False, type=click.Path())
@click.option("--model", "alias", help="Registry alias to build in PyTorch (torch / torch-compile backends).")
@click.option("--backend", type=click.Choice(BACKEND_NAMES), help="Default: trt for engines, ort for ONNX, torch for --model.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), help="Default: cuda for trt, else cpu.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]), help="PyTorch backends only (default fp32).")
@click.option("--img-size", type=int, help="Square input size for --model (default: the model's).")
@click.option("--batch", "batch_text", default="1", show_default=True, help="Comma-separated batch sizes, e.g. 1,8,64.")
@click.option("--warmup-ms", type=click.FloatRange(min=0), default=200, show_default=True, help="Warm-up time per batch.")
@click.option("--duration-s", type=click.FloatRange(min=0), default=3.0, show_default=True, help="Measured time per batch.")
@click.option("--min-iters", type=click.IntRange(min=1), default=10, show_default=True, help="Minimum measured iterations per batch.")
@click.option("--mode", type=click.Choice(["compute", "end-to-end"]), default="compute", show_default=True,
              help="compute: device-resident buffers; end-to-end: adds pinned host<->device copies (CUDA).")
@click.option("--cuda-graph/--no-cuda-graph", default=True, show_default=True, help="Replay a CUDA graph when capture succeeds.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the versioned JSON result here.")
@click.option("--accuracy-data", type=click.Path(exists=True, file_okay=False), help="Add 'vitdeploy accuracy' figures on this data.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(artifact, alias, backend, device, precision, img_size, batch_text, warmup_ms, duration_s, min_iters, mode,
            cuda_graph, json_path, accuracy_data, quiet):
    """Measure latency (min/mean/median/p90/p95/p99/max, CV) and throughput per batch size.

    ARTIFACT is an ONNX file, a TensorRT engine plan, or a directory written by
    'vitdeploy export'/'build' (its engine for trt, its final ONNX for ort).
    Ctrl-C keeps the batch sizes already measured.

    \b
    Examples:
      vitdeploy bench build/swin_t --backend trt --batch 1,8,64 --json swin_t.json
      vitdeploy bench --model vit_t --backend torch --device cuda --precision fp16
      vitdeploy bench out/vit_t/model.onnx --duration-s 1
    """
    from vitdeploy.bench import environment, schema
    from vitdeploy.bench.runner import Settings, run_batches
    from vitdeploy.console import console

    batches = parse_batches(batch_text)
    be = make_backend(artifact, alias, backend, device, precision, img_size, cuda_graph)
    env = environment.collect(be.device)
    settings = Settings(warmup_ms=float(warmup_ms), duration_s=float(duration_s), min_iters=int(min_iters))
    run = run_batches(be, batches, mode, settings, progress=not quiet)
    if accuracy_data and not run["interrupted"]:
        attach_accuracy(run, be, accuracy_data)
    print_run(run, env)
    doc = schema.new_document(env, [run])
    if json_path:
        schema.write(json_path, doc)
        console.print(f"[green]✔[/] wrote {json_path}")
    if run["interrupted"]:
        console.print("[yellow]interrupted:[/] kept the batch sizes measured before Ctrl-C")
        raise click.exceptions.Exit(130)
    if not run["results"]:
        raise VitdeployError("no batch size could be measured", run["skipped"][0]["reason"] if run["skipped"] else None)
