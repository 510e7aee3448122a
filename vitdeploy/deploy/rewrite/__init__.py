"""Rewrite passes: find a subgraph by structure, emit its replacement, keep it only if verified.

One file per pass. `PASSES` maps the names `--passes` accepts to their classes
(imported lazily so `vitdeploy --help` stays fast).
"""
from __future__ import annotations

import importlib

PASSES: dict[str, str] = {
    "swin": "vitdeploy.deploy.rewrite.swin:SwinWindowAttentionPass",
    "gpsa": "vitdeploy.deploy.rewrite.gpsa:GpsaPass",
    "msda": "vitdeploy.deploy.rewrite.msda:MsdaPass",
    "halo": "vitdeploy.deploy.rewrite.halo:HaloAttentionPass",
    "attention_scale": "vitdeploy.deploy.rewrite.attention_scale:AttentionScalePass",
}


def load_pass(name: str, **options):
    from vitdeploy.errors import VitdeployError

    if name not in PASSES:
        raise VitdeployError(f"unknown rewrite pass '{name}'", f"choose from {', '.join(PASSES)}")
    mod, cls = PASSES[name].split(":")
    return getattr(importlib.import_module(mod), cls)(**options)
