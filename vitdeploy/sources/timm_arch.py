"""Any timm architecture by name: `timm/NAME[.TAG]`, or the bare name when it is no alias.

The model's own `pretrained_cfg` (timm's registry, no download) gives its input size, mean/std,
interpolation and crop; `--num-classes` is timm's `num_classes` (a fine-tuned head, or 0 for pooled
features); `--checkpoint` follows timm's `checkpoint_path` (`vitdeploy.models.load_checkpoint`).
"""
from __future__ import annotations

import difflib
import functools

from vitdeploy.errors import VitdeployError


@functools.lru_cache(maxsize=1)
def timm_names() -> list[str]:
    import timm

    return timm.list_models()


def is_timm(name: str) -> bool:
    """NAME or NAME.TAG names a timm architecture (and, with a tag, one of its pretrained configs)."""
    from timm.models import is_model, split_model_name_tag

    arch, tag = split_model_name_tag(name)
    if not arch or not is_model(arch):
        return False
    return not tag or _pretrained_cfg(name) is not None


def _pretrained_cfg(name: str):
    """timm's pretrained config of NAME[.TAG], or None (timm raises for an unknown tag)."""
    from timm.models import get_pretrained_cfg

    try:
        return get_pretrained_cfg(name)
    except RuntimeError:
        return None


def info_for(name: str, *, explicit: bool = False):
    """The ModelInfo of timm architecture `name` (NAME or NAME.TAG)."""
    from timm.models import is_model, model_entrypoint, split_model_name_tag

    from vitdeploy.models import ModelInfo

    arch, tag = split_model_name_tag(name)
    if not is_model(arch):
        close = difflib.get_close_matches(arch, timm_names(), n=1, cutoff=0.6)
        raise VitdeployError(f"timm has no architecture '{arch}'",
                             f"did you mean 'timm/{close[0]}'?" if close else f"'vitdeploy models --search {arch[:8]}' lists timm's")
    cfg = _pretrained_cfg(name)
    if tag and cfg is None:
        from timm.models import get_arch_pretrained_cfgs

        tags = [t.split(".", 1)[-1] for t in get_arch_pretrained_cfgs(arch)]
        raise VitdeployError(f"timm's {arch} has no pretrained config '{tag}'",
                             f"use one of {', '.join(f'{arch}.{t}' for t in tags[:4])}" if tags else f"use timm/{arch}")
    size = tuple(int(v) for v in (cfg.input_size[-2:] if cfg is not None else (224, 224)))
    family = model_entrypoint(arch).__module__.rsplit(".", 1)[-1]  # the timm module: maxxvit, eva, vision_transformer ...
    return ModelInfo(name, family, "timm", name, size, 1, (), notes=f"timm {family}", route="timm", spec=name,
                     task="classification")
