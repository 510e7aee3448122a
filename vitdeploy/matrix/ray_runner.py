"""Run a plan on a Ray cluster as a task graph, scheduled by resources.

- one prepare task per Prepare (CPU; `[prepare]` can pin it to CPU nodes), returning a small
  record and, as a second object, the prepared directory's files;
- one cell task per Cell with its device type's resources (`num_gpus` + `accelerator_type`, custom
  resources, node labels), taking the prepare's files as an argument, so Ray starts it when the
  prepare is done and moves the files to whichever node it lands on.

Retries: a task lost with its worker or node (Ray's system failures) is retried up to
`max_retries`; a failing command is a returned record, never an exception, so it is not retried.
Tasks report "started" to a small actor, which is how the table knows what is running and how a
retry shows. Ctrl-C cancels every task still pending or running and keeps what finished.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from vitdeploy.errors import VitdeployError
from vitdeploy.matrix import execute
from vitdeploy.matrix.plan import Cell, DeviceType, Plan, Prepare
from vitdeploy.matrix.progress import Board
from vitdeploy.matrix.results import Store

INSTALL_HINT = "install it with: pip install 'vitdeploy[cluster]'"
CANCEL_GRACE_S = 5.0


def import_ray():
    try:
        import ray
    except ImportError:
        raise VitdeployError("--ray needs Ray, which is not installed here", INSTALL_HINT) from None
    return ray


def _reachable(address: str) -> None:
    """A TCP connect to HOST:PORT first: ray.init retries an address nothing listens on for minutes."""
    import socket

    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise VitdeployError(f"--ray {address} is not auto, HOST:PORT or ray://HOST:PORT", "e.g. --ray 10.0.0.1:6379")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as e:
        raise VitdeployError(f"cannot reach the Ray cluster at {address} ({e.strerror or e})",
                             "start one with 'ray start --head' or check the address and port") from None


def connect(address: str):
    """ray.init against an existing cluster: 'auto', 'host:port' or 'ray://host:port' (Ray Client)."""
    ray = import_ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address != "auto":
        _reachable(address)
    try:
        ray.init(address=address, logging_level="warning", log_to_driver=False, namespace="vitdeploy-matrix",
                 configure_logging=True)
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise VitdeployError(f"cannot connect to a Ray cluster at {address} ({first})",
                             "start one with 'ray start --head' or pass its address, e.g. --ray 10.0.0.1:6379") from None
    return ray


def cluster_nodes(ray) -> list[dict]:
    return [{"id": n["NodeID"], "hostname": n.get("NodeManagerHostname"), "ip": n.get("NodeManagerAddress"),
             "resources": n.get("Resources", {}), "labels": n.get("Labels", {})}
            for n in ray.nodes() if n.get("Alive")]


def offers(node: dict, dt: DeviceType) -> bool:
    """Whether a node has what a device type asks for (resources and labels, as Ray would match them)."""
    return offers_options(node, dt.ray_options())


def offers_options(node: dict, opts: dict) -> bool:
    res = node["resources"]
    need = dict(opts.get("resources") or {})
    need["CPU"] = opts.get("num_cpus", 1)
    need["GPU"] = opts.get("num_gpus", 0)
    if opts.get("accelerator_type"):
        need[f"accelerator_type:{opts['accelerator_type']}"] = 0.001
    if any(res.get(k, 0) < v for k, v in need.items() if v):
        return False
    return all(node["labels"].get(k) == v for k, v in (opts.get("label_selector") or {}).items())


# ----------------------------------------------------------------------------- tasks (run on the nodes)


class _Events:
    """Where tasks say they started: the driver drains it to show running cells and retries."""

    def __init__(self):
        self.items: list[dict] = []

    def put(self, item: dict) -> None:
        self.items.append(item)

    def drain(self) -> list[dict]:
        out, self.items = self.items, []
        return out


def _node_work(work: str) -> Path:
    p = Path(os.path.expanduser(work))
    p.mkdir(parents=True, exist_ok=True)
    return p


def _prepare_task(prep: Prepare, work: str, events):
    node = execute.node_info()
    events.put.remote({"kind": "prepare", "id": prep.id, "host": node["hostname"]})
    rec, payload = execute.run_prepare(prep, _node_work(work), node, pack=True)
    return rec, payload


def _cell_task(cell: Cell, payload: dict | None, prepare_status: dict | None, work: str, events, max_plan_bytes: int):
    node = execute.node_info(cell.device_type.name)
    events.put.remote({"kind": "cell", "id": cell.id, "host": node["hostname"]})
    root = _node_work(work)
    prepared = None
    if cell.prepare is not None:
        if payload is None:
            return {"id": cell.id, "node": node, "status": "failed", "files": {}, "plan": None, "seconds": 0.0,
                    "reason": f"prepare {cell.prepare} failed: {(prepare_status or {}).get('reason')}",
                    "log_tail": (prepare_status or {}).get("log_tail")}
        prepared = execute.materialize(payload, root)
    return execute.run_cell(cell, prepared, root, node, max_plan_bytes=max_plan_bytes)


# ----------------------------------------------------------------------------- driver


def _lost(e: Exception) -> str:
    first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def run(ray, plan: Plan, cells: list[Cell], store: Store, board: Board, work: str, *, max_plan_bytes: int,
        max_retries: int, check_resources: bool) -> None:
    from ray import exceptions as rex

    nodes = cluster_nodes(ray)
    runnable = []
    no_prepare_node = check_resources and any(c.prepare for c in cells) and not any(
        offers_options(n, next(iter(plan.prepares.values())).ray) for n in nodes)
    for cell in cells:
        why = None
        if check_resources and not any(offers(n, cell.device_type) for n in nodes):
            why = (f"no node of the cluster offers device type {cell.device_type.name} ({cell.device_type.describe()}); "
                   "start one with those resources or pass --allow-pending")
        elif no_prepare_node and cell.prepare:
            why = (f"no node of the cluster offers what [prepare] asks for ({plan.prepares[cell.prepare].ray}); "
                   "start one with those resources or pass --allow-pending")
        if why:
            board.finished(cell.id, store.note_cell(cell, "failed", why))
        else:
            runnable.append(cell)
    needed = list(dict.fromkeys(c.prepare for c in runnable if c.prepare))

    events = ray.remote(num_cpus=0, max_restarts=0)(_Events).remote()
    prepare_fn = ray.remote(_prepare_task)
    cell_fn = ray.remote(_cell_task)
    pending: dict = {}  # ObjectRef -> ("prepare", Prepare) | ("cell", Cell)
    payloads = {}
    for pid in needed:
        prep = plan.prepares[pid]
        rec_ref, payload_ref = prepare_fn.options(num_returns=2, max_retries=max_retries, retry_exceptions=False,
                                                  name=f"prepare {pid}", **prep.ray).remote(prep, work, events)
        pending[rec_ref] = ("prepare", prep)
        payloads[pid] = (payload_ref, rec_ref)
    for cell in runnable:
        payload_ref, rec_ref = payloads.get(cell.prepare, (None, None))
        ref = cell_fn.options(max_retries=max_retries, retry_exceptions=False, name=cell.id,
                              **cell.device_type.ray_options()).remote(cell, payload_ref, rec_ref, work, events,
                                                                       max_plan_bytes)
        pending[ref] = ("cell", cell)

    def drain() -> None:
        try:
            items = ray.get(events.drain.remote(), timeout=10)
        except Exception:  # the table is a convenience: never fail the matrix over it
            return
        for it in items:
            (board.prepare_started if it["kind"] == "prepare" else board.started)(it["id"], it.get("host"))

    try:
        while pending:
            # A tick of at most half a second: whatever finished by then, however many.
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0.5)
            drain()
            for ref in ready:
                kind, what = pending.pop(ref)
                try:
                    rec = ray.get(ref)
                except rex.TaskCancelledError:
                    rec = {"status": "cancelled", "reason": "cancelled"}
                except rex.RayTaskError as e:  # a bug in the task code itself: fail this cell with its traceback
                    rec = {"status": "failed", "reason": _lost(e.cause if getattr(e, "cause", None) else e),
                           "log_tail": "\n".join(str(e).splitlines()[-execute.LOG_TAIL_LINES:])}
                except rex.RayError as e:  # lost with its worker or node, after max_retries
                    rec = {"status": "lost", "reason": f"lost after {max_retries} retries: {_lost(e)}"}
                attempts = board.attempts.get(what.id)
                if kind == "prepare":
                    rec.setdefault("id", what.id)
                    board.prepare_finished(what.id, store.save_prepare(what, rec, attempts))
                elif rec.get("status") in ("done", "failed") and "files" in rec:
                    board.finished(what.id, store.save_cell(what, rec, attempts))
                else:
                    board.finished(what.id, store.note_cell(what, rec["status"], rec.get("reason"), attempts=attempts,
                                                            log_tail=rec.get("log_tail")))
    except KeyboardInterrupt:
        _cancel(ray, pending, store, board)
        raise
    finally:
        try:
            ray.kill(events)
        except Exception:
            pass


def _cancel(ray, pending: dict, store: Store, board: Board) -> None:
    """Cancel every task not finished: politely first (the task's child is terminated), then by force."""
    for ref in pending:
        try:
            ray.cancel(ref, force=False)
        except Exception:
            pass
    deadline = time.time() + CANCEL_GRACE_S
    left = list(pending)
    while left and time.time() < deadline:
        ready, left = ray.wait(left, num_returns=len(left), timeout=max(0.1, deadline - time.time()))
        for ref in ready:
            kind, what = pending.pop(ref)
            try:
                rec = ray.get(ref)
            except Exception:
                continue
            if kind == "cell" and rec.get("status") == "done":  # finished just before the cancel reached it
                board.finished(what.id, store.save_cell(what, rec, board.attempts.get(what.id)))
    for ref in list(pending):
        try:
            ray.cancel(ref, force=True)
        except Exception:
            pass
    for kind, what in pending.values():
        if kind == "cell":
            store.note_cell(what, "cancelled", "cancelled (Ctrl-C)")
