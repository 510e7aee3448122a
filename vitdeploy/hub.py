"""`--pretrained` without surprises: where the weights live, whether they are here, whether the hub is reachable.

The hub client retries a failed download five times with growing waits (about 40 s) before it
gives up, and a machine without network learns nothing from that wait. So before asking for
weights vitdeploy decides, in well under a second:

- offline (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE set, or the first connection to the hub
  endpoint fails within `CONNECT_TIMEOUT_S`) and the weights are in the local cache: load them
  from the cache, with the hub client in offline mode (no retries);
- offline and not cached: fail at once, in one line that names the files, the cache folder
  they belong in and the command that fetches them on a machine with network;
- online: download as usual.

timm models name their weights in `pretrained_cfg` (a Hugging Face repo, or a plain URL that
torch.hub caches); transformers models are a repo with config.json and the weights.
"""
from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from vitdeploy.errors import VitdeployError

CONNECT_TIMEOUT_S = 3.0
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


@dataclass
class WeightsSource:
    """Where one model's pretrained weights come from."""

    repo: str | None  # Hugging Face repo id (no revision), or None for a plain URL
    revision: str | None
    needs: list[list[str]]  # every inner list: one of these files must be cached
    url: str | None = None  # a timm URL cached by torch.hub, when there is no repo

    def describe(self) -> str:
        return self.repo or self.url or "?"


def source_for(info) -> WeightsSource | None:
    """The weights a registry model's --pretrained loads, or None when it cannot be told."""
    if info.source == "timm":
        try:
            from timm.models import get_pretrained_cfg

            cfg = get_pretrained_cfg(info.name)
        except Exception:  # an unknown name or tag: timm will say so itself
            return None
        if cfg is None:
            return None
        if cfg.hf_hub_id:
            repo, _, rev = cfg.hf_hub_id.partition("@")
            if cfg.hf_hub_filename:
                files = [cfg.hf_hub_filename]
            else:  # timm asks for pytorch_model.bin and prefers its safetensors alternative
                files = ["model.safetensors", "pytorch_model.safetensors", "pytorch_model.bin"]
            return WeightsSource(repo, rev or None, [files])
        if cfg.url:
            return WeightsSource(None, None, [[Path(urlparse(cfg.url).path).name]], url=cfg.url)
        return None
    return WeightsSource(info.name, None, [["config.json"], ["model.safetensors", "pytorch_model.bin"]])


def cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _torch_hub_checkpoints() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def cached(src: WeightsSource) -> bool:
    """Whether every file the weights need is in the local cache."""
    if src.repo is None:
        return all(any((_torch_hub_checkpoints() / f).is_file() for f in group) for group in src.needs)
    from huggingface_hub import try_to_load_from_cache

    def have(f: str) -> bool:
        return isinstance(try_to_load_from_cache(src.repo, f, revision=src.revision), str)

    return all(any(have(f) for f in group) for group in src.needs)


def offline_by_env() -> str | None:
    """The variable that puts the hub client offline, if one is set (as the client reads it)."""
    from huggingface_hub import constants

    for var in _OFFLINE_VARS:
        if os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return var
    return "HF_HUB_OFFLINE" if constants.HF_HUB_OFFLINE else None


def endpoint_for(src: WeightsSource) -> str:
    if src.repo is None:
        return src.url or ""
    from huggingface_hub import constants

    return constants.ENDPOINT


def reachable(url: str, timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """One TCP connection to the URL's host (no request, no retry), name lookup included, within `timeout`
    (a resolver that hangs counts as unreachable: the lookup runs in a daemon thread)."""
    import threading

    u = urlparse(url)
    if not u.hostname:
        return False
    port = u.port or (443 if u.scheme == "https" else 80)
    ok: list[bool] = []

    def attempt():
        try:
            with socket.create_connection((u.hostname, port), timeout=timeout):
                ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    t.join(timeout)
    return bool(ok)


@contextlib.contextmanager
def hub_offline():
    """The hub client (huggingface_hub, transformers) in offline mode: cache only, no retries."""
    from huggingface_hub import constants

    was = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = was


def where_to_put(src: WeightsSource) -> str:
    """The fix: the command that fetches the weights elsewhere and the folder they go in here."""
    if src.repo is None:
        dest = _torch_hub_checkpoints()
        return (f"on a machine with network download {src.url} into {dest}/ here (TORCH_HOME moves it), "
                "or pass --checkpoint FILE")
    folder = cache_dir() / f"models--{src.repo.replace('/', '--')}"
    rev = f" --revision {src.revision}" if src.revision else ""
    return (f"on a machine with network run 'hf download {src.repo}{rev}' and copy its {folder.name} folder into "
            f"{cache_dir()}/ here (HF_HUB_CACHE moves it), or pass --checkpoint FILE")


def plan(info) -> str:
    """'online', 'cache' (offline, load from the cache) or raise the one-line error; decided before any download."""
    src = source_for(info)
    if src is None:
        return "online"
    have = cached(src)
    var = offline_by_env()
    if var:
        if have:
            return "cache"
        raise VitdeployError(f"--pretrained: {var} is set (offline) and {src.describe()} is not in the local cache",
                             where_to_put(src))
    endpoint = endpoint_for(src)
    if reachable(endpoint):
        return "online"
    if have:
        return "cache"
    host = urlparse(endpoint).hostname or endpoint
    raise VitdeployError(f"--pretrained: cannot reach {host} (no network?) and {src.describe()} is not in the local cache",
                         where_to_put(src))
