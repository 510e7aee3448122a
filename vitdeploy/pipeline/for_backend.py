"""Artifacts built on demand for commands that need one (`bench --model X --backend ort`).

Ultralytics-style: the user names a model and a runtime, the tool exports what that runtime
needs. The build goes into build/ALIAS_PRECISION[_SIZE] through the ordinary build pipeline, so
its step cache makes the next run reuse it; the caller prints one line saying what happened.
"""
from __future__ import annotations

from pathlib import Path

from vitdeploy.errors import VitdeployError

BUILD_ROOT = Path("build")


def _size_text(img_size) -> str:
    """224 for a square, 240x320 otherwise (what --img-size accepts back)."""
    if img_size is None:
        return ""
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    return str(h) if h == w else f"{h}x{w}"


def build_dir_for(alias: str, precision: str, img_size) -> Path:
    """build/ALIAS_PRECISION[_SIZE]; `img_size` is None, an int or (H, W)."""
    from vitdeploy.sources import short_name

    return BUILD_ROOT / (f"{short_name(alias)}_{precision}" + (f"_{_size_text(img_size)}" if img_size else ""))


def ensure_built(alias: str, backend: str, precision: str | None, img_size) -> tuple[Path, str]:
    """Build (or reuse) what `backend` runs for `alias`; returns (build directory, one-line summary)."""
    from vitdeploy.console import quiet, stage
    from vitdeploy.pipeline import BuildOptions, run_build

    precision = precision or "fp32"
    if precision not in ("fp32", "fp16"):
        raise VitdeployError(f"--precision {precision} cannot be built into an ONNX graph here",
                             "use fp32 or fp16 (bf16 applies to the PyTorch backends)")
    out = build_dir_for(alias, precision, img_size)
    opts = BuildOptions(out_dir=out, alias=alias, fp16=precision == "fp16", no_engine=backend != "trt",
                        img_size=((img_size, img_size) if isinstance(img_size, int) else tuple(img_size)) if img_size else None)
    before = _steps(out)
    with stage("build") as st:
        with quiet():
            res = run_build(opts)
        what = res.engine.name if res.engine else res.final_onnx.name
        reused = before is not None and before == res.manifest.get("steps")
        summary = (f"{alias} ({precision}) for --backend {backend}: {out}/{what} "
                   f"{'reused (cached)' if reused else 'built'}, as 'vitdeploy build --model {alias}"
                   f"{' --fp16' if precision == 'fp16' else ''}{f' --img-size {_size_text(img_size)}' if img_size else ''} -o {out}'")
        st.detail = summary
    if backend == "trt" and res.engine is None:
        raise VitdeployError(f"no engine could be built here ({res.skipped_reason})",
                             f"use --backend ort, or build on the target: {res.target_commands[0]}")
    return out, summary


def _steps(out: Path) -> dict | None:
    from vitdeploy.artifact import manifest_beside

    return (manifest_beside(out) or {}).get("steps")
