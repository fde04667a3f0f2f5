"""Run the Faust worker: ``explore worker`` and ``python -m streams`` land here.

The worker itself is assembled by :func:`plugin.wiring.build_worker`."""

from __future__ import annotations

import gc
import logging

import faust

from plugin.observability.metrics import WorkerMetrics
from plugin.settings import Settings
from plugin.wiring import build_worker
from streams.app import build_app
from streams.logs import configure_logging

log = logging.getLogger(__name__)


def run_worker(settings: Settings, loglevel: int = logging.INFO) -> None:
    """Run the Faust worker in the foreground until SIGINT/SIGTERM."""
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
