"""A Python entry: `path/to/file.py:factory` or `package.module:factory`, called with no arguments.

It must return a `torch.nn.Module` that takes one image batch [B, 3, H, W]; `--img-size` says H and W
(nothing else can), `--input-names` / `--output-names` name the graph's tensors (by default `input`,
and the output's own names: a tensor is `output`, a tuple `output_0, output_1, ...`, a dict or a
ModelOutput its keys). A file's folder is put on `sys.path` while it is imported, so it can import
its neighbours; the export's cache key hashes the file and those neighbours.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from pathlib import Path

from vitdeploy.errors import VitdeployError

_IDENT = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
ENTRY_RE = re.compile(rf"(.+\.py|{_IDENT}):({_IDENT})")


def parse(spec: str) -> tuple[str, str] | None:
    m = ENTRY_RE.fullmatch(spec)
    return (m.group(1), m.group(2)) if m else None


def info_for(target: str, factory: str, *, spec: str):
    from vitdeploy.models import ModelInfo
    from vitdeploy.sources import short_name

    if target.endswith(".py"):
        path = Path(target).expanduser()
        if not path.is_file():
            raise VitdeployError(f"--model {spec}: {path} does not exist", "check the path before the colon")
        target = str(path.resolve())
    else:
        try:
            found = importlib.util.find_spec(target)
        except (ImportError, ValueError):
            found = None
        if found is None:
            raise VitdeployError(f"--model {spec}: no Python module named '{target}' on this path",
                                 "install the package, run from its folder, or pass path/to/file.py:factory")
    return ModelInfo(short_name(spec), "custom", "python", f"{target}:{factory}", (0, 0), 1, (), outputs=(),
                     notes=f"{factory}() from {target}", route="python", spec=f"{target}:{factory}", task="")


def _import(target: str):
    if not target.endswith(".py"):
        return importlib.import_module(target)
    path = Path(target)
    name = "vitdeploy_entry_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        sys.modules[name] = module
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


def build(info):
    """Import the entry's module and call its factory; one line for every way that can go wrong."""
    import torch

    target, factory = info.spec.rsplit(":", 1)
    where = Path(target).name if target.endswith(".py") else target
    try:
        module = _import(target)
    except Exception as e:
        raise VitdeployError(f"importing {where} failed: {_where(e, target)}", "fix the file so that it imports") from None
    obj = module
    for part in factory.split("."):
        if not hasattr(obj, part):
            names = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                           and getattr(v, "__module__", None) == module.__name__)
            raise VitdeployError(f"{where} has no '{factory}'",
                                 f"it defines {', '.join(names[:6])}" if names else "define a function that returns the model")
        obj = getattr(obj, part)
    if not callable(obj):
        raise VitdeployError(f"{where}:{factory} is a {type(obj).__name__}, not a function", "point at a function that returns the model")
    try:
        model = obj()
    except Exception as e:
        raise VitdeployError(f"{where}:{factory}() raised {_where(e, target)}",
                             "fix the factory: vitdeploy calls it with no arguments") from None
    if not isinstance(model, torch.nn.Module):
        raise VitdeployError(f"{where}:{factory}() returned a {type(model).__name__}, not a torch.nn.Module",
                             "return the model itself (an nn.Module), not a path, state dict or tuple")
    return model.eval()


def _where(e: Exception, target: str) -> str:
    """`ValueError: message (file.py:12)`: the exception and the deepest line of the user's file."""
    import traceback

    text = str(e).strip().splitlines()
    msg = f"{type(e).__name__}" + (f": {text[0][:160]}" if text else "")
    if isinstance(e, SyntaxError) and e.lineno:
        return f"{msg} ({Path(e.filename or target).name}:{e.lineno})"
    frames = [f for f in traceback.extract_tb(e.__traceback__) if target.endswith(".py") and f.filename == target]
    return f"{msg} ({Path(target).name}:{frames[-1].lineno})" if frames else msg


def code_digest(spec: str) -> str:
    """sha256 over the code the entry is built from: the file and the .py files beside it, or the module's
    file and its distribution's version."""
    target = spec.rsplit(":", 1)[0]
    h = hashlib.sha256(spec.encode())
    if target.endswith(".py"):
        files = sorted(Path(target).parent.glob("*.py"))[:200]
    else:
        found = importlib.util.find_spec(target)
        files = [Path(found.origin)] if found is not None and found.origin and Path(found.origin).is_file() else []
        try:
            from importlib.metadata import PackageNotFoundError, version

            h.update(version(target.split(".")[0]).encode())
        except (PackageNotFoundError, ValueError):
            pass
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def preprocessing(model, size: tuple[int, int]) -> dict:
    """A module built by timm carries its pretrained_cfg; for anything else nothing is known (ImageNet assumed)."""
    from vitdeploy.models import imagenet_assumed, timm_preprocessing

    if getattr(model, "pretrained_cfg", None):
        return timm_preprocessing(model, size, tuple(model.pretrained_cfg.get("input_size", (3, *size))[-2:]))
    return imagenet_assumed(size, "a Python factory does not say how images are prepared")
