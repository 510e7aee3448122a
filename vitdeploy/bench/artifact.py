"""What `vitdeploy bench ARTIFACT` points at: an ONNX file, an engine plan, or an artifact directory."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from vitdeploy.errors import VitdeployError

ENGINE_SUFFIXES = (".plan", ".engine", ".trt")


@dataclass
class Artifact:
    onnx: Path | None = None
    engine: Path | None = None
    reference: Path | None = None  # the plain export, what accuracy is measured against
    model: str = "?"
    precision: str | None = None
    manifest: dict = field(default_factory=dict)

    def path_for(self, backend: str) -> Path:
        if backend == "trt":
            if self.engine is None:
                raise VitdeployError("the trt backend needs a TensorRT engine and this artifact has none",
                                     "run 'vitdeploy build' on a machine with TensorRT, or use --backend ort")
            return self.engine
        if self.onnx is None:
            raise VitdeployError(f"the {backend} backend needs an ONNX graph and this artifact has none",
                                 "use --backend trt, or point at the ONNX file")
        return self.onnx


def _files(manifest: dict, base: Path) -> list[tuple[str, Path]]:
    out = []
    for key, entry in (manifest.get("files") or {}).items():
        rel = entry.get("path") if isinstance(entry, dict) else entry
        if isinstance(rel, str):
            out.append((key, base / rel))
    return out


def _pick_onnx(files: dict[str, Path]) -> Path | None:
    """The final graph. `build` names it "onnx" (beside "onnx_exported"); `rewrite` adds "rewritten"
    to an export's manifest; a plain export has only "onnx". Otherwise the last ONNX listed."""
    existing = {k: p for k, p in files.items() if p.suffix == ".onnx" and p.is_file()}
    for key in (("onnx",) if "onnx_exported" in existing else ("rewritten", "onnx")):
        if key in existing:
            return existing[key]
    return list(existing.values())[-1] if existing else None


def _manifest_precision(manifest: dict) -> str | None:
    for key in ("precision", "build"):
        v = manifest.get(key)
        if isinstance(v, str):
            return v.lower()
        if isinstance(v, dict):
            for k in ("applied", "precision"):
                if isinstance(v.get(k), str):
                    return v[k].lower()
    return None


def onnx_precision(path: Path) -> str:
    """fp32 / fp16 / int8 read from the graph itself: Q/DQ nodes mean int8, FP16 weights mean fp16."""
    import onnx

    from vitdeploy.deploy.artifacts import load_onnx

    model = load_onnx(path, load_external_data=False)
    ops = {n.op_type for n in model.graph.node}
    if {"QuantizeLinear", "DequantizeLinear"} & ops:
        return "int8"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer):
        return "fp16"
    return "fp32"


def resolve(path: str) -> Artifact:
    p = Path(path)
    if not p.exists():
        raise VitdeployError(f"artifact {p} does not exist", "pass an ONNX file, an engine plan or a vitdeploy output directory")
    if p.is_dir():
        mpath = p / "manifest.json"
        if not mpath.is_file():
            raise VitdeployError(f"{p} has no manifest.json", "point at a directory written by 'vitdeploy export' or 'build'")
        from vitdeploy.deploy.artifacts import load_manifest

        manifest = load_manifest(p)
        files = _files(manifest, p)
        engine = next((f for _, f in files if f.suffix in ENGINE_SUFFIXES and f.is_file()), None)
        if engine is None and (files_engine := dict(files).get("engine")) is not None and files_engine.is_file():
            engine = files_engine
        files = dict(files)
        plain = files.get("onnx_exported") or files.get("onnx")
        art = Artifact(onnx=_pick_onnx(files), engine=engine, manifest=manifest,
                       reference=plain if plain is not None and plain.is_file() else None,
                       model=(manifest.get("model") or {}).get("alias", p.name),
                       precision=_manifest_precision(manifest))
        if art.onnx is None and art.engine is None:
            raise VitdeployError(f"the manifest in {p} lists no ONNX graph or engine that exists", "rebuild the artifact")
        return art
    if p.suffix == ".onnx":
        art = Artifact(onnx=p, model=p.stem)
        sidecar = p.parent / "manifest.json"
        if sidecar.is_file():
            try:
                art.manifest = json.loads(sidecar.read_text())
                art.model = (art.manifest.get("model") or {}).get("alias", p.stem)
            except (json.JSONDecodeError, AttributeError):
                pass
        return art
    if p.suffix in ENGINE_SUFFIXES:
        return Artifact(engine=p, model=p.stem)
    raise VitdeployError(f"cannot tell what {p.name} is", f"pass a .onnx file, an engine ({', '.join(ENGINE_SUFFIXES)}) or a directory")
