"""Pre- and post-processing and labels of a served artifact, from its manifest.

Manifests written before these fields existed get them derived from the model registry
and the artifact's outputs, the same way `vitdeploy infer` does.
"""
from __future__ import annotations

from vitdeploy.deploy.serving.served import Served
from vitdeploy.errors import VitdeployError


def preprocessing(served: Served) -> dict:
    from vitdeploy.deploy.preprocess import IMAGENET
    from vitdeploy.models import resize_spec

    pp = dict(served.manifest.get("preprocessing") or {})
    if not pp.get("input_size"):
        shape = served.io["inputs"][0]["shape"]
        if not all(isinstance(d, int) and d > 0 for d in shape[1:]):
            raise VitdeployError("the manifest records no preprocessing and the input size is not static",
                                 "rebuild with 'vitdeploy build', which records it")
        pp["input_size"] = list(shape[1:])
    pp = {**IMAGENET, **pp}
    pp.setdefault("resize", resize_spec(pp))
    return pp


def postprocessing(served: Served) -> dict:
    post = served.manifest.get("postprocessing")
    if post:
        return post
    from vitdeploy.models import ModelInfo, get_info, postprocessing_for

    names = [o["name"] for o in served.io["outputs"]]
    if "pred_boxes" in names:
        info = get_info("deformable_detr")
    else:
        alias = served.alias
        try:
            info = get_info(alias) if alias else None
        except VitdeployError:
            info = None
        info = info or ModelInfo("?", "?", "?", "?", (0, 0), 1, outputs=(names[0],))
    return postprocessing_for(info)


def is_classifier(served: Served) -> bool:
    return postprocessing(served).get("task") == "classification"


def num_classes(served: Served) -> int | None:
    labels = served.manifest.get("labels") or {}
    if labels.get("num_classes"):
        return int(labels["num_classes"])
    post = postprocessing(served)
    out = (post.get("scores") or {}).get("output")
    shape = next((o["shape"] for o in served.io["outputs"] if o["name"] == out), None)
    return shape[-1] if shape and isinstance(shape[-1], int) else None


def class_names(served: Served) -> list[str] | None:
    """Names in class-index order where the manifest (or, for older manifests, the registry) knows them."""
    labels = served.manifest.get("labels") or {}
    names = labels.get("names")
    if names:
        return [str(n) for n in names]
    if "labels" in served.manifest:  # recorded, without names: do not invent them
        return None
    model = served.manifest.get("model") or {}
    if model.get("source") == "timm" and num_classes(served) == 1000 and model.get("weights") != "checkpoint":
        from vitdeploy.models import get_info, labels_for

        try:
            return labels_for(get_info(model["alias"]))["names"]
        except (VitdeployError, KeyError):
            return None
    return None
