"""`vitdeploy doctor`: what this machine has, and therefore what `build` will do here."""
from __future__ import annotations

import click

from vitdeploy.commands.common import emit_json, json_option, json_to_stdout


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def collect() -> dict:
    """Everything doctor shows, as data (also what `--json` prints)."""
    import platform

    from vitdeploy import __version__
    from vitdeploy.deploy import gpu_env
    from vitdeploy.deploy.trt_env import (
        AOT_PLUGINS_MIN,
        select_plugin_mode,
        supports_aot_plugins,
        tensorrt_import_error,
        tensorrt_version,
    )

    info: dict = {"vitdeploy": __version__, "python": platform.python_version(), "platform": platform.platform()}
    try:
        import torch

        info["torch"] = {"version": torch.__version__, "cuda_build": torch.version.cuda,
                         "cuda_available": bool(torch.cuda.is_available())}
    except Exception as e:  # a broken torch install is worth reporting, not crashing on
        info["torch"] = {"error": f"{type(e).__name__}: {e}"}
    env = gpu_env.probe()
    info["gpu"] = env
    trt = tensorrt_version()
    info["tensorrt"] = {"version": trt, "aot_plugins": supports_aot_plugins(trt),
                        "error": None if trt else tensorrt_import_error()}
    info["polygraphy"] = _dist_version("polygraphy")
    info["cuda_python"] = _dist_version("cuda-python") or _dist_version("cuda-bindings")
    info["pycuda"] = _dist_version("pycuda")
    info["triton"] = _dist_version("triton")
    try:
        import onnxruntime as ort

        info["onnxruntime"] = {"version": ort.__version__, "providers": ort.get_available_providers()}
    except Exception as e:
        info["onnxruntime"] = {"error": f"{type(e).__name__}: {e}"}
    target = "jetson" if env.get("jetson") else "gpu"
    decision = select_plugin_mode("auto", trt, target)
    need = ".".join(map(str, AOT_PLUGINS_MIN))
    plan = []
    if trt is None:
        plan.append("no TensorRT: build stops after the ONNX steps (export, rewrite, precision, accuracy) and prints "
                    "the command for the target; exit 4, or 0 with --no-engine")
    elif not env.get("gpus"):
        plan.append(f"TensorRT {trt} but no GPU found: the engine step will fail; use --no-engine")
    else:
        gpu = env["gpus"][0]
        plan.append(f"TensorRT {trt}: build makes a strongly typed engine for {gpu.get('name')}"
                    f" (compute capability {gpu.get('compute_capability', '?')})")
    plan.append(f"--plugins auto -> {decision.mode}: {decision.reason}")
    if trt is not None and not supports_aot_plugins(trt):
        plan.append(f"--plugins on is refused here (needs TensorRT >= {need})")
    if env.get("jetson"):
        plan.append("Jetson: --target auto means jetson (FP16, 1 GiB workspace; --dla-core N to use a DLA with GPU fallback)")
    info["build_will"] = plan
    return info


@click.command("doctor")
@json_option("the findings")
def command(json_out):
    """Show Python, torch, CUDA, driver, GPUs, TensorRT, Triton, ONNX Runtime and Jetson
    details, and what 'vitdeploy build' will therefore do on this machine.

    \b
    Example:
      vitdeploy doctor
    """
    import json

    from rich.table import Table

    from vitdeploy.console import console

    info = collect()
    if json_out:
        json_to_stdout(json_out)
        emit_json(info, json_out)
        if json_out == "-":
            return
    t = Table(title=f"vitdeploy {info['vitdeploy']} doctor", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    miss = "[yellow]not installed[/]"
    t.add_row("Python", f"{info['python']}  ({info['platform']})")
    tv = info["torch"]
    t.add_row("torch", tv.get("error") or f"{tv['version']} (CUDA build {tv['cuda_build'] or 'none'}, "
              f"CUDA {'available' if tv['cuda_available'] else 'not available'})")
    g = info["gpu"]
    cuda = ", ".join(f"{label} {g[k]}" for k, label in (("cuda_driver_api", "driver API"), ("cuda_runtime", "runtime"))
                     if g.get(k))
    if g.get("cuda_runtime_source"):
        cuda += f" (runtime from {g['cuda_runtime_source']})"
    t.add_row("CUDA", cuda or (f"torch's CUDA {tv.get('cuda_build')}" if tv.get("cuda_available") else "[yellow]no CUDA runtime found[/]"))
    t.add_row("driver", g.get("driver") or "[yellow]no NVIDIA driver found[/]")
    gpus = g.get("gpus") or []
    t.add_row("GPUs", "\n".join(f"{i}: {x.get('name')} (compute capability {x.get('compute_capability', '?')})"
                                for i, x in enumerate(gpus)) or "[yellow]none[/]")
    tr = info["tensorrt"]
    t.add_row("TensorRT", f"{tr['version']} (ahead-of-time plugins: {'yes' if tr['aot_plugins'] else 'no, needs >= 10.9'})"
              if tr["version"] else f"{miss} ({tr['error']})")
    t.add_row("polygraphy", info["polygraphy"] or miss)
    t.add_row("CUDA Python", ", ".join(f"{n} {v}" for n, v in (("cuda-python", info["cuda_python"]), ("pycuda", info["pycuda"])) if v)
              or f"{miss} (needed by vitdeploy.Engine: pip install 'vitdeploy[cuda]')")
    t.add_row("Triton", info["triton"] or miss)
    o = info["onnxruntime"]
    t.add_row("onnxruntime", o.get("error") or f"{o['version']} ({', '.join(o['providers'])})")
    j = g.get("jetson")
    t.add_row("Jetson", ", ".join(f"{k} {v}" for k, v in j.items()) if j else "no")
    console.print(t)
    console.print("[bold]build here:[/]")
    for line in info["build_will"]:
        console.print(f"  • {line}")
