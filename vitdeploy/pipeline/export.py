"""`vitdeploy export`: the export stage on its own: stage it, verify it, publish model.onnx + manifest.json.

The export and its parity are `deploy.export.export_verified`, as in the build's export step;
this adds the staging directory, the stage line and the Next block.
"""
from __future__ import annotations

import time
from pathlib import Path

from rich.markup import escape

from vitdeploy.artifact import MANIFEST_NAME, atomic_write_json, new_manifest, sha256_file, staging
from vitdeploy.console import console, next_steps, stage
from vitdeploy.deploy.engine import trtexec_shapes
from vitdeploy.deploy.export import BatchSpec, ExportOptions, check_opset, export_verified_isolated, summarize_parity
from vitdeploy.models import check_exporter, check_input_size


def run_export(alias: str, out_dir: str, *, img_size=None, batch: BatchSpec | None = None, opset=18,
               checkpoint=None, pretrained=False, exporter="auto", small=False, show_next: bool = True,
               num_classes: int | None = None, input_names=None, output_names=None, opset_pinned: bool = False) -> dict:
    """Export `--model ALIAS` (an alias, a timm name, a Hugging Face directory or FILE.py:FACTORY: vitdeploy.sources)."""
    from vitdeploy.sources import random_weights, resolve_request

    info = resolve_request(alias, num_classes=num_classes, input_names=input_names, output_names=output_names,
                           pretrained=pretrained, img_size=img_size, checkpoint=checkpoint, small=small)
    if img_size:
        check_input_size(info, img_size)
    check_opset(opset, check_exporter(info, exporter))
    if random_weights(info, checkpoint=checkpoint, pretrained=pretrained):
        from vitdeploy.weights import banner

        banner(info.alias)  # the options are valid: say it before the work, once
    opts = ExportOptions(img_size=img_size, batch=batch or BatchSpec(), opset=opset, checkpoint=checkpoint,
                         pretrained=pretrained, exporter=exporter, small=small, opset_pinned=opset_pinned)
    started = time.time()
    with staging(out_dir) as tmp:
        onnx_path = tmp / "model.onnx"
        with stage("export") as st:
            res, fields, parity = export_verified_isolated(info, onnx_path, opts)
            st.detail = f"model.onnx (opset {res.opset}, {res.exporter} exporter)"
            if res.fallback_reason:
                console.print(f"  [yellow]export retried:[/] {escape(res.fallback_reason)}")
            if res.patches:
                console.print(f"  export patches used: {', '.join(res.patches)} (vitdeploy/deploy/export_patches.py)")
        oldest = opset_limit_note(res.opset, Path(out_dir) / "model.onnx")
        if oldest:
            console.print(f"  [yellow]{oldest}[/]")
        console.print(f"  parity vs PyTorch: {summarize_parity(parity)}")
        manifest = new_manifest()
        manifest.update(fields)
        from vitdeploy.onnx_files import onnx_entry

        manifest["files"] = {"onnx": {k: v for k, v in onnx_entry(tmp, onnx_path).items() if k != "bytes"}}
        manifest["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))
        atomic_write_json(tmp / MANIFEST_NAME, manifest)
    out = Path(out_dir)
    console.print(f"[green]✔[/] wrote {out / 'model.onnx'} and {out / MANIFEST_NAME}")
    if show_next:
        _print_next(out, manifest, bool(info.passes) or info.route != "alias")
    return manifest


def opset_limit_note(opset: int, path: Path | str = "model.onnx") -> str | None:
    """One line when the opset is beyond what older TensorRT parsers document (export has no target;
    `build` lowers the opset for its target, `lint` checks a given one)."""
    from vitdeploy.deploy.lint.tables import OPSET_MAX, opset_since

    if opset <= OPSET_MAX[0][1]:
        return None
    since = opset_since(opset)
    att = "; its ONNX Attention nodes import only from TensorRT 10.14" if opset >= 23 else ""
    first = f"TensorRT >= {since[0]}.{since[1]}" if since else "no TensorRT release yet"
    return (f"opset {opset} is documented by {first} (JetPack 6's 10.3 stops at {OPSET_MAX[0][1]}){att}: "
            f"check with vitdeploy lint {path} --trt 10.3")


def _print_next(out: Path, manifest: dict, has_passes: bool) -> None:
    trtexec = f"trtexec --onnx={out / 'model.onnx'} --stronglyTyped --saveEngine={out / 'model.plan'}" + trtexec_shapes(manifest)
    next_steps([
        *([f"vitdeploy rewrite {out / 'model.onnx'} -o {out / 'model.rewritten.onnx'}"] if has_passes else []),
        f"vitdeploy build --onnx {out / 'model.onnx'} --fp16 -o {out}",
        trtexec,
    ])
