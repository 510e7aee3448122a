"""The front door of `--model`: what a name, a directory or a file:factory stands for.

A user brings a model in one of four ways, tried in this order:

1. an alias of the registry (`vitdeploy models`), e.g. `swin_t`;
2. a timm architecture, `timm/NAME[.TAG]` or the bare NAME when it is no alias, built with its own
   `pretrained_cfg` (input size, mean/std, interpolation, crop) -- `timm_arch.py`;
3. a Hugging Face model directory written by `save_pretrained` (`config.json` + weights), or a hub id
   already in the local cache (`--pretrained` to download it) -- `hf.py`;
4. a Python entry `path/to/file.py:factory` or `package.module:factory` returning an `nn.Module` --
   `python_entry.py`.

Each route yields a `vitdeploy.models.ModelInfo` (route, spec, task, outputs), so everything after
the front door -- export, parity, manifest -- treats every model alike. Resolution reads configs and
registries only; nothing is built and nothing is downloaded without `--pretrained`.
"""
from __future__ import annotations

import difflib
import functools
import re
from dataclasses import replace
from pathlib import Path

from vitdeploy.errors import VitdeployError

ROUTES = ("alias", "timm", "huggingface", "python")
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def resolve(spec: str, *, num_classes: int | None = None, input_name: str | None = None,
            output_names: tuple[str, ...] | None = None, pretrained: bool = False):
    """The ModelInfo `--model SPEC` stands for, with --num-classes / --input-names / --output-names applied.

    Every failure is one VitdeployError line with a suggestion (exit 2), before anything is written.
    """
    info = _identify(str(spec).strip(), bool(pretrained))
    return _apply(info, num_classes, input_name, tuple(output_names) if output_names else None)


@functools.lru_cache(maxsize=64)
def _identify(spec: str, pretrained: bool):
    from vitdeploy.models import REGISTRY
    from vitdeploy.sources import hf, python_entry, timm_arch

    if not spec:
        raise VitdeployError("--model is empty", "name an alias, a timm architecture, a Hugging Face directory or file.py:factory")
    if spec in REGISTRY:
        return REGISTRY[spec]
    if spec.startswith("timm/"):
        return timm_arch.info_for(spec.removeprefix("timm/"), explicit=True)
    entry = python_entry.parse(spec)
    if entry is not None:
        return python_entry.info_for(*entry, spec=spec)
    path = Path(spec).expanduser()
    looks_like_path = spec.startswith((".", "/", "~")) or "\\" in spec or path.suffix in (".py", ".onnx", ".pth", ".pt",
                                                                                         ".safetensors", ".json")
    if path.is_dir() and ((path / "config.json").is_file() or looks_like_path or "/" in spec
                          or not timm_arch.is_timm(spec)):
        return hf.info_for_dir(path)
    if path.is_file() or looks_like_path:
        _file_error(path)
    by_timm_name = {i.name: i for i in REGISTRY.values() if i.source == "timm"}
    if spec in by_timm_name:  # the timm name of an alias: the alias (its overrides, its rewrite passes)
        return by_timm_name[spec]
    if timm_arch.is_timm(spec):
        return timm_arch.info_for(spec)
    if hf.looks_like_hub_id(spec):
        return hf.info_for_hub_id(spec, pretrained)
    raise _unknown(spec)


def _apply(info, num_classes, input_name, output_names):
    """--num-classes, --input-names, --output-names on a resolved model (one line where one does not apply)."""
    changes: dict = {}
    if num_classes is not None:
        if num_classes < 0:
            raise VitdeployError(f"--num-classes must be 0 or more, got {num_classes}",
                                 "e.g. --num-classes 10 (0: no classifier, pooled features)")
        if info.source != "timm":
            where = {"transformers": "config.json (num_labels / id2label) sets the class count of a Hugging Face model",
                     "python": "a Python entry builds its own head"}.get(info.source, f"{info.alias} has a fixed head")
            raise VitdeployError(f"--num-classes does not apply to {info.alias}: {where}", "drop --num-classes")
        changes["overrides"] = {**info.overrides, "num_classes": int(num_classes)}
        if num_classes == 0:
            changes.update(outputs=("features",), task="features")
    if input_name:
        changes["input_name"] = input_name
    if output_names:
        if info.outputs and len(output_names) != len(info.outputs) and info.route != "python":
            raise VitdeployError(f"--output-names gives {len(output_names)} names, {info.alias} has "
                                 f"{len(info.outputs)} outputs ({', '.join(info.outputs)})",
                                 f"give {len(info.outputs)} comma-separated names")
        changes["outputs"] = tuple(output_names)
    if changes and info.route == "alias":
        changes.setdefault("spec", info.alias)
    return replace(info, **changes) if changes else info


def _file_error(path: Path):
    if not path.exists():
        raise VitdeployError(f"--model {path}: no such file or directory",
                             "a Python entry is FILE.py:FACTORY; a Hugging Face model is the directory save_pretrained wrote")
    if path.suffix == ".py":
        raise VitdeployError(f"--model {path} names a Python file but not the function that builds the model",
                             f"add it after a colon, e.g. --model {path}:create_model")
    if path.suffix == ".onnx":
        raise VitdeployError(f"--model {path} is an ONNX graph", f"pass it with --onnx {path}")
    if path.suffix in (".pth", ".pt", ".safetensors", ".bin", ".ckpt"):
        raise VitdeployError(f"--model {path} is a weights file, not a model",
                             f"name the architecture and pass the weights: --model ARCH --checkpoint {path}")
    raise VitdeployError(f"--model {path} is a file vitdeploy cannot build a model from",
                         "pass a Hugging Face directory (config.json + weights), FILE.py:FACTORY, or a timm name")


def _unknown(spec: str) -> VitdeployError:
    from vitdeploy.models import REGISTRY
    from vitdeploy.sources.timm_arch import timm_names

    names = list(REGISTRY) + timm_names()
    close = difflib.get_close_matches(spec, names, n=1, cutoff=0.6)
    hint = (f"did you mean '{close[0]}'?" if close else
            "'vitdeploy models' lists the aliases, 'vitdeploy models --search WORD' timm and Hugging Face architectures")
    return VitdeployError(f"unknown model '{spec}': not an alias, a timm architecture, a Hugging Face directory or "
                          "cached hub id, nor FILE.py:FACTORY", hint)


def short_name(spec: str) -> str:
    """A file-name-safe name for `--model SPEC`, without importing anything: build/NAME, the Triton model name."""
    from vitdeploy.sources.python_entry import ENTRY_RE

    spec = str(spec).strip().rstrip("/\\")
    m = ENTRY_RE.fullmatch(spec)
    if m:
        left, factory = m.group(1), m.group(2)
        stem = Path(left).stem if left.endswith(".py") else left.rsplit(".", 1)[-1]
        name = f"{stem}_{factory.rsplit('.', 1)[-1]}"
    else:
        name = spec.removeprefix("timm/")
        name = Path(name).name if ("/" in name or "\\" in name) else name
    name = _SAFE.sub("_", name).strip("._-")
    return name or "model"


def random_weights(info, *, checkpoint=None, pretrained: bool = False) -> bool:
    """True when the model is built with random weights (aliases and timm names without weights);
    a Hugging Face directory carries its weights, a Python factory may load its own."""
    return info.route in ("alias", "timm") and not checkpoint and not pretrained


def fingerprint(info) -> dict:
    """What the export step's cache key needs beyond the options: the content a model is built from."""
    from vitdeploy.sources import hf, python_entry

    out = {"route": info.route, "alias": info.alias, "name": info.name, "overrides": dict(info.overrides),
           "outputs": list(info.outputs), "input_name": info.input_name}
    if info.route == "huggingface":
        out["files"] = hf.directory_digest(Path(info.spec))
    elif info.route == "python":
        out["code"] = python_entry.code_digest(info.spec)
    return out


def resolve_request(spec: str, *, num_classes: int | None = None, input_names: str | None = None,
                    output_names=None, pretrained: bool = False, img_size=None, checkpoint=None, small: bool = False):
    """`resolve` plus the checks of the options that go with `--model` (before anything is built or written)."""
    names = parse_names(output_names) if isinstance(output_names, str) else (tuple(output_names) if output_names else None)
    inputs = parse_names(input_names) if isinstance(input_names, str) else (tuple(input_names) if input_names else None)
    if inputs and len(inputs) != 1:
        raise VitdeployError(f"--input-names gives {len(inputs)} names; vitdeploy models take one image input",
                             "give one name, e.g. --input-names pixel_values")
    info = resolve(spec, num_classes=num_classes, input_name=inputs[0] if inputs else None, output_names=names,
                   pretrained=pretrained)
    check_request(info, img_size=img_size, checkpoint=checkpoint, pretrained=pretrained, small=small)
    return info


def parse_names(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    names = tuple(n.strip() for n in str(text).split(",") if n.strip())
    bad = [n for n in names if not re.fullmatch(r"[A-Za-z_][\w.:/-]*", n)]
    if not names or bad:
        raise VitdeployError(f"'{text}' is not a list of tensor names", "comma-separated names, e.g. --output-names logits,boxes")
    if len(set(names)) != len(names):
        raise VitdeployError(f"'{text}' names a tensor twice", "give each output its own name")
    return names


def check_request(info, *, img_size=None, checkpoint=None, pretrained: bool = False, small: bool = False) -> None:
    """Options that cannot go with this model: one line each."""
    from vitdeploy.sources.hf import hub_id_of

    if small and info.route != "alias":
        raise VitdeployError(f"--reduced has no test-sized variant of {info.alias}",
                             "use it with deformable_detr or a Swin / Swin V2 alias, or drop --reduced")
    if info.route == "python":
        if not img_size:
            raise VitdeployError(f"{info.alias} comes from a Python factory, which does not say its input size",
                                 "add --img-size H W, e.g. --img-size 224")
        if pretrained:
            raise VitdeployError("--pretrained does not apply to a Python factory", "load the weights in the factory, or pass --checkpoint FILE")
    if info.route == "huggingface" and pretrained and hub_id_of(info.spec) is None:
        raise VitdeployError(f"--pretrained does not apply to the model directory {info.spec}: its own weights are used",
                             "drop --pretrained")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise VitdeployError(f"checkpoint {checkpoint} does not exist", "check the --checkpoint path")
