"""The live table: per device type, how many cells are pending, running, done and failed.

On a terminal it redraws in place (rich Live); in a pipe or a CI log it prints one line per
event instead, because a redrawn table there is only noise.
"""
from __future__ import annotations

import time

from vitdeploy.matrix.plan import Cell, Plan

STATES = ("pending", "running", "done", "failed")


class Board:
    def __init__(self, plan: Plan, cells: list[Cell], prepares: list[str], *, label: str):
        from vitdeploy.console import console

        self.console = console
        self.label = label
        self.started_at = time.time()
        self.state: dict[str, str] = {c.id: "pending" for c in cells}
        self.where: dict[str, str] = {}
        self.device_of = {c.id: c.device_type.name for c in cells}
        self.prep_state: dict[str, str] = {p: "pending" for p in prepares}
        self.total = len(cells)
        self.attempts: dict[str, int] = {}  # started events per cell or prepare: more than one is a retry
        self.live = None

    # -- events
    def prepare_started(self, pid: str, host: str | None = None) -> None:
        self.attempts[pid] = self.attempts.get(pid, 0) + 1
        if self.prep_state.get(pid) == "running":
            self._line(f"[yellow]↻[/] prepare {pid} restarted" + (f" on {host}" if host else "") + " (retry)")
        self.prep_state[pid] = "running"
        self._refresh()

    def prepare_finished(self, pid: str, rec: dict) -> None:
        ok = rec.get("status") == "done"
        self.prep_state[pid] = "done" if ok else "failed"
        where = (rec.get("node") or {}).get("hostname")
        mark = "[green]✔[/]" if ok else "[red]✘[/]"
        self._line(f"{mark} prepare {pid}" + (f" on {where}" if where else "") +
                   f"  [dim]{rec.get('seconds', 0):.1f} s[/]" + ("" if ok else f"  {rec.get('reason')}"))

    def started(self, cid: str, host: str | None = None) -> None:
        self.attempts[cid] = self.attempts.get(cid, 0) + 1
        if self.state.get(cid) == "running":
            self._line(f"[yellow]↻[/] {cid} restarted" + (f" on {host}" if host else "") + " (retry)")
        self.state[cid] = "running"
        if host:
            self.where[cid] = host
        self._refresh()

    def finished(self, cid: str, rec: dict) -> None:
        ok = rec.get("status") in ("done", "resumed")
        self.state[cid] = "done" if ok else "failed"
        host = (rec.get("node") or {}).get("hostname") or self.where.get(cid)
        n = sum(1 for s in self.state.values() if s in ("done", "failed"))
        mark = "[green]✔[/]" if ok else "[red]✘[/]"
        tail = "" if ok else f"  {rec.get('status')}: {rec.get('reason')}"
        secs = f"  [dim]{rec['seconds']:.1f} s[/]" if rec.get("seconds") is not None else ""
        self._line(f"{mark} [{n}/{self.total}] {cid}" + (f" on {host}" if host else "") + secs + tail)

    # -- drawing
    def table(self):
        from rich import box
        from rich.table import Table

        t = Table(box=box.SIMPLE_HEAD, title=f"vitdeploy matrix ({self.label}, {time.time() - self.started_at:.0f} s)",
                  title_justify="left", padding=(0, 1))
        t.add_column("device type")
        for s in STATES:
            t.add_column(s, justify="right")
        t.add_column("running now", overflow="fold")
        if self.prep_state:
            counts = {s: sum(1 for v in self.prep_state.values() if v == s) for s in STATES}
            t.add_row("[dim]prepare[/]", *(str(counts[s]) for s in STATES),
                      ", ".join(p for p, v in self.prep_state.items() if v == "running"))
        for dev in dict.fromkeys(self.device_of.values()):
            ids = [c for c, d in self.device_of.items() if d == dev]
            counts = {s: sum(1 for c in ids if self.state[c] == s) for s in STATES}
            running = [c.split("@")[0] + (f" ({self.where[c]})" if c in self.where else "")
                       for c in ids if self.state[c] == "running"]
            t.add_row(dev, *(str(counts[s]) if s != "failed" or not counts[s] else f"[red]{counts[s]}[/]" for s in STATES),
                      ", ".join(running))
        return t

    def __enter__(self):
        if self.console.is_terminal:
            from rich.live import Live

            self.live = Live(self.table(), console=self.console, refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live is not None:
            self.live.update(self.table())
            self.live.__exit__(*exc)
            self.live = None

    def _refresh(self) -> None:
        if self.live is not None:
            self.live.update(self.table())

    def _line(self, text: str) -> None:
        self.console.print(text)  # above the live table on a terminal, one log line elsewhere
        self._refresh()
