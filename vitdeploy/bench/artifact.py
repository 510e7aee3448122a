"""What `vitdeploy bench ARTIFACT` points at: an ONNX file, an engine plan, or an artifact directory.

Also what identifies it in a bench run: the canonical precision label read from the graph
(never from a file or directory name), the plain export accuracy is measured against (never
the artifact itself), the model and weights the manifest records, and the plugin nodes the
graph holds.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vitdeploy.artifact import ENGINE_SUFFIXES
from vitdeploy.errors import VitdeployError
from vitdeploy.onnxgraph import graph_precision


@dataclass
class Artifact:
    onnx: Path | None = None
    engine: Path | None = None
    reference: Path | None = None  # the plain export, what accuracy is measured against (never `onnx` itself)
    model: str = "?"
    precision: str | None = None  # canonical label (see `graph_precision`)
    manifest: dict = field(default_factory=dict)
    base: Path | None = None  # the directory the manifest's paths are relative to

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
    from vitdeploy.artifact import manifest_file

    return [(role, p) for role in (manifest.get("files") or {}) if (p := manifest_file(manifest, base, role)) is not None]


def _pick_onnx(files: dict[str, Path]) -> Path | None:
    """The final graph. `build` names it "onnx" (beside "onnx_exported"); `rewrite` adds "rewritten"
    to an export's manifest; a plain export has only "onnx". Otherwise the last ONNX listed."""
    existing = {k: p for k, p in files.items() if p.suffix == ".onnx" and p.is_file()}
    for key in (("onnx",) if "onnx_exported" in existing else ("rewritten", "onnx")):
        if key in existing:
            return existing[key]
    return list(existing.values())[-1] if existing else None


PRECISION_ORDER = ("int8", "fp16", "bf16")


def canonical_precision(label: str | None) -> str | None:
    """One spelling per set of compute precisions: 'int8+fp16', 'fp16', 'fp32', ... ('FP16+INT8' -> 'int8+fp16')."""
    if not isinstance(label, str) or not label.strip():
        return None
    parts = {p.strip().lower() for p in label.replace(",", "+").split("+") if p.strip()}
    low = [p for p in PRECISION_ORDER if p in parts]
    if low:
        return "+".join(low)
    return "fp32" if parts <= {"fp32", "float32"} else "+".join(sorted(parts))


def _manifest_precision(manifest: dict) -> str | None:
    for key in ("precision", "build"):
        v = manifest.get(key)
        if isinstance(v, str):
            return canonical_precision(v)
        if isinstance(v, dict):
            for k in ("applied", "precision"):
                if isinstance(v.get(k), str):
                    return canonical_precision(v[k])
    return None


onnx_precision = graph_precision  # the name earlier callers use (the label itself is vitdeploy.onnxgraph's)


def plugin_node_counts(path_or_model) -> dict[str, int]:
    """op type -> count of the plugin nodes (vitdeploy or TensorRT stock) in an ONNX graph."""
    import onnx

    from vitdeploy.artifact import load_onnx
    from vitdeploy.onnxgraph import plugin_node_counts as counts

    return counts(path_or_model if isinstance(path_or_model, onnx.ModelProto) else load_onnx(path_or_model, load_external_data=False))


def _sidecar_manifest(p: Path) -> dict | None:
    """The manifest.json beside a file, or None (a loose file is still benchable; only its provenance is unknown)."""
    from vitdeploy.artifact import manifest_beside

    return manifest_beside(p)


def _alias(manifest: dict, default: str) -> str:
    model = manifest.get("model")
    return model.get("alias", default) if isinstance(model, dict) else default


def _plain_export(manifest: dict, base: Path, exclude: Path) -> Path | None:
    """The FP32 export a manifest lists ('onnx_exported' in a build, 'onnx' in an export), if it is not `exclude`."""
    files = dict(_files(manifest, base))
    p = files.get("onnx_exported", files.get("onnx"))  # in a build, "onnx" is the final graph
    if p is not None and p.suffix == ".onnx" and p.is_file() and p.resolve() != exclude.resolve():
        return p
    return None


def manifest_model(manifest: dict, fallback: str) -> dict:
    """The resolved model a manifest describes: alias, source name, reduced or not."""
    m = manifest.get("model") or {}
    return {"alias": m.get("alias", fallback), "name": m.get("name"),
            "reduced": m.get("reduced") if isinstance(m.get("reduced"), bool) else None}


def resolve(path: str) -> Artifact:
    p = Path(path)
    if not p.exists():
        raise VitdeployError(f"artifact {p} does not exist", "pass an ONNX file, an engine plan or a vitdeploy output directory")
    if p.is_dir():
        mpath = p / "manifest.json"
        if not mpath.is_file():
            raise VitdeployError(f"{p} has no manifest.json", "point at a directory written by 'vitdeploy export' or 'build'")
        from vitdeploy.artifact import load_manifest

        manifest = load_manifest(p)
        files = _files(manifest, p)
        engine = next((f for _, f in files if f.suffix in ENGINE_SUFFIXES and f.is_file()), None)
        if engine is None and (files_engine := dict(files).get("engine")) is not None and files_engine.is_file():
            engine = files_engine
        files = dict(files)
        onnx_path = _pick_onnx(files)
        art = Artifact(onnx=onnx_path, engine=engine, manifest=manifest, base=p,
                       reference=_plain_export(manifest, p, onnx_path) if onnx_path is not None else None,
                       model=(manifest.get("model") or {}).get("alias", p.name))
        if art.onnx is None and art.engine is None:
            raise VitdeployError(f"the manifest in {p} lists no ONNX graph or engine that exists", "rebuild the artifact")
        art.precision = graph_precision(art.onnx) if art.onnx is not None else _manifest_precision(manifest)
        return art
    if p.suffix == ".onnx":
        art = Artifact(onnx=p, model=p.stem, base=p.parent)
        if (manifest := _sidecar_manifest(p)) is not None:
            art.manifest = manifest
            art.model = _alias(manifest, p.stem)
            # The same file benched on its own or through its directory must measure the same thing.
            art.reference = _plain_export(manifest, p.parent, p)
        art.precision = graph_precision(p)
        return art
    if p.suffix in ENGINE_SUFFIXES:
        art = Artifact(engine=p, model=p.stem, base=p.parent)
        if (manifest := _sidecar_manifest(p)) is not None:
            art.manifest = manifest
            art.model = _alias(manifest, p.stem)
        art.precision = engine_precision(art)
        return art
    raise VitdeployError(f"cannot tell what {p.name} is", f"pass a .onnx file, an engine ({', '.join(ENGINE_SUFFIXES)}) or a directory")


def engine_precision(art: Artifact) -> str | None:
    """A strongly typed engine computes in the precisions of the ONNX it was built from: read that graph."""
    onnx_path = dict(_files(art.manifest, art.base or Path("."))).get("onnx") if art.manifest else None
    if onnx_path is not None and onnx_path.is_file():
        return graph_precision(onnx_path)
    return _manifest_precision(art.manifest) if art.manifest else None
