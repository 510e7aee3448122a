"""What `vitdeploy bench ARTIFACT` points at: an ONNX file, an engine plan, or an artifact directory.

Also what identifies it in a bench run: the canonical precision label read from the graph
(never from a file or directory name), the plain export accuracy is measured against (never
the artifact itself), the model and weights the manifest records, and the plugin nodes the
graph holds.
"""
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


def graph_precision(path_or_model) -> str:
    """The canonical precision label of an ONNX graph, from the graph alone.

    int8 when it holds Q/DQ nodes; fp16 / bf16 when weights or casts use that type; joined
    with '+' (an INT8 graph whose other layers are FP16 is 'int8+fp16'); 'fp32' otherwise.
    The same graph gets the same label whatever its file or directory is called.
    """
    import onnx

    from vitdeploy.deploy.artifacts import load_onnx

    model = path_or_model if isinstance(path_or_model, onnx.ModelProto) else load_onnx(path_or_model, load_external_data=False)
    types = {t.data_type for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Cast":
            types.update(a.i for a in n.attribute if a.name == "to")
        elif n.op_type == "Constant":
            types.update(a.t.data_type for a in n.attribute if a.name == "value" and a.HasField("t"))
    parts = []
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node):
        parts.append("int8")
    if onnx.TensorProto.FLOAT16 in types:
        parts.append("fp16")
    if onnx.TensorProto.BFLOAT16 in types:
        parts.append("bf16")
    return "+".join(parts) or "fp32"


onnx_precision = graph_precision  # the name earlier callers use


def plugin_node_counts(path_or_model) -> dict[str, int]:
    """op type -> count of the plugin nodes (vitdeploy or TensorRT stock) in an ONNX graph."""
    import onnx

    from vitdeploy.deploy.artifacts import load_onnx
    from vitdeploy.onnxgraph import plugin_node_counts as counts

    return counts(path_or_model if isinstance(path_or_model, onnx.ModelProto) else load_onnx(path_or_model, load_external_data=False))


def _sidecar_manifest(p: Path) -> dict | None:
    """The manifest.json beside a file, or None when there is none or it is not a JSON object
    (a loose file is still benchable; only its provenance is unknown)."""
    sidecar = p.parent / "manifest.json"
    if not sidecar.is_file():
        return None
    try:
        manifest = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return manifest if isinstance(manifest, dict) else None


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
        from vitdeploy.deploy.artifacts import load_manifest

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
