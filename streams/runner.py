"""Run the Faust worker: ``explore worker`` and ``python -m streams`` land here.

The worker itself is assembled by :func:`plugin.wiring.build_worker`."""

from __future__ import annotations

import errno
import fcntl
import gc
import logging
import os
from pathlib import Path
from typing import IO, Any

import faust

from plugin.observability.metrics import WorkerMetrics
from plugin.settings import Settings
from plugin.streaming.generation import EXIT_STATE_LOST, StateLost
from plugin.wiring import build_worker, claim_generation
from streams.app import build_app
from streams.logs import configure_logging

log = logging.getLogger(__name__)

# Held for the process's life: the open stats lock (a closed file would release it).
_STATS_LOCK: list[IO[str]] = []


def stats_path_for_this_worker(default: Path) -> Path:
    """``default`` when no other live worker writes it, else a file named after this pid.

    Several workers on one host must not overwrite one summary. The first holds an advisory
    lock on ``<default>.lock`` for its life (released by the kernel even on SIGKILL), so
    ``explore stack status``, which reads ``default``, finds a live worker's numbers; each
    other worker writes ``<stem>-<pid>.json`` beside it and names it in its start-up line.
    """
    default.parent.mkdir(parents=True, exist_ok=True)
    lock = default.with_name(default.name + ".lock").open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        return default.with_name(f"{default.stem}-{os.getpid()}{default.suffix}")
    # The holder's pid, so that a parent (plugin.localstack.worker) knows whose file it is.
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()
    _STATS_LOCK.append(lock)
    return default


def serve_metrics(metrics: WorkerMetrics, host: str, port: int) -> int:
    """Serve ``/metrics`` on ``port``, or on a free port the system picks when another
    process (a second worker on this host) holds it; the port actually bound."""
    server: Any
    try:
        server = metrics.serve(host, port)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        server = metrics.serve(host, 0)
        log.warning(
            "metrics port taken, serving on a free one",
            extra={"wanted": port, "port": server.server_port},
        )
    return int(server.server_port)


def run_worker(settings: Settings, loglevel: int = logging.INFO) -> None:
    """Run the Faust worker in the foreground until SIGINT/SIGTERM."""
    configure_logging(settings.worker.log_format, loglevel)
    metrics = WorkerMetrics()
    try:
        # Before anything is written: a store that lost the state the group's offsets stand
        # for must be rebuilt, not written on (plugin.streaming.generation).
        generation = claim_generation(settings)
    except StateLost as exc:
        log.critical("%s", exc, extra={"exit_status": EXIT_STATE_LOST})
        logging.shutdown()
        raise SystemExit(EXIT_STATE_LOST) from None
    worker = build_worker(settings, metrics, generation)
    config = settings.worker
    port = (
        serve_metrics(metrics, config.metrics_host, config.metrics_port)
        if config.metrics_port
        else 0
    )
    stats_path = stats_path_for_this_worker(settings.worker_stats_path)
    log.info(
        "worker starting",
        extra={
            "bootstrap_servers": settings.kafka.bootstrap_servers,
            "events_topic": settings.kafka.events_topic,
            "group_id": settings.kafka.group_id,
            "planner": worker.processor.planner.model_version,
            "plan_cache": worker.cache is not None,
            "generation": generation.marker.key if generation is not None else None,
            "metrics": f"{config.metrics_host}:{port}" if port else None,
            "stats": str(stats_path),
            "pid": os.getpid(),
        },
    )
    app = build_app(settings, worker, stats_path)
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
