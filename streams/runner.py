"""Assemble and run the worker: ``explore worker`` and ``python -m streams`` land here."""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from plugin.metrics import WorkerMetrics
from plugin.settings import PROJECT_ROOT, Settings
from streams.deadline import DeadlinePlanner
from streams.logs import configure_logging
from streams.worker import StreamWorker

log = logging.getLogger(__name__)


def build_worker(settings: Settings, metrics: WorkerMetrics | None = None) -> StreamWorker:
    """The batch logic over the configured planner (behind the plan cache and the replan
    deadline) and the Feast store, which it registers and fills with the cluster rows."""
    from plugin.adapters.feast_store import FeastStore
    from plugin.pipeline import BatchProcessor
    from plugin.wiring import build_planner, cached_planner, open_workspace

    metrics = metrics or WorkerMetrics()
    workspace = open_workspace(settings)
    planner = build_planner(settings, workspace)
    cached = cached_planner(settings, planner)
    deadline = DeadlinePlanner(cached or planner, settings.worker.plan_timeout_s, metrics)
    store = FeastStore(settings)
    store.apply()
    store.write_catalog(workspace.catalog)
    processor = BatchProcessor(workspace.catalog, deadline, store, settings)
    return StreamWorker(processor, workspace.catalog, settings, metrics, deadline, cached)


def run_worker(settings: Settings, loglevel: int = logging.INFO) -> None:
    """Run the Faust worker in the foreground until SIGINT/SIGTERM."""
    import faust

    from streams.app import build_app

    configure_logging(settings.worker.log_format, loglevel)
    metrics = WorkerMetrics()
    worker = build_worker(settings, metrics)
    config = settings.worker
    if config.metrics_port:
        metrics.serve(config.metrics_host, config.metrics_port)
    log.info(
        "worker starting",
        extra={
            "bootstrap_servers": settings.kafka.bootstrap_servers,
            "events_topic": settings.kafka.events_topic,
            "group_id": settings.kafka.group_id,
            "planner": worker.processor.planner.model_version,
            "plan_cache": worker.cache is not None,
            "metrics": f"{config.metrics_host}:{config.metrics_port}"
            if config.metrics_port
            else None,
        },
    )
    app = build_app(settings, worker)
    runner = faust.Worker(
        app,
        loglevel=loglevel,
        quiet=True,
        override_logging=False,
        redirect_stdouts=False,
    )
    # Start-up leaves about half a million long-lived objects (torch, Feast, Faust, the
    # catalog). A full collection scans them all: 250-450 ms on 2 busy CPUs, a stall of
    # every in-flight event. Frozen, they are never scanned again (docs/BENCHMARKS.md).
    gc.collect()
    gc.freeze()
    runner.execute_from_commandline()


def settings_environment(settings: Settings) -> dict[str, str]:
    """The settings tree as ``EXPLORE_*`` variables, so a child process reads the same tree.

    Secrets are included in clear (the child needs them): pass the result only to a child's
    environment, never to a log.
    """
    from pydantic import BaseModel, SecretStr

    def text(value: Any) -> str:
        if isinstance(value, SecretStr):
            return value.get_secret_value()
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    env: dict[str, str] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, BaseModel):
            for field in type(value).model_fields:
                inner = getattr(value, field)
                if inner is not None:
                    env[f"EXPLORE_{name.upper()}__{field.upper()}"] = text(inner)
        elif value is not None:
            env[f"EXPLORE_{name.upper()}"] = text(value)
    return env


class WorkerProcess:
    """``python -m streams`` as a child process with a given settings tree (tests, the demo).

    The child gets exactly ``settings`` (inherited ``EXPLORE_*`` variables are dropped), logs
    to ``log_path``, and writes its JSON summary to ``stats_path(settings)``.
    """

    def __init__(self, settings: Settings, log_path: Path) -> None:
        from streams.app import stats_path

        self.settings = settings
        self.log_path = log_path
        self.stats_file = stats_path(settings)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EXPLORE_")}
        env.update(settings_environment(self.settings))
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

    def stats(self) -> dict[str, Any]:
        """The child's latest JSON summary ({} before it wrote one)."""
        try:
            loaded: dict[str, Any] = json.loads(self.stats_file.read_text())
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
                raise RuntimeError(f"the worker exited; see {self.log_path}:\n{self.log_tail()}")
            time.sleep(0.2)
        raise TimeoutError(f"the worker joined no group in {timeout_s:.0f} s; see {self.log_path}")

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
