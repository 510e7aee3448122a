"""What runs on a node: a prepare or a cell, as `vitdeploy` commands in child processes, logged.

Both runners call these functions (the local one in this process, the Ray one inside tasks), and
both get plain dicts back, so a result looks the same wherever it was made. A command that fails
is an answer (status "failed", the reason and the log's tail), never an exception: Ray retries
only what is lost with a node, a deterministic failure would fail the same way again.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vitdeploy.matrix.plan import Cell, Prepare

LOG_TAIL_LINES = 15
PLAN_SUFFIXES = (".plan", ".engine")


def node_info(device_type: str | None = None) -> dict:
    """Where this runs: Ray node id (None outside Ray), hostname, IP, the device type it serves."""
    node_id = ip = None
    ray = sys.modules.get("ray")  # never import Ray just to ask
    if ray is not None and ray.is_initialized():
        try:
            node_id = ray.get_runtime_context().get_node_id()
            ip = ray.util.get_node_ip_address()
        except Exception:  # a driver-side call or an older Ray: the hostname still says where
            pass
    return {"id": node_id, "hostname": socket.gethostname(), "ip": ip, "device_type": device_type}


def vitdeploy_command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "vitdeploy.matrix.child", *args]


def run_vitdeploy(args: list[str], log: Path) -> int:
    """Run `vitdeploy ARGS` in a child (output appended to `log`); its exit status, negative for a signal."""
    from vitdeploy.matrix.child import PARENT_ENV

    env = {**os.environ, PARENT_ENV: str(os.getpid()), "PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as f:
        f.write(f"$ vitdeploy {shlex.join(args)}\n".encode())
        f.flush()
        proc = subprocess.Popen(vitdeploy_command(args), stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env)
        try:
            rc = proc.wait()
        finally:  # interrupted (Ctrl-C, a cancelled task): the child must not outlive the cell
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        f.write(f"[exit {rc}]\n".encode())
    return rc


def log_tail(*logs: Path, lines: int = LOG_TAIL_LINES) -> str:
    text = b"".join(p.read_bytes() for p in logs if p.is_file()).decode(errors="replace")
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _error_line(log: Path) -> str | None:
    """The one-line `error: ...` a vitdeploy command ends with, if it printed one."""
    if not log.is_file():
        return None
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if line.startswith("error: "):
            return line[len("error: "):]
    return None


def _why(step: str, rc: int, log: Path) -> str:
    if rc < 0:
        name = signal.Signals(-rc).name if -rc in signal.valid_signals() else str(-rc)
        hint = " (out of memory?)" if -rc == signal.SIGKILL else ""
        return f"{step} was killed by {name}{hint}"
    line = _error_line(log)
    return f"{step} failed (exit {rc})" + (f": {line}" if line else "")


def _files(root: Path) -> dict[str, Path]:
    """Every file of an artifact directory (step cache records included), temporary files left out."""
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.endswith(".tmp")}


# ----------------------------------------------------------------------------- prepare


def run_prepare(prep: Prepare, work: Path, node: dict, *, pack: bool) -> tuple[dict, dict | None]:
    """Make the prepared artifact in WORK/prepare/ID; (record, payload). The payload carries the
    directory's files (for nodes that cannot see this one's disk) when `pack` is set."""
    from vitdeploy.artifact import sha256_file

    started = time.time()
    out = work / "prepare" / prep.id
    out.parent.mkdir(parents=True, exist_ok=True)
    log = work / "prepare" / f"{prep.id}.log"
    log.unlink(missing_ok=True)
    rc = run_vitdeploy([*prep.args, "-o", str(out)], log)
    rec = {"id": prep.id, "node": node, "seconds": round(time.time() - started, 2), "dir": str(out),
           "log": log.read_bytes() if log.is_file() else b""}
    if rc != 0:
        rec.update(status="failed", reason=_why(prep.args[0], rc, log), log_tail=log_tail(log))
        return rec, None
    files = _files(out)
    digests = {rel: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for rel, p in files.items()}
    manifest = json.loads((out / "manifest.json").read_text())
    rec.update(status="done", manifest=manifest, files=digests,
               onnx_sha256=((manifest.get("files") or {}).get("onnx") or {}).get("sha256"))
    payload = {"id": prep.id, "dir": str(out), "files": digests}
    if pack:
        payload["data"] = {rel: p.read_bytes() for rel, p in files.items()}
    return rec, payload


def _intact(root: Path, digests: dict) -> bool:
    from vitdeploy.artifact import sha256_file

    for rel, d in digests.items():
        p = root / rel
        if not p.is_file() or p.stat().st_size != d["bytes"] or sha256_file(p) != d["sha256"]:
            return False
    return True


def materialize(payload: dict, work: Path) -> Path:
    """The prepared directory on this node: the prepare's own when this node sees it intact (same
    node, shared filesystem), else written from the payload into WORK/prepare/ID."""
    src = Path(payload["dir"])
    if _intact(src, payload["files"]):
        return src
    dest = work / "prepare" / payload["id"]
    if _intact(dest, payload["files"]):
        return dest
    if "data" not in payload:
        raise FileNotFoundError(f"prepared artifact {payload['id']} is not on this node and was not shipped")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{payload['id']}.", dir=dest.parent))
    try:
        for rel, data in payload["data"].items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(data)
        shutil.rmtree(dest, ignore_errors=True)
        try:
            os.replace(tmp, dest)
        except OSError:  # another cell on this node materialized it meanwhile
            if not _intact(dest, payload["files"]):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


# ----------------------------------------------------------------------------- cell


def _link_or_copy(src: str, dst: str) -> None:
    """Hard links are safe here: every vitdeploy write is temp file + rename, never in place."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def collect_plan(artifact: Path, node: dict, max_plan_bytes: int, files: dict) -> dict | None:
    """The engine plan of an artifact: its bytes into `files` when small enough to bring back, and
    in every case where it stays (node, path), its size and sha256."""
    from vitdeploy.artifact import sha256_file

    plans = sorted(p for p in artifact.iterdir() if p.suffix in PLAN_SUFFIXES and p.is_file())
    if not plans:
        return None
    p = plans[0]
    size = p.stat().st_size
    fetched = size <= max_plan_bytes
    if fetched:
        files[p.name] = p.read_bytes()
    return {"path": str(p), "bytes": size, "sha256": sha256_file(p), "node": node["hostname"], "fetched": fetched}


def run_cell(cell: Cell, prepared: Path | None, work: Path, node: dict, *, max_plan_bytes: int) -> dict:
    """Engine (when the backend needs one) and bench on this node; the record with the files to keep."""
    from vitdeploy.bench import schema

    started = time.time()
    cdir = work / "cells" / cell.dirname
    shutil.rmtree(cdir, ignore_errors=True)
    cdir.mkdir(parents=True)
    build_log, bench_log = cdir / "build.log", cdir / "bench.log"
    rec: dict = {"id": cell.id, "node": node, "status": "failed", "files": {}, "plan": None}

    def finish(**kw) -> dict:
        rec.update(kw, seconds=round(time.time() - started, 2))
        for log in (build_log, bench_log):
            if log.is_file():
                rec["files"][log.name] = log.read_bytes()
        if rec["status"] != "done":
            rec["log_tail"] = log_tail(build_log, bench_log)
        return rec

    artifact = prepared
    if cell.engine_args:
        artifact = cdir / "artifact"
        shutil.copytree(prepared, artifact, copy_function=_link_or_copy)
        rc = run_vitdeploy([*cell.engine_args, "-o", str(artifact)], build_log)
        if rc == 4:
            return finish(reason=f"no TensorRT on {node['hostname']}: the engine step was skipped (build exit 4)")
        if rc != 0:
            return finish(reason=_why("engine build", rc, build_log))
    if artifact is not None and (artifact / "manifest.json").is_file():
        rec["files"]["manifest.json"] = (artifact / "manifest.json").read_bytes()
    out_json = cdir / "bench.json"
    rc = run_vitdeploy(["bench", *([str(artifact)] if artifact else []), *cell.bench_args, "--json", str(out_json)],
                       bench_log)
    if rc != 0 or not out_json.is_file():
        return finish(reason=_why("bench", rc, bench_log) if rc else "bench wrote no result")
    doc = schema.read(out_json)
    for run in doc["runs"]:  # each run says where it was measured: report/compare read this
        run["node"] = dict(node)
        run["environment"] = doc["environment"]
    schema.validate(doc)
    rec["files"]["bench.json"] = (json.dumps(doc, indent=2) + "\n").encode()
    if artifact is not None:
        rec["plan"] = collect_plan(artifact, node, max_plan_bytes, rec["files"])
    return finish(status="done", reason=None)
