"""What the machine was doing while a batch was timed: load, CPU steal, clocks, other work.

`environment.py` records what the machine *is* (device, versions); this module records what it
was *doing* during each measurement, because load that changes between two runs shifts the
whole run, which no statistic over one run's samples can see. Every bench result (schema /3)
carries one record per batch:

    {"wall_s": 3.1,
     "load_avg": {"start": [1m, 5m, 15m], "end": [1m, 5m, 15m]},   os.getloadavg()
     "cpus": 2,                       CPUs /proc/stat counts
     "busy_share": 0.97,              share of all CPUs' time spent busy (all processes)
     "own_share": 0.49,               ... of it by this process (its threads, user + system)
     "others_share": 0.48,            busy_share - own_share: other work competing with the bench
     "steal_share": 0.004,            time the hypervisor gave to other guests
     "throttled_share": 0.0,          cgroup CPU-quota throttling (containers with --cpus), if readable
     "cpu_mhz": {"start", "end", "source"},   scaling_cur_freq, else /proc/cpuinfo (a VM's nominal MHz)
     "gpu_sm_mhz": {"start", "end"}}  CUDA runs: the SM clock (nvidia-smi), if readable

Every probe is best effort (Linux /proc and /sys): a figure that cannot be read is left out,
never guessed. `judge` turns two records into what `compare` may still conclude.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

# A run is "quiet" when other work used at most this share of all CPUs, the hypervisor stole at
# most STEAL_MAX and no cgroup quota throttled it. Clocks that differ by more than FREQ_TOL make
# the slower side's figures unfair to it.
OTHERS_QUIET = 0.05
STEAL_MAX = 0.02
THROTTLE_MAX = 0.01
FREQ_TOL = 0.03


def _read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _cpu_jiffies() -> tuple[int, int, int, int] | None:
    """(total, busy, steal, cpus) from /proc/stat's aggregate line, in clock ticks."""
    text = _read("/proc/stat")
    if not text:
        return None
    lines = text.splitlines()
    fields = lines[0].split()
    if not fields or fields[0] != "cpu":
        return None
    v = [int(x) for x in fields[1:]] + [0] * 10
    user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
    total = user + nice + system + idle + iowait + irq + softirq + steal  # guest time is inside user
    busy = user + nice + system + irq + softirq
    cpus = sum(1 for line in lines[1:] if line.startswith("cpu") and line[3:4].isdigit())
    return total, busy, steal, cpus


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def _throttled_us() -> int | None:
    """cgroup v2 (or v1) CPU-quota throttling so far, in microseconds."""
    for path, key, scale in (("/sys/fs/cgroup/cpu.stat", "throttled_usec", 1),
                             ("/sys/fs/cgroup/cpu/cpu.stat", "throttled_time", 1e-3)):
        text = _read(path)
        if text:
            for line in text.splitlines():
                k, _, val = line.partition(" ")
                if k == key and val.strip().isdigit():
                    return int(int(val) * scale)
    return None


def _cpu_mhz() -> tuple[float, str] | None:
    """Mean current clock over the CPUs: cpufreq where the kernel exposes it, else /proc/cpuinfo."""
    freqs = []
    for p in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/scaling_cur_freq"):
        text = _read(p)
        if text and text.strip().isdigit():
            freqs.append(int(text) / 1000.0)
    if freqs:
        return sum(freqs) / len(freqs), "scaling_cur_freq"
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.lower().startswith("cpu mhz"):
            try:
                freqs.append(float(line.split(":", 1)[1]))
            except ValueError:
                pass
    if freqs:
        return sum(freqs) / len(freqs), "/proc/cpuinfo"
    return None


def _gpu_sm_mhz() -> float | None:
    from vitdeploy.machine import run as _run

    out = _run(["nvidia-smi", "--id=0", "--query-gpu=clocks.sm", "--format=csv,noheader,nounits"], timeout=3.0)
    try:
        return float(out.splitlines()[0]) if out else None
    except (ValueError, IndexError):
        return None


@dataclass
class Snapshot:
    wall: float
    own_cpu_s: float
    load: list[float] | None
    jiffies: tuple[int, int, int, int] | None
    throttled_us: int | None
    mhz: tuple[float, str] | None
    gpu_mhz: float | None


def snapshot(device: str = "cpu") -> Snapshot:
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return Snapshot(time.perf_counter(), _own_cpu_s(), load, _cpu_jiffies(), _throttled_us(), _cpu_mhz(),
                    _gpu_sm_mhz() if device == "cuda" else None)


def record(start: Snapshot, end: Snapshot) -> dict:
    """The conditions record of the interval between two snapshots (see the module docstring)."""
    wall = max(end.wall - start.wall, 1e-9)
    out: dict = {"wall_s": round(wall, 3)}
    if start.load and end.load:
        out["load_avg"] = {"start": start.load, "end": end.load}
    if start.jiffies and end.jiffies:
        total = end.jiffies[0] - start.jiffies[0]
        cpus = end.jiffies[3] or os.cpu_count() or 1
        out["cpus"] = cpus
        if total > 0:
            busy = (end.jiffies[1] - start.jiffies[1]) / total
            steal = (end.jiffies[2] - start.jiffies[2]) / total
            own = (end.own_cpu_s - start.own_cpu_s) * os.sysconf("SC_CLK_TCK") / total
            own = min(own, busy) if busy > 0 else own
            out.update(busy_share=round(busy, 4), own_share=round(own, 4),
                       others_share=round(max(0.0, busy - own), 4), steal_share=round(steal, 4))
    if start.throttled_us is not None and end.throttled_us is not None:
        out["throttled_share"] = round((end.throttled_us - start.throttled_us) / 1e6 / wall, 4)
    if start.mhz and end.mhz:
        out["cpu_mhz"] = {"start": round(start.mhz[0], 1), "end": round(end.mhz[0], 1), "source": end.mhz[1]}
    if start.gpu_mhz is not None and end.gpu_mhz is not None:
        out["gpu_sm_mhz"] = {"start": start.gpu_mhz, "end": end.gpu_mhz}
    return out


class Probe:
    """`with Probe(device) as p: ...` then `p.record`: the conditions of what ran inside."""

    def __init__(self, device: str = "cpu"):
        self.device = device
        self.record: dict | None = None

    def __enter__(self):
        self.start = snapshot(self.device)
        return self

    def __exit__(self, *exc):
        self.record = record(self.start, snapshot(self.device))
        return False


def merge(records: list[dict]) -> dict | None:
    """One record for several intervals (an interleaved session's blocks, a run's batches): shares
    weighted by wall time, the first start and last end of load and clocks."""
    records = [r for r in records if r]
    if not records:
        return None
    wall = sum(r.get("wall_s", 0.0) for r in records) or 1e-9
    out: dict = {"wall_s": round(wall, 3)}
    for key in ("busy_share", "own_share", "others_share", "steal_share", "throttled_share"):
        vals = [(r[key], r.get("wall_s", 0.0)) for r in records if key in r]
        if vals:
            out[key] = round(sum(v * w for v, w in vals) / (sum(w for _, w in vals) or 1e-9), 4)
    for key in ("cpus",):
        if key in records[-1]:
            out[key] = records[-1][key]
    for key in ("load_avg", "cpu_mhz", "gpu_sm_mhz"):
        have = [r[key] for r in records if key in r]
        if have:
            out[key] = {**have[0], "end": have[-1]["end"]}
    return out


def mhz(rec: dict, key: str = "cpu_mhz") -> float | None:
    c = rec.get(key)
    return (c["start"] + c["end"]) / 2 if c else None


def describe(rec: dict | None) -> str:
    """'load 2.1-3.4, others 31% of 2 CPUs, steal 0.4%, 2445 MHz' (what was recorded)."""
    if not rec:
        return "conditions not recorded"
    parts = []
    if "load_avg" in rec:
        a, b = rec["load_avg"]["start"][0], rec["load_avg"]["end"][0]
        parts.append(f"load {min(a, b):.1f}-{max(a, b):.1f}" if abs(a - b) >= 0.05 else f"load {a:.1f}")
    if "others_share" in rec:
        parts.append(f"other work {rec['others_share']:.0%} of {rec.get('cpus', '?')} CPUs")
    if "steal_share" in rec:
        parts.append(f"steal {rec['steal_share']:.1%}")
    if rec.get("throttled_share"):
        parts.append(f"cgroup throttled {rec['throttled_share']:.1%}")
    if "cpu_mhz" in rec:
        parts.append(f"CPU {mhz(rec):.0f} MHz")
    if "gpu_sm_mhz" in rec:
        parts.append(f"GPU SM {mhz(rec, 'gpu_sm_mhz'):.0f} MHz")
    return ", ".join(parts) or "conditions not recorded"


def disturbances(rec: dict, device: str = "cpu") -> list[str]:
    """What made this interval not quiet, in words ([] when it was quiet or nothing was recorded)."""
    out = []
    if device != "cuda" and rec.get("others_share", 0.0) > OTHERS_QUIET:
        out.append(f"other work used {rec['others_share']:.0%} of the {rec.get('cpus', '?')} CPUs")
    if rec.get("steal_share", 0.0) > STEAL_MAX:
        out.append(f"the hypervisor stole {rec['steal_share']:.1%} of the CPU time")
    if rec.get("throttled_share", 0.0) > THROTTLE_MAX:
        out.append(f"the cgroup CPU quota throttled it {rec['throttled_share']:.1%} of the time")
    return out


@dataclass
class Judgement:
    """What two separate runs' conditions still allow `compare` to conclude."""

    untrusted: frozenset  # verdicts ("ok", "regression") the conditions could have produced by themselves
    reason: str = ""
    recorded: bool = True


def judge(base: dict | None, cand: dict | None, device: str = "cpu") -> Judgement:
    """Which verdicts two runs' conditions leave unsupported.

    Other work, steal and throttling only ever slow a run down, and a lower clock slows it too.
    So a disturbed *candidate* can fake a regression (a "regression" is not trusted) and a
    disturbed *baseline* can hide one (an "ok" is not trusted); a verdict the disturbance
    could not have produced stands. Load is not stationary (it moves within and between runs),
    so equal disturbance on both sides does not cancel: both verdicts are then untrusted.
    """
    if not base or not cand:
        return Judgement(frozenset(), "", recorded=False)
    untrusted: set[str] = set()
    why = []
    for side, rec, verdict in (("baseline", base, "ok"), ("candidate", cand, "regression")):
        d = disturbances(rec, device)
        if d:
            untrusted.add(verdict)
            why.append(f"{side}: {'; '.join(d)}")
    key = "gpu_sm_mhz" if device == "cuda" else "cpu_mhz"
    fb, fc = mhz(base, key), mhz(cand, key)
    if fb and fc and abs(fc - fb) / max(fb, fc) > FREQ_TOL:
        slower = "candidate" if fc < fb else "baseline"
        untrusted.add("regression" if slower == "candidate" else "ok")
        why.append(f"{'GPU SM' if device == 'cuda' else 'CPU'} clock {fb:.0f} MHz in the baseline, {fc:.0f} MHz in the candidate")
    return Judgement(frozenset(untrusted), "; ".join(why))
