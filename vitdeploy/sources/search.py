"""`vitdeploy models --search WORD`: architectures available in this environment, beyond the aliases.

Three places, all local: timm's registry (every architecture `--model timm/NAME` builds), the
transformers classes vitdeploy builds from a `save_pretrained` directory (image classification,
object detection, backbones), and the Hugging Face hub cache (ids `--model ORG/NAME` builds offline).
"""
from __future__ import annotations


def search(word: str, limit: int = 200) -> list[dict]:
    """Matching rows: {"source", "name", "task", "input_size", "use"}; case-insensitive substring match."""
    w = word.strip().lower()
    return (_timm(w) + _transformers(w) + _hub_cache(w))[:limit]


def _timm(w: str) -> list[dict]:
    import timm
    from timm.models import model_entrypoint

    from vitdeploy.sources.timm_arch import _pretrained_cfg

    rows = []
    for name in timm.list_models(f"*{w}*"):
        cfg = _pretrained_cfg(name)
        size = list(cfg.input_size[-2:]) if cfg is not None else None
        rows.append({"source": "timm", "name": name, "task": f"{model_entrypoint(name).__module__.rsplit('.', 1)[-1]}",
                     "input_size": size, "use": f"--model timm/{name}"})
    return rows


def _transformers(w: str) -> list[dict]:
    from transformers.models.auto import modeling_auto as auto

    rows, seen = [], set()
    for task, mapping in (("classification", auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES),
                          ("detection", auto.MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES),
                          ("backbone", auto.MODEL_FOR_BACKBONE_MAPPING_NAMES)):
        for model_type, cls in mapping.items():
            classes = cls if isinstance(cls, (tuple, list)) else (cls,)
            for c in classes:
                if (w in model_type.lower() or w in c.lower()) and c not in seen:
                    seen.add(c)
                    rows.append({"source": "transformers", "name": c, "task": task, "input_size": None,
                                 "use": "model.save_pretrained(DIR), then --model DIR"})
    return rows


def _hub_cache(w: str) -> list[dict]:
    try:
        from huggingface_hub import scan_cache_dir

        cache = scan_cache_dir()
    except Exception:  # no cache directory yet, or an unreadable one: nothing cached to offer
        return []
    return [{"source": "hub cache", "name": r.repo_id, "task": None, "input_size": None, "use": f"--model {r.repo_id}"}
            for r in sorted(cache.repos, key=lambda r: r.repo_id) if r.repo_type == "model" and w in r.repo_id.lower()]
