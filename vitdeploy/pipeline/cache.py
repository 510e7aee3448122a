"""The step cache: one JSON record per build step, keyed by a content hash of its inputs."""
from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

from vitdeploy.artifact import atomic_write_json, publish, sha256_file

T = TypeVar("T")

CACHE_DIR = ".vitdeploy/steps"

# The code each step's output depends on, relative to the vitdeploy package. The package version
# alone is not enough: an editable install (or a fix between releases) changes what a step writes --
# plugin attributes, the INT8 recipe -- without changing the version, and a stale cached graph would
# then reach TensorRT. A step not listed here depends on the whole package.
STEP_CODE = {
    "export": ("deploy/export.py", "deploy/export_patches.py", "deploy/normalize.py", "parity.py", "models.py",
               "hf_detectors.py", "weights.py", "sources", "onnx_files.py"),
    "rewrite": ("deploy/rewrite", "deploy/normalize.py", "plugins", "onnxrt.py", "onnxgraph.py", "onnx_files.py"),
    "precision": ("calibration", "plugins", "onnx_files.py"),
    "accuracy": ("calibration", "onnxrt.py", "onnx_files.py"),
    "engine": ("deploy/engine.py", "machine.py", "tensorrt_session.py", "plugins"),
}


@functools.lru_cache(maxsize=None)
def code_digest(parts: tuple[str, ...] | None, root: Path | None = None) -> str:
    """sha256 over the Python sources under `parts` of `root` (the vitdeploy package; all of it when None)."""
    root = root or Path(__file__).resolve().parent.parent
    files: list[Path] = []
    for part in parts or ("",):
        p = root / part
        files.extend(sorted(p.rglob("*.py")) if p.is_dir() else [p] if p.is_file() else [])
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class StepRun:
    """What `StepCache.run` returns: the step's record, its key, and whether it came from the cache."""

    key: str
    record: dict  # {"key", "outputs": {role: {"path", "sha256", "bytes"}}, "result", "seconds"}
    cached: bool
    out_dir: Path

    @property
    def result(self) -> dict:
        return self.record["result"]

    def output(self, role: str) -> Path | None:
        entry = self.record["outputs"].get(role)
        return None if entry is None else self.out_dir / entry["path"]


class StepCache:
    """One JSON record per step under DIR/.vitdeploy/steps: key, output files with sha256, result."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.dir = out_dir / CACHE_DIR

    def key(self, step: str, inputs: dict) -> str:
        from vitdeploy import __version__

        code = code_digest(STEP_CODE.get(step))
        return _digest({"step": step, "vitdeploy": __version__, "code": code, "inputs": inputs})

    def lookup(self, step: str, key: str) -> dict | None:
        """The stored record when its key matches and every output file is intact; else None."""
        p = self.dir / f"{step}.json"
        try:
            rec = json.loads(p.read_text())
        except (OSError, ValueError):
            return None
        if rec.get("key") != key:
            return None
        for out in rec.get("outputs", {}).values():
            for entry in [out, *out.get("data", [])]:  # a graph's external data files too
                f = self.out_dir / entry["path"]
                if not f.is_file() or f.stat().st_size != entry["bytes"] or sha256_file(f) != entry["sha256"]:
                    return None
        return rec

    def store(self, step: str, key: str, outputs: dict[str, Path], result: dict, seconds: float) -> dict:
        self.dir.mkdir(parents=True, exist_ok=True)
        rec = {
            "key": key,
            "outputs": {role: file_entry(self.out_dir, p) for role, p in outputs.items()},
            "result": result,
            "seconds": round(seconds, 3),
        }
        atomic_write_json(self.dir / f"{step}.json", rec)
        return rec


    def run(self, step: str, inputs: dict, compute: Callable[[], tuple[dict[str, Path], dict]]) -> StepRun:
        """The step's record for `inputs`: the stored one when its key matches and its output files are intact,
        else `compute()` -> (output files by role, result), timed and stored. Every build step runs through here."""
        key = self.key(step, inputs)
        rec = self.lookup(step, key)
        if rec is not None:
            return StepRun(key, rec, True, self.out_dir)
        started = time.perf_counter()
        outputs, result = compute()
        release_memory()
        return StepRun(key, self.store(step, key, outputs, result, time.perf_counter() - started), False, self.out_dir)


def release_memory() -> None:
    """Hand what a step freed back to the system before the next step loads its model: Python's cycles
    collected, then glibc's free heap trimmed. glibc raises its mmap threshold as large blocks are freed,
    so a big model's tensors freed by one step can stay in the heap, where the next step's ONNX Runtime
    session does not reuse them (benchmarks/large_model.py on ViT-H). Elsewhere than glibc the trim is skipped."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def staged(out_dir: Path, dest: Path, write: Callable[[Path], T]) -> T:
    """`write(tmp)` into a temporary file beside `dest`, then publish it as `dest` (never a half-written file)."""
    tmp = tmp_path(out_dir, dest.name)
    try:
        value = write(tmp)
        publish(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return value


def staged_onnx(out_dir: Path, dest: Path, write: Callable[[Path], T]) -> T:
    """`write(path)` of a graph under its final name in a staging folder, then its external data files and the
    graph published beside `dest` (the data first: a published graph never names a missing file)."""
    import shutil

    from vitdeploy.onnx_files import data_files

    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=out_dir))
    try:
        value = write(stage / dest.name)
        for name in data_files(stage / dest.name):
            publish(stage / name, dest.parent / name)
        publish(stage / dest.name, dest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return value


def file_entry(root: Path, p: Path) -> dict:
    """path, sha256 and bytes of an output; a graph's external data files under "data" (vitdeploy.onnx_files)."""
    if Path(p).suffix == ".onnx":
        from vitdeploy.onnx_files import onnx_entry

        return onnx_entry(root, p)
    return {"path": os.path.relpath(p, root), "sha256": sha256_file(p), "bytes": p.stat().st_size}


def tmp_path(out_dir: Path, name: str) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=out_dir)
    os.close(fd)
    return Path(tmp)

