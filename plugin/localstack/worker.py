"""The streaming worker as a child process: ``python -m streams`` with a given settings tree."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from plugin.localstack.process import ServerError
from plugin.settings import PROJECT_ROOT, Settings, settings_environment


def _held(stats_file: Path) -> bool:
    """Whether a live worker holds ``stats_file``'s lock (``streams.runner``)."""
    lock_path = stats_file.with_name(stats_file.name + ".lock")
    if not lock_path.exists():
        return False
    with lock_path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(lock, fcntl.LOCK_UN)
    return False


class WorkerFailed(ServerError):
    """The worker child exited or never joined its group: the message points at its log."""


class WorkerProcess:
    """``python -m streams`` as a child process with a given settings tree (tests, the demo).

    The child gets exactly ``settings`` (inherited ``EXPLORE_*`` variables are dropped), logs
    to ``log_path``, and writes its JSON summary to ``settings.worker_stats_path``, or beside it
    under its pid while another live worker holds that file (:attr:`own_stats_file`).
    """

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.stats_file = settings.worker_stats_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EXPLORE_")}
        env.update(settings_environment(self.settings))
        if not _held(self.stats_file):  # a live worker's summary stays; this child names its own
            self.stats_file.unlink(missing_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streams"],
                cwd=PROJECT_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def own_stats_file(self) -> Path:
        """Where this child writes its summary: ``settings.worker_stats_path``, or the file
        named after its pid when another live worker holds that one (``streams.runner``)."""
        if self.process is None:
            return self.stats_file
        named = self.stats_file.with_name(
            f"{self.stats_file.stem}-{self.process.pid}{self.stats_file.suffix}"
        )
        if named.exists():
            return named
        try:  # the holder of the shared file writes its pid into the lock
            holder = self.stats_file.with_name(self.stats_file.name + ".lock").read_text()
        except OSError:
            holder = ""
        return self.stats_file if holder.strip() == str(self.process.pid) else named

    def stats(self) -> dict[str, Any]:
        """The child's latest JSON summary ({} before it wrote one)."""
        try:
            loaded: dict[str, Any] = json.loads(self.own_stats_file.read_text())
        except (OSError, ValueError):
            return {}
        return loaded

    def wait_assigned(self, timeout_s: float = 60.0) -> list[str]:
        """Block until the worker owns partitions (it joined its group); their names."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assigned = self.stats().get("assigned")
            if assigned:
                return list(assigned)
            if not self.alive:
                raise WorkerFailed(f"the worker exited; see {self.log_path}:\n{self.log_tail()}")
            time.sleep(0.2)
        raise WorkerFailed(f"the worker joined no group in {timeout_s:.0f} s; see {self.log_path}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM (graceful: commits acked offsets), then SIGKILL; the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL at once: a crash, for at-least-once tests."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
