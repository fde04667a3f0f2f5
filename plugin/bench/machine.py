"""What the benchmarks ran on, and what else was running: CPUs, memory, load, busy processes.

Numbers from a 2-core machine shared with other jobs only mean something next to the load they
met, so every bench JSON carries :func:`describe_machine` and a :class:`LoadMonitor` summary.
"""

from __future__ import annotations

import os
import platform
import subprocess
import threading
import time
from pathlib import Path
from typing import Any


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def memory_gib() -> dict[str, float]:
    values: dict[str, float] = {}
    for line in _read("/proc/meminfo").splitlines():
        name, _, rest = line.partition(":")
        if name in ("MemTotal", "MemAvailable"):
            values[name] = round(int(rest.split()[0]) / 1024**2, 1)
    return {"total": values.get("MemTotal", 0.0), "available": values.get("MemAvailable", 0.0)}


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def busy_processes(limit: int = 8) -> list[dict[str, Any]]:
    """The processes using the most CPU now (``ps``), to say what else was running."""
    try:
        out = subprocess.run(
            ["ps", "-eo", "pid,pcpu,etimes,comm", "--sort=-pcpu", "--no-headers"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = []
    for line in out.splitlines()[:limit]:
        parts = line.split(None, 3)
        if len(parts) == 4:
            rows.append({"pid": int(parts[0]), "cpu_percent": float(parts[1]), "command": parts[3]})
    return rows


def describe_machine() -> dict[str, Any]:
    """CPU model and count, memory, OS, Python, and the load when this was called."""
    return {
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_gib": memory_gib(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average": [round(v, 2) for v in load_average()],
    }


def _cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies over all CPUs from /proc/stat."""
    fields = _read("/proc/stat").splitlines()[0].split()[1:] if _read("/proc/stat") else []
    values = [float(v) for v in fields]
    if len(values) < 5:
        return 0.0, 0.0
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


class LoadMonitor:
    """Samples the 1-minute load average every ``interval_s`` and the machine's CPU use over
    the whole run, in a daemon thread. Use as a context manager; then :meth:`summary`."""

    def __init__(self, interval_s: float = 2.0) -> None:
        self.interval_s = interval_s
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load-monitor", daemon=True)
        self._cpu_start = (0.0, 0.0)
        self._cpu_end = (0.0, 0.0)
        self.started_at = 0.0
        self.seconds = 0.0
        self.busy_at_start: list[dict[str, Any]] = []

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.samples.append(load_average()[0])

    def __enter__(self) -> LoadMonitor:
        self.busy_at_start = busy_processes()
        self._cpu_start = _cpu_times()
        self.started_at = time.perf_counter()
        self.samples.append(load_average()[0])
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.seconds = time.perf_counter() - self.started_at
        self._cpu_end = _cpu_times()

    def summary(self) -> dict[str, Any]:
        busy = self._cpu_end[0] - self._cpu_start[0]
        total = self._cpu_end[1] - self._cpu_start[1]
        samples = self.samples or [0.0]
        return {
            "seconds": round(self.seconds, 1),
            "load_1m_min": round(min(samples), 2),
            "load_1m_mean": round(sum(samples) / len(samples), 2),
            "load_1m_max": round(max(samples), 2),
            "cpu_busy_percent": round(100 * busy / total, 1) if total else None,
            "busy_processes_at_start": self.busy_at_start,
        }


def process_cpu_seconds(pid: int) -> float | None:
    """User plus system CPU seconds of ``pid`` so far, all its threads (None: it is gone)."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    # Fields after the command name, which may hold spaces: utime and stime are the 12th and
    # 13th of them, in clock ticks.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu_percent(pids: dict[str, int], seconds: float) -> dict[str, float | None]:
    """Each named process's CPU use over the next ``seconds``, in percent of one CPU (None: it
    exited meanwhile), plus their ``total``; the caller keeps them idle meanwhile."""
    before = {name: process_cpu_seconds(pid) for name, pid in pids.items()}
    started = time.perf_counter()
    time.sleep(seconds)
    elapsed = time.perf_counter() - started
    out: dict[str, float | None] = {}
    for name, pid in pids.items():
        first, last = before[name], process_cpu_seconds(pid)
        out[name] = (
            None if first is None or last is None else round(100 * (last - first) / elapsed, 2)
        )
    out["total"] = round(sum(v for v in out.values() if v is not None), 2)
    return out
