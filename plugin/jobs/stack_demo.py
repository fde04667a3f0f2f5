"""The whole path through real servers (``explore demo --stack``): a private stack, the Faust
worker as a child process, the dataset produced into Kafka with a few malformed messages
among it, and the embedded demo's report plus latency, cache hit rate and dead letters."""

from __future__ import annotations

import time
from itertools import islice
from typing import Any

from plugin.adapters.kafka_io import (
    DeadLetter,
    ProduceReport,
    event_messages,
    produce,
    read_topic,
    wait_for_commits,
)
from plugin.data.workspace import Workspace
from plugin.jobs import prerequisites
from plugin.jobs.lookup import lookup_plans, natural_order
from plugin.jobs.precompute import precompute_plans
from plugin.jobs.private_stack import PrivateStack, private_stack
from plugin.jobs.progress import say
from plugin.jobs.train import ensure_trained
from plugin.localstack import free_port
from plugin.localstack.worker import WorkerFailed, WorkerProcess
from plugin.settings import Settings
from plugin.wiring import online_store

# The worker's summary figures the demo reports, as the worker wrote them.
WORKER_FIGURES = (
    "events",
    "events_per_second",
    "users",
    "planned_users",
    "replans",
    "stale_events",
    "unknown_items",
    "seconds_by_step",
    "batches",
    "rejected",
    "replans_deferred",
    "event_to_plan",
    "event_to_state",
    "plan_cache",
)


def run_stack_demo(
    settings: Settings,
    limit: int | None = None,
    rate: float | None = None,
    malformed: int = 3,
    precompute_cache: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the dataset's first ``limit`` events (and ``malformed`` bad messages spread through
    them) through tansu, the worker, Feast on Redis and, with the triton planner, Triton;
    ``precompute_cache`` fills the plan cache first. Returns the summary."""
    kind = settings.planner.kind
    if kind == "triton":  # before the minute of training a version for it
        prerequisites.require_triton_install()
    settings = demo_settings(settings)
    workspace = prerequisites.workspace(settings, progress=progress)
    version = ensure_trained(settings, workspace, progress) if kind != "frequency" else None
    events = list(islice(workspace.dataset.events(), limit))
    messages = with_malformed(list(event_messages(events)), malformed)
    started = time.perf_counter()
    with private_stack(
        settings, "demo", kafka=True, triton=kind == "triton", version=version
    ) as stack:
        own = stack.settings
        say(describe(stack), progress)
        store = online_store(own, workspace.catalog)
        if precompute_cache and kind != "frequency":
            precompute_quietly(own, workspace, progress)
        stats, produced, code = stream(own, messages, rate, started, progress)
        letters = [
            DeadLetter.model_validate_json(r.value)
            for r in read_topic(own, own.kafka.dead_letter_topic, idle_s=0.5)
        ]
        rows = lookup_plans(store, sorted({e.user_id for e in events}, key=natural_order)[:5])
    return {
        "dataset": workspace.dataset.name,
        "catalog_version": workspace.catalog.version,
        "clusters": len(workspace.catalog),
        "planner": stats.get("planner"),
        "online_store": "redis (stack)",
        **{key: stats.get(key) for key in WORKER_FIGURES},
        "produce": produced.as_dict(),
        "dead_letters": [{"reason": d.reason, "offset": d.source.offset} for d in letters],
        "worker_exit_code": code,
        "sample_plans": rows,
    }


def demo_settings(settings: Settings) -> Settings:
    """The demo's own registry, worker summary and metrics port, on the Redis online store."""
    demo_dir = settings.var_dir / "demo-stack"
    feast = settings.feast.model_copy(
        update={"online_store": "redis", "registry_path": demo_dir / "registry.db"}
    )
    worker = settings.worker.model_copy(
        update={"metrics_port": free_port(), "stats_path": demo_dir / "worker-stats.json"}
    )
    return settings.model_copy(update={"feast": feast, "worker": worker})


def describe(stack: PrivateStack) -> str:
    """One line: where the demo's servers listen, and the version Triton serves."""
    own = stack.settings
    triton = f", triton grpc {own.triton.grpc_port} serving version {stack.version}"
    return f"stack: kafka {own.kafka.bootstrap_servers}, redis {own.redis.port}" + (
        triton if stack.version is not None else ""
    )


def with_malformed(
    messages: list[tuple[str | None, bytes]], count: int
) -> list[tuple[str | None, bytes]]:
    """``messages`` with ``count`` malformed ones spread through them: the worker must send
    each to the dead-letter topic and keep going."""
    samples: list[tuple[str | None, bytes]] = [
        ("1", b"{not json"),
        ("2", b'{"event_id": "x1", "user_id": "2", "item_id": "50", "event_time": 0}'),
        ("3", b'{"event_id": "x2", "user_id": "3", "item_id": "50", "event_time": 1,'
              b' "rating": "NaN"}'),
    ]  # fmt: skip
    bad = [samples[i % len(samples)] for i in range(count)]
    out = list(messages)
    for index, message in enumerate(bad):
        out.insert((index + 1) * len(out) // (len(bad) + 1), message)
    return out


def precompute_quietly(settings: Settings, workspace: Workspace, progress: bool) -> None:
    """Fill the plan cache with the planner the worker will use, before it starts."""
    planner = prerequisites.planner(settings, workspace)
    try:
        done = precompute_plans(settings, workspace, planner)  # type: ignore[arg-type]
    finally:
        close = getattr(planner, "close", None)  # the Triton planner holds a gRPC channel
        if callable(close):
            close()
    say(
        f"plan cache: {done.report.written:,} rankings precomputed in {done.report.seconds:.1f} s",
        progress,
    )


def stream(
    settings: Settings,
    messages: list[tuple[str | None, bytes]],
    rate: float | None,
    started: float,
    progress: bool,
) -> tuple[dict[str, Any], ProduceReport, int | None]:
    """The worker as a child process: wait for it to join its group, produce ``messages`` at
    ``rate``, wait for its commits, stop it. Its summary, what was produced, its exit status."""
    log_path = settings.worker_stats_path.parent / "worker.log"
    with WorkerProcess(settings, log_path) as child:
        child.wait_assigned(timeout_s=180)
        say(f"worker joined its group ({time.perf_counter() - started:.1f} s)", progress)
        produced = produce(settings, messages, rate=rate)
        say(
            f"produced {produced.events:,} messages at {produced.events_per_second:,.0f}/s; "
            "waiting for the worker's commits",
            progress,
        )
        try:
            wait_for_commits(
                settings, produced.end_offsets, timeout_s=600, alive=lambda: child.alive
            )
        except (RuntimeError, TimeoutError) as exc:  # the worker died or stalled
            raise WorkerFailed(f"{exc}; see {log_path}:\n{child.log_tail()}") from exc
        time.sleep(1.5)  # one more stats refresh
        code = child.stop()
        return child.stats(), produced, code
