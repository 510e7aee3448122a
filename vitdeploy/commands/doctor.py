"""`vitdeploy doctor`: what this machine has, and therefore what `build` will do here."""
from __future__ import annotations

import click

from vitdeploy.commands.common import emit_json, json_option, json_to_stdout


def _dist_version(name: str) -> str | None:
    from vitdeploy.machine import tool_versions

    return tool_versions((name,), python=False).get(name)


def plugin_ptx(env: dict) -> dict:
    """Per vitdeploy AOT plugin: the PTX `.target` and pinned ISA an engine built here gets (and with
    --hardware-compat ampere_plus), and whether this machine's driver can JIT it."""
    from vitdeploy.errors import VitdeployError
    from vitdeploy.machine import parse_version
    from vitdeploy.plugins import TRT_FACES, ptx_target

    gpus = env.get("gpus") or []
    v = parse_version((gpus[0] if gpus else {}).get("compute_capability"))
    arch = v[0] * 10 + (v[1] if len(v) > 1 else 0) if v else None
    have = ptx_target.driver_isa(env.get("cuda_driver_api"))
    out: dict = {"driver_max_isa": f"{have // 10}.{have % 10}" if have else None, "plugins": {}}
    for op in TRT_FACES:
        entry: dict = {}
        for level in ("none", "ampere_plus"):
            try:
                t = ptx_target.for_engine(level, arch) if (arch or level == "ampere_plus") else None
            except VitdeployError as e:
                entry[level] = {"error": e.one_line()}
                continue
            if t is not None:
                entry[level] = {**t.to_dict(), "driver_ok": have is None or have >= t.isa}
        out["plugins"][op] = entry
    return out


def collect() -> dict:
    """Everything doctor shows, as data (also what `--json` prints)."""
    import platform

    from vitdeploy import __version__
    from vitdeploy import machine
    from vitdeploy.machine import (
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
    env = machine.probe()
    info["gpu"] = env
    trt = tensorrt_version()
    info["tensorrt"] = {"version": trt, "aot_plugins": supports_aot_plugins(trt),
                        "error": None if trt else tensorrt_import_error()}
    info["plugin_ptx"] = plugin_ptx(env)
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
                    "the command for the target; exit 0 (4 with --require-engine)")
    elif not env.get("gpus"):
        plan.append(f"TensorRT {trt} but no GPU found: the engine step will fail; use --no-engine")
    else:
        gpu = env["gpus"][0]
        plan.append(f"TensorRT {trt}: build makes a strongly typed engine for {gpu.get('name')}"
                    f" (compute capability {gpu.get('compute_capability', '?')})")
    plan.append(f"--plugins auto -> {decision.mode}: {decision.reason}")
    if trt is not None and not supports_aot_plugins(trt):
        plan.append(f"--plugins on is refused here (needs TensorRT >= {need})")
    for op, e in info["plugin_ptx"]["plugins"].items():
        t = e.get("none") or {}
        if t.get("driver_ok") is False:
            plan.append(f"{op}: this driver JITs PTX ISA <= {info['plugin_ptx']['driver_max_isa']}, the plugin PTX needs "
                        f"{t['ptx_isa']}: engines with vitdeploy plugins are refused here until the driver is updated")
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
    px = info["plugin_ptx"]

    def _ptx(e: dict) -> str:
        return e.get("error") or f"{e['target']} PTX ISA {e['ptx_isa']}" + ("" if e.get("driver_ok", True) else " [red](driver too old)[/]")

    t.add_row("plugin PTX", "\n".join(
        f"{op}: " + (f"{_ptx(e['none'])}; " if "none" in e else "for the build GPU (e.g. sm_90a ISA 8.0, sm_87 ISA 7.8); ")
        + f"--hardware-compat ampere_plus: {_ptx(e['ampere_plus'])}" for op, e in px["plugins"].items())
        + (f"\n(this driver JITs PTX ISA up to {px['driver_max_isa']})" if px["driver_max_isa"] else ""))
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
