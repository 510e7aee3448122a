"""Pre- and post-processing and labels of a served artifact, from its manifest.

Manifests written before these fields existed get them derived from the model registry
and the artifact's outputs, the same way `vitdeploy infer` does.
"""
from __future__ import annotations

from vitdeploy.deploy.serving.served import Served
from vitdeploy.errors import VitdeployError


def preprocessing(served: Served) -> dict:
    """The served model's preprocessing, as the manifest (or --preprocess) states it; never a default
    standing in for one (`vitdeploy package` refuses first: `require_preprocessing`)."""
    from vitdeploy.deploy.preprocess import is_known
    from vitdeploy.image_transform import resize_spec

    pp = dict(served.manifest.get("preprocessing") or {})
    if not is_known(pp):
        raise unknown_preprocessing(served.build_dir, pp)
    if not pp.get("input_size"):
        shape = served.io["inputs"][0]["shape"]
        if not all(isinstance(d, int) and d > 0 for d in shape[1:]):
            raise VitdeployError("the manifest records no input size and the input size is not static",
                                 "rebuild with 'vitdeploy build', which records it")
        pp["input_size"] = list(shape[1:])
    if pp.get("source") is None:  # recorded by an earlier vitdeploy from the model registry: timm's defaults fill gaps
        from vitdeploy.deploy.preprocess import IMAGENET

        pp = {**IMAGENET, **pp}
    pp["resize"] = resize_spec(pp)
    return pp


def unknown_preprocessing(build_dir, pp: dict | None) -> VitdeployError:
    from vitdeploy.deploy.preprocess import describe_source

    return VitdeployError(
        f"{build_dir} does not state the model's preprocessing ({describe_source(pp)}): a serving config "
        "would guess the normalisation and resize",
        "pass --preprocess FILE.json (mean, std, interpolation, crop; or a Hugging Face preprocessor_config.json; "
        "docs/serving.md)")


def require_preprocessing(manifest: dict, build_dir) -> None:
    """Refuse (one line) before any work when the build does not state its preprocessing."""
    from vitdeploy.deploy.preprocess import is_known

    if not is_known(manifest.get("preprocessing")):
        raise unknown_preprocessing(build_dir, manifest.get("preprocessing"))


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
