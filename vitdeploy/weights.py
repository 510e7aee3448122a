"""Which weights an artifact carries, as one record every JSON output repeats.

A random-weight model has near-uniform logits, so any agreement or accuracy
figure measured on it is noise; commands say so in one banner line and withhold
their ✔. The record is read from the manifest `export`/`build` write:

    {"kind": "random", "seed": 0}
    {"kind": "checkpoint", "sha256": "..."}
    {"kind": "pretrained", "tag": "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"}
    {"kind": "unknown"}              (no manifest: an ONNX from elsewhere)
"""
from __future__ import annotations

from pathlib import Path

RANDOM_SEED = 0  # deploy.export.export_verified seeds torch with it before building a random-weight model
KINDS = ("random", "checkpoint", "pretrained", "unknown")


def from_manifest(manifest: dict | None) -> dict:
    """The weights record of a vitdeploy manifest (or {"kind": "unknown"} without one)."""
    model = (manifest or {}).get("model") or {}
    kind = model.get("weights")
    if isinstance(kind, dict):  # already a record
        return dict(kind)
    if kind == "random":
        return {"kind": "random", "seed": RANDOM_SEED}
    if kind == "checkpoint":
        sha = (model.get("checkpoint") or {}).get("sha256")
        return {"kind": "checkpoint", "sha256": sha} if sha else {"kind": "checkpoint"}
    if kind == "pretrained":
        tag = model.get("pretrained_tag") or model.get("name")
        return {"kind": "pretrained", "tag": tag} if tag else {"kind": "pretrained"}
    return {"kind": "unknown"}


def for_model(alias: str, *, checkpoint_sha256: str | None = None, pretrained_tag: str | None = None) -> dict:
    """The record of a model vitdeploy builds itself (the PyTorch bench backends, export)."""
    if checkpoint_sha256:
        return {"kind": "checkpoint", "sha256": checkpoint_sha256}
    if pretrained_tag:
        return {"kind": "pretrained", "tag": pretrained_tag}
    return {"kind": "random", "seed": RANDOM_SEED}


def beside(path: str | Path | None) -> dict:
    """The weights record of the manifest next to an ONNX/engine file, or of a build directory."""
    if path is None:
        return {"kind": "unknown"}
    from vitdeploy.artifact import manifest_beside

    manifest = manifest_beside(path)
    return {"kind": "unknown"} if manifest is None else from_manifest(manifest)


def is_random(record: dict | None) -> bool:
    return isinstance(record, dict) and record.get("kind") == "random"


def describe(record: dict | None) -> str:
    """'random (seed 0)', 'checkpoint sha256 1a2b3c4d5e6f', 'pretrained timm/...', 'unknown'."""
    if not isinstance(record, dict):
        return "unknown"
    kind = record.get("kind", "unknown")
    if kind == "random":
        return f"random (seed {record.get('seed', RANDOM_SEED)})"
    if kind == "checkpoint":
        return f"checkpoint sha256 {str(record.get('sha256', '?'))[:12]}"
    if kind == "pretrained":
        return f"pretrained {record.get('tag', '?')}"
    return "unknown"


BANNER = ("random weights: {what} {verb} no --checkpoint/--pretrained weights; latency is unaffected, but "
          "agreement and accuracy figures of a random model are noise and get no ✔")


def banner(what: str, plural: bool = False) -> None:
    """The one line every command prints (on stderr, so JSON on stdout stays clean) for random weights.
    `plural` when `what` names several things ("the runs in a.json and b.json")."""
    from rich.markup import escape

    from vitdeploy import console

    if getattr(console, "_quiet", [0])[0]:  # a step run on the side (bench building its artifact): its caller says it
        return
    console.err_console.print(f"[bold yellow]⚠ {escape(BANNER.format(what=what, verb='have' if plural else 'has'))}[/]")
