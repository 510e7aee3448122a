"""ONNX graphs of any size: a `.onnx` file and the external data files it names, handled as one.

Protobuf cannot serialise a message of 2 GiB or more, so a graph whose weights are larger (ViT-H/14 is
2.5 GB in FP32, SAM-H's image encoder the same, DINOv2-g 4.5 GB) keeps its tensors in an external data
file beside it (`model.onnx.data`, as `torch.onnx.export(..., external_data=True)` writes). Every step
reads, writes, copies and hashes the graph together with those files:

- `save_onnx` writes external data when the tensors are over the threshold (the protobuf limit less a
  margin for the graph itself; `VITDEPLOY_EXTERNAL_DATA_BYTES` lowers it, which is how the tests make a
  small external-data graph), atomically: both files are written in a staging folder and renamed into place;
- `data_files` lists the files a graph names, `check_data_files` refuses a missing one in one line;
- `copy_onnx` copies the graph with its data files; `sha256_onnx` / `onnx_entry` hash them together.

A graph under the threshold is one file, byte for byte as before, so hashes and cache keys of small
models do not change.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from vitdeploy.errors import VitdeployError

PROTOBUF_LIMIT = 2 ** 31 - 1  # bytes: the largest message protobuf serialises
GRAPH_MARGIN = 256 * 2 ** 20  # room for the graph itself (nodes, names, shapes) beside the tensors
THRESHOLD_ENV = "VITDEPLOY_EXTERNAL_DATA_BYTES"
MIN_EXTERNAL_TENSOR = 1024  # smaller tensors stay in the graph (onnx.save's default size_threshold)


def external_threshold() -> int:
    """Tensor bytes above which a graph is saved with external data."""
    env = os.environ.get(THRESHOLD_ENV)
    if env:
        try:
            return max(0, int(env))
        except ValueError:
            raise VitdeployError(f"{THRESHOLD_ENV}={env!r} is not a number of bytes", f"e.g. {THRESHOLD_ENV}=1000000") from None
    return PROTOBUF_LIMIT - GRAPH_MARGIN


def _tensors(model):
    """Every TensorProto of a model: initializers and tensor attributes, in subgraphs too."""
    import onnx

    def graph_tensors(graph):
        yield from graph.initializer
        for node in graph.node:
            for a in node.attribute:
                if a.type == onnx.AttributeProto.TENSOR:
                    yield a.t
                elif a.type == onnx.AttributeProto.TENSORS:
                    yield from a.tensors
                elif a.type == onnx.AttributeProto.GRAPH:
                    yield from graph_tensors(a.g)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    for g in a.graphs:
                        yield from graph_tensors(g)

    yield from graph_tensors(model.graph)


def tensor_bytes(model) -> int:
    """Bytes of tensor data a model holds in memory (raw_data, or the typed fields' size)."""
    import numpy as np
    import onnx

    total = 0
    for t in _tensors(model):
        if t.HasField("raw_data"):
            total += len(t.raw_data)
        elif t.data_location != onnx.TensorProto.EXTERNAL:
            n = int(np.prod(t.dims)) if t.dims else 1
            total += n * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    return total


def needs_external_data(model) -> bool:
    return tensor_bytes(model) > external_threshold()


def data_files(path: str | os.PathLike, model=None) -> list[str]:
    """The external data files (relative locations, in order of first use) the graph at `path` names."""
    import onnx

    if model is None:
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as e:  # protobuf's DecodeError, or a truncated file
            raise VitdeployError(f"{Path(path).name} is not an ONNX model ({type(e).__name__})",
                                 "pass the .onnx file torch.onnx.export or vitdeploy wrote") from None
    seen: list[str] = []
    for t in _tensors(model):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            loc = next((e.value for e in t.external_data if e.key == "location"), None)
            if loc and loc not in seen:
                seen.append(loc)
    return seen


def check_data_files(path: str | os.PathLike, model=None) -> list[Path]:
    """The data files of the graph at `path`, each checked to be there; a missing one is one line (exit 2)."""
    p = Path(path)
    out = []
    for loc in data_files(p, model):
        f = (p.parent / loc)
        if Path(loc).is_absolute() or ".." in Path(loc).parts:
            raise VitdeployError(f"{p.name} names external data outside its folder ({loc})",
                                 "save the graph with its data file beside it (onnx.save_model(..., location='model.onnx.data'))")
        if not f.is_file():
            raise VitdeployError(f"{p.name} keeps its weights in {loc}, which is missing from {p.parent}",
                                 f"copy {loc} next to {p.name}: torch.onnx.export writes them together")
        out.append(f)
    return out


def onnx_files(path: str | os.PathLike) -> list[Path]:
    """The graph and its data files."""
    return [Path(path), *check_data_files(path)]


def load_onnx_model(path: str | os.PathLike, *, load_external_data: bool = True):
    """onnx.load, after checking the data files are there (one line, not onnx's ValidationError)."""
    import onnx

    if load_external_data:
        check_data_files(path)
    return onnx.load(str(path), load_external_data=load_external_data)


def save_onnx(model, path: str | os.PathLike, *, external: bool | None = None) -> Path:
    """Write `model` to `path` atomically; with its tensors in `path.name + ".data"` when they are over the
    threshold (or `external` says so). Saving with external data moves the tensors out of `model`."""
    import onnx

    from vitdeploy.artifact import publish

    path = Path(path)
    if data_files(path, model):  # loaded without its data (load_external_data=False): the graph alone changes
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            onnx.save_model(model, tmp)
            return publish(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    if external is None:
        external = needs_external_data(model)
    data_name = f"{path.name}.data"
    stage = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        if external:
            onnx.save_model(model, str(stage / path.name), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data_name, size_threshold=MIN_EXTERNAL_TENSOR)
            publish(stage / data_name, path.parent / data_name)  # the data first: the graph never names a missing file
        else:
            onnx.save_model(model, str(stage / path.name))
        publish(stage / path.name, path)
        if not external:  # an earlier external-data save of this graph left its data file: it belongs to no graph now
            with contextlib.suppress(FileNotFoundError):
                (path.parent / data_name).unlink()
        return path
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def copy_onnx(src: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Copy a graph and its data files (same relative locations) to `dest`, each file atomically."""
    from vitdeploy.artifact import atomic_copy

    src, dest = Path(src), Path(dest)
    for f in check_data_files(src):  # the data first: the graph never names a missing file
        target = dest.parent / f.relative_to(src.parent)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_copy(f, target)
    return atomic_copy(src, dest)


def _sha256(path: Path) -> str:
    from vitdeploy.artifact import sha256_file

    return sha256_file(path)


def sha256_onnx(path: str | os.PathLike) -> str:
    """sha256 of a graph with its data: the file's own hash when it has none (as before), else a hash over the
    graph's hash and each data file's name and hash."""
    p = Path(path)
    files = check_data_files(p)
    own = _sha256(p)
    if not files:
        return own
    h = hashlib.sha256(own.encode())
    for f in files:
        h.update(f"\n{f.relative_to(p.parent)}:{_sha256(f)}".encode())
    return h.hexdigest()


def onnx_entry(root: str | os.PathLike, path: str | os.PathLike) -> dict:
    """The manifest / step-cache record of a graph: path, sha256 and bytes, and its data files' (when any)."""
    root, p = Path(root), Path(path)
    entry = {"path": os.path.relpath(p, root), "sha256": _sha256(p), "bytes": p.stat().st_size}
    data = check_data_files(p)
    if data:
        entry["data"] = [{"path": os.path.relpath(f, root), "sha256": _sha256(f), "bytes": f.stat().st_size} for f in data]
    return entry


def is_large(model) -> bool:
    """Whether `model` is over the external-data threshold (so it cannot be serialised to bytes, and is
    converted in place rather than copied)."""
    return needs_external_data(model)


def has_unloaded(model) -> bool:
    """Whether `model` was loaded without its external data (its big tensors are references to files)."""
    import onnx

    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in _tensors(model))


def light_copy(model, *, max_bytes: int = 1 << 20, external: Callable | None = None):
    """A copy of `model` without its large tensors' bytes: the graph, every tensor up to `max_bytes` whole, and
    each larger one as an external reference (`external(tensor) -> (location, offset, length)`, or a placeholder).

    The big tensors are only read, never modified: protobuf (upb) keeps cleared or replaced bytes in the message's
    arena until the message goes, so moving bytes out of a large model and back would hold them twice.
    """
    import onnx
    from onnx.external_data_helper import set_external_data

    light = onnx.ModelProto()
    for f in ("ir_version", "producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(light, f, getattr(model, f))
    light.opset_import.extend(model.opset_import)
    light.metadata_props.extend(model.metadata_props)
    light.functions.extend(model.functions)
    g, src = light.graph, model.graph
    g.name, g.doc_string = src.name, src.doc_string
    g.input.extend(src.input)
    g.output.extend(src.output)
    g.value_info.extend(src.value_info)
    g.node.extend(src.node)  # node attributes' tensors (Constant) are small in exported graphs
    for t in src.initializer:
        unloaded = t.data_location == onnx.TensorProto.EXTERNAL  # loaded without its data: no bytes to carry
        big = unloaded or (t.HasField("raw_data") and len(t.raw_data) > max_bytes)
        if not big:
            g.initializer.add().CopyFrom(t)
            continue
        nt = g.initializer.add()
        nt.name, nt.data_type = t.name, t.data_type
        nt.dims.extend(t.dims)
        if external is not None and not unloaded:
            location, offset, length = external(t)
            nt.raw_data = b"\0"  # set_external_data wants a raw_data field to replace
            set_external_data(nt, location=location, offset=offset, length=length)
            nt.ClearField("raw_data")
        # else a placeholder: type and dims, no data (shape inference reads no more)
    return light


def infer_shapes(model):
    """onnx.shape_inference.infer_shapes for a model of any size: a large one is inferred on a light copy
    (shapes need types, dims and small constants, not the weights) and the inferred value_info copied
    back; returns the model."""
    import onnx

    if not is_large(model) and not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        return onnx.shape_inference.infer_shapes(model)
    inferred = onnx.shape_inference.infer_shapes(light_copy(model))
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.graph.value_info)
    for mine, theirs in zip(model.graph.output, inferred.graph.output):
        mine.CopyFrom(theirs)
    return model


@contextlib.contextmanager
def as_file(model, *, name: str = "model.onnx"):
    """A path to `model` on disk for tools that need a file (ONNX Runtime above 2 GiB): a small model is
    written whole; a large one as a light copy whose big tensors are streamed, one at a time, to one external
    data file (the caller's model is only read). The folder goes afterwards."""
    import onnx

    folder = Path(tempfile.mkdtemp(prefix="vitdeploy-onnx-"))
    path = folder / name
    try:
        if not is_large(model):
            onnx.save_model(model, str(path))
        else:
            data_name = f"{name}.data"
            with open(folder / data_name, "wb") as data:
                def external(t):
                    offset = data.tell()
                    raw = t.raw_data
                    data.write(raw)
                    return data_name, offset, len(raw)

                light = light_copy(model, max_bytes=MIN_EXTERNAL_TENSOR, external=external)
            onnx.save_model(light, str(path))
            del light
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def external_tensors(model) -> dict[str, tuple[str, int, int]]:
    """name -> (location, offset, length) of every tensor the graph keeps in external data."""
    import onnx

    out = {}
    for t in _tensors(model):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            info = {e.key: e.value for e in t.external_data}
            out[t.name] = (info["location"], int(info.get("offset", 0)), int(info["length"]) if "length" in info else -1)
    return out


def write_with_data(graph, src: str | os.PathLike, dest: str | os.PathLike, convert: Callable | None = None) -> Path:
    """Write `graph` (a model loaded without its external data, possibly edited) to `dest` with its own data file,
    streaming each external tensor's bytes from `src`'s data files, through `convert(name, bytes) -> bytes` when
    given (FP32 -> FP16): one tensor in memory at a time. Atomic: both files staged, the data published first."""
    import onnx

    from vitdeploy.artifact import publish

    src, dest = Path(src), Path(dest)
    data_name = f"{dest.name}.data"
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        handles: dict[str, object] = {}
        with open(stage / data_name, "wb") as out:
            for t in _tensors(graph):
                if t.data_location != onnx.TensorProto.EXTERNAL:
                    continue
                info = {e.key: e.value for e in t.external_data}
                f = handles.get(info["location"])
                if f is None:
                    f = handles[info["location"]] = open(src.parent / info["location"], "rb")
                f.seek(int(info.get("offset", 0)))
                raw = f.read(int(info["length"])) if "length" in info else f.read()
                if convert is not None:
                    raw = convert(t, raw)
                offset = out.tell()
                out.write(raw)
                del t.external_data[:]
                for k, v in (("location", data_name), ("offset", str(offset)), ("length", str(len(raw)))):
                    e = t.external_data.add()
                    e.key, e.value = k, v
                del raw
        for f in handles.values():
            f.close()
        onnx.save_model(graph, str(stage / dest.name))
        publish(stage / data_name, dest.parent / data_name)
        publish(stage / dest.name, dest)
        return dest
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def consolidate_external_data(path: str | os.PathLike) -> list[str]:
    """Merge the external data files a graph names (TorchScript's exporter writes one per tensor above 2 GiB)
    into one `path.name + ".data"`, streaming one tensor at a time; the old files are removed. Returns them."""
    import onnx

    p = Path(path)
    model = onnx.load(str(p), load_external_data=False)
    old = data_files(p, model)
    target = f"{p.name}.data"
    if not old or old == [target]:
        return []
    check_data_files(p, model)
    tmp = p.parent / f".{target}.tmp"
    with open(tmp, "wb") as out:
        for t in _tensors(model):
            if t.data_location != onnx.TensorProto.EXTERNAL:
                continue
            info = {e.key: e.value for e in t.external_data}
            with open(p.parent / info["location"], "rb") as f:
                f.seek(int(info.get("offset", 0)))
                raw = f.read(int(info["length"])) if "length" in info else f.read()
            offset = out.tell()
            out.write(raw)
            del t.external_data[:]
            for k, v in (("location", target), ("offset", str(offset)), ("length", str(len(raw)))):
                e = t.external_data.add()
                e.key, e.value = k, v
            del raw
    os.replace(tmp, p.parent / target)
    onnx.save_model(model, str(p))
    for loc in old:
        if loc != target:
            with contextlib.suppress(FileNotFoundError):
                (p.parent / loc).unlink()
    return old


def load_small_external(model, path: str | os.PathLike, max_bytes: int = 1 << 20) -> bool:
    """Read the external tensors of at most `max_bytes` (scales, shapes, small constants: what graph checks
    read) into a model loaded with `load_external_data=False`; the weights stay on disk. Returns whether the
    model has external data at all."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_tensor

    base = str(Path(path).parent)
    found = False
    for t in _tensors(model):
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        found = True
        length = next((int(e.value) for e in t.external_data if e.key == "length"), None)
        if length is not None and length <= max_bytes:
            load_external_data_for_tensor(t, base)
            t.data_location = onnx.TensorProto.DEFAULT
            del t.external_data[:]
    return found
