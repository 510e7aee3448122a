"""A throwaway Ray cluster on this machine: one head and N worker nodes, each a real `ray start`.

For tests, benchmarks and trying `vitdeploy matrix --ray` without a fleet. Every node gets its
own free ports and the cluster its own temporary directory, so it cannot collide with another
Ray on the machine; `stop()` ends exactly the processes this cluster started (the process groups
of its `ray start` calls and their descendants), never the machine-wide `ray stop`, which would
kill every Ray of every user.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

WORKER_PORTS = 24  # ports per node for Ray's worker processes


@dataclass
class NodeSpec:
    num_cpus: int | None = 1  # None: what Ray detects
    num_gpus: int | None = 0  # None: what Ray detects (and its accelerator_type label with it)
    resources: dict = field(default_factory=dict)
    labels: dict = field(default_factory=dict)
    object_store_mb: int = 80  # Ray's minimum is 75 MiB


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _ray_cli() -> list[str]:
    exe = Path(sys.executable).with_name("ray")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "ray.scripts.scripts"]


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, pgid), from /proc."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        out[int(d)] = (int(fields[1]), int(fields[2]))
    return out


class LocalCluster:
    def __init__(self, nodes: list[NodeSpec], *, env: dict | None = None, start_timeout_s: float = 120):
        if not nodes:
            raise ValueError("a cluster needs at least a head node")
        self.specs = nodes
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}
        self.timeout = start_timeout_s
        self.temp_dir: Path | None = None
        self.address: str | None = None
        self.groups: list[int] = []  # process groups of our `ray start` calls
        self.logs: list[Path] = []

    # -- start
    def _node_args(self, spec: NodeSpec, head: bool) -> list[str]:
        p = free_ports(8 + WORKER_PORTS)
        args = ["--node-ip-address=127.0.0.1",
                *([f"--num-cpus={spec.num_cpus}"] if spec.num_cpus is not None else []),
                *([f"--num-gpus={spec.num_gpus}"] if spec.num_gpus is not None else []),
                f"--object-store-memory={spec.object_store_mb * 2**20}", f"--temp-dir={self.temp_dir}",
                f"--resources={json.dumps(spec.resources)}", "--disable-usage-stats",
                f"--node-manager-port={p[0]}", f"--object-manager-port={p[1]}", f"--metrics-export-port={p[2]}",
                f"--dashboard-agent-listen-port={p[3]}", f"--dashboard-agent-grpc-port={p[4]}",
                f"--runtime-env-agent-port={p[5]}", f"--worker-port-list={','.join(map(str, p[8:]))}"]
        if spec.labels:
            args.append("--labels=" + ",".join(f"{k}={v}" for k, v in spec.labels.items()))
        if head:
            gcs = free_ports(1)[0]
            self.address = f"127.0.0.1:{gcs}"
            args = ["--head", f"--port={gcs}", "--include-dashboard=false", f"--dashboard-port={p[6]}",
                    f"--ray-client-server-port={p[7]}", *args]
        else:
            args = [f"--address={self.address}", *args]
        return args

    def _ray_start(self, args: list[str], i: int) -> None:
        log = self.temp_dir / f"ray_start_{i}.log"
        self.logs.append(log)
        with open(log, "wb") as f:
            proc = subprocess.Popen([*_ray_cli(), "start", *args], stdout=f, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=self.env, start_new_session=True)
            self.groups.append(proc.pid)  # its daemons keep this process group after it exits
            try:
                rc = proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = "timeout"
        if rc != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            raise RuntimeError(f"ray start (node {i}) failed ({rc}):\n{tail}")

    def start(self) -> str:
        # Short path: Ray's unix sockets live under it and sun_path is limited to 107 bytes.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="vdray-", dir="/tmp"))
        try:
            for i, spec in enumerate(self.specs):
                self._ray_start(self._node_args(spec, head=i == 0), i)
            self.wait_for_nodes(len(self.specs))
        except BaseException:
            self.stop()
            raise
        return self.address

    def nodes(self) -> list[dict]:
        """The alive nodes as a separate driver sees them: id, resources, labels."""
        code = ("import json, ray, sys\n"
                "ray.init(address=sys.argv[1], logging_level='error', log_to_driver=False)\n"
                "print(json.dumps([{'id': n['NodeID'], 'resources': n['Resources'], 'labels': n.get('Labels', {})}"
                " for n in ray.nodes() if n['Alive']]))\n")
        out = subprocess.run([sys.executable, "-c", code, self.address], capture_output=True, text=True,
                             env=self.env, timeout=self.timeout, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    def wait_for_nodes(self, n: int) -> list[dict]:
        deadline = time.time() + self.timeout
        while True:
            nodes = self.nodes()
            if len(nodes) >= n or time.time() > deadline:
                if len(nodes) < n:
                    raise RuntimeError(f"only {len(nodes)} of {n} Ray nodes came up")
                return nodes
            time.sleep(0.5)

    # -- stop
    def processes(self) -> set[int]:
        table = _proc_table()
        mine = {pid for pid, (_, pgid) in table.items() if pgid in self.groups}
        grew = True
        while grew:  # workers and agents have their own groups but descend from our raylets
            new = {pid for pid, (ppid, _) in table.items() if ppid in mine and pid not in mine}
            mine |= new
            grew = bool(new)
        return mine - {os.getpid()}

    def stop(self, grace_s: float = 3.0) -> None:
        """SIGTERM, then SIGKILL after grace_s: raylets take ~10 s to exit on SIGTERM and the GCS longer,
        and a throwaway cluster has nothing to save."""
        procs = self.processes()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in procs:
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
            deadline = time.time() + (grace_s if sig == signal.SIGTERM else 2)
            while procs and time.time() < deadline:
                procs = {p for p in procs if _alive(p)}
                time.sleep(0.1)
            if not procs:
                break
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> "LocalCluster":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"  # a zombie is gone, only not reaped yet
    except (OSError, IndexError):
        return False
