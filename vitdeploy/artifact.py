"""Artifacts on disk: atomic writes, staging directories, hashes, and the one reader of the manifest.

A failed run must never leave a half-written model or manifest behind, so every
file is written to a temporary name and renamed into place, and multi-file
outputs are assembled in a staging directory first.

Every "which manifest describes this path" question (a build directory, a loose .onnx or plan
beside one) goes through `manifest_beside`, and every "which file plays this role" (final ONNX,
plain export, engine) through `manifest_file`.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from vitdeploy.errors import VitdeployError

MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA = 1
ENGINE_SUFFIXES = (".plan", ".engine", ".trt")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def publish(tmp: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Rename a finished temporary file into place with the usual permissions.

    mkstemp creates 0600 files; artifacts are meant to be shared, so apply the umask instead.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, dest)
    return Path(dest)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        publish(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_copy(src: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Copy a file to `dest` through a temporary file beside it: `dest` is the old file or the whole new one."""
    dest = Path(dest)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        return publish(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def atomic_save_onnx(model, path: str | os.PathLike) -> Path:
    """Save a graph atomically, never half-written; with its tensors in `NAME.data` beside it when they are over
    the protobuf limit (`vitdeploy.onnx_files.save_onnx`, which then moves them out of `model`)."""
    from vitdeploy.onnx_files import save_onnx

    return save_onnx(model, path)


def load_onnx(path: str | os.PathLike, *, hint: str = "re-export it", load_external_data: bool = True):
    """onnx.load, but a missing, corrupt or empty file is a one-line VitdeployError.

    Zero bytes parse as an empty ModelProto, so a graph without inputs or outputs counts as unreadable too.
    """
    import onnx

    p = Path(path)
    if not p.is_file():
        raise VitdeployError(f"ONNX file {p} does not exist", "check the path")
    if load_external_data:
        try:
            graph = onnx.load(str(p), load_external_data=False)
        except Exception as e:
            raise VitdeployError(f"{p.name} is not a readable ONNX model ({type(e).__name__})", hint) from None
        from vitdeploy.onnx_files import check_data_files

        if not check_data_files(p, graph):  # one file: it is the model
            model = graph
            if not model.graph.input or not model.graph.output:
                raise VitdeployError(f"{p.name} is not a readable ONNX model (no graph inputs/outputs)", hint)
            return model
        del graph  # its data files are there (a missing one was one line): read them with it
    try:
        model = onnx.load(str(p), load_external_data=load_external_data)
    except Exception as e:
        raise VitdeployError(f"{p.name} is not a readable ONNX model ({type(e).__name__})", hint) from None
    if not model.graph.input or not model.graph.output:
        raise VitdeployError(f"{p.name} is not a readable ONNX model (no graph inputs/outputs)", hint)
    return model


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode())


def ensure_writable_dir(path: str | os.PathLike) -> tuple[Path, bool]:
    """Create `path` if needed and check we can write there; returns (path, created)."""
    p = Path(path)
    created = False
    if p.exists() and not p.is_dir():
        raise VitdeployError(f"output path {p} exists and is not a directory", "choose another -o")
    if not p.exists():
        try:
            p.mkdir(parents=True)
            created = True
        except OSError as e:
            raise VitdeployError(f"cannot create output directory {p}: {e.strerror}", "choose a writable -o") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise VitdeployError(f"output directory {p} is not writable", "choose a writable -o or fix its permissions")
    return p, created


@contextlib.contextmanager
def staging(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory next to `out_dir`; on success move its files into `out_dir`.

    On failure nothing in `out_dir` changes (and `out_dir` is removed again if this run created it).
    """
    out, created = ensure_writable_dir(out_dir)
    tmp = Path(tempfile.mkdtemp(prefix=".vitdeploy-stage-", dir=out))
    try:
        yield tmp
        for item in sorted(tmp.iterdir()):
            os.replace(item, out / item.name)
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_manifest(path: str | os.PathLike) -> dict:
    p = Path(path)
    if p.is_dir():
        p = p / MANIFEST_NAME
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise VitdeployError(f"no manifest at {p}", "point at a directory written by vitdeploy") from None
    except json.JSONDecodeError as e:
        raise VitdeployError(f"manifest {p} is not valid JSON ({e.msg} at line {e.lineno})", "rebuild the artifact") from None
    except UnicodeDecodeError:
        raise VitdeployError(f"manifest {p} is not a JSON text file", "rebuild the artifact") from None
    if not isinstance(data, dict) or data.get("schema") is None:
        raise VitdeployError(f"{p} is not a vitdeploy manifest", "rebuild the artifact")
    return data


def new_manifest() -> dict:
    from vitdeploy import __version__

    return {"schema": MANIFEST_SCHEMA, "vitdeploy": __version__}


def manifest_beside(path: str | os.PathLike, *, strict: bool = False) -> dict | None:
    """The manifest of the artifact `path` belongs to: DIR/manifest.json for a directory, the one next to a file.

    None where there is none. An unreadable one raises (VitdeployError, as `load_manifest`) with
    `strict`, where the caller needs it; otherwise it is None too (a loose file stays usable, only
    its provenance is unknown), and any JSON object counts.
    """
    p = Path(path)
    m = p / MANIFEST_NAME if p.is_dir() else p.parent / MANIFEST_NAME
    if not m.is_file():
        return None
    if strict:
        return load_manifest(m)
    try:
        data = json.loads(m.read_text())
    except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    return data if isinstance(data, dict) else None


def manifest_file(manifest: dict | None, base: str | os.PathLike, role: str) -> Path | None:
    """Where the manifest's file of `role` ("onnx", "onnx_exported", "engine", ...) is, relative to `base`; None if unlisted."""
    entry = ((manifest or {}).get("files") or {}).get(role)
    rel = entry.get("path") if isinstance(entry, dict) else entry
    return Path(base) / rel if isinstance(rel, str) and rel else None
