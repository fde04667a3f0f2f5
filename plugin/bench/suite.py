"""One benchmark run: start the servers once, run the chosen parts, return one JSON document.

``explore bench all`` runs every part but ``fetch-wait``; ``explore bench
worker|latency|fetch-wait|feast|sweep|profile`` run one. Sizes and times are in
:class:`BenchOptions`; the defaults keep ``bench all`` to a few minutes on a 2-CPU machine.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from plugin.bench.feast import feast_bench
from plugin.bench.fetch_wait import WAITS_MS, fetch_wait_sweep
from plugin.bench.latency import latency_bench
from plugin.bench.machine import LoadMonitor, describe_machine
from plugin.bench.planner import planner_grid
from plugin.bench.profile import profile_worker
from plugin.bench.stack import BenchStack, bench_stack
from plugin.bench.sweep import sweep, sweep_rows
from plugin.bench.worker import ratios as worker_ratios
from plugin.bench.worker import worker_bench
from plugin.core.events import WatchEvent
from plugin.data.workspace import open_workspace
from plugin.settings import Settings

Echo = Callable[[str], None]
PARTS = ("worker", "latency", "fetch-wait", "planner", "feast", "sweep", "profile")


@dataclass
class BenchOptions:
    """Sizes and times of every part (see each ``plugin.bench`` module)."""

    events: int = 20_000  # timed events per workload (worker, sweep)
    orders: tuple[str, ...] = ("interleaved", "time")
    naive_seconds: float = 8.0
    batched_seconds: float = 30.0
    rates: tuple[float, ...] = (250.0, 500.0, 1000.0, 2000.0)
    rate_seconds: float = 10.0
    backlog: int = 20_000
    batch_within_s: float | None = None
    fetch_max_wait_ms: int | None = None  # overrides worker.fetch_max_wait_ms (latency)
    feedback_rate: float | None = 1000.0  # also one rate with the feedback loop on (None: no)
    warm_table: bool = False  # latency: the plan table filled with every history first
    fetch_waits: tuple[int, ...] = WAITS_MS  # the fetch-wait sweep (plugin.bench.fetch_wait)
    idle_seconds: float = 20.0
    repeats: int = 1
    feast_sizes: tuple[int, ...] = (1, 10, 100, 500, 2000)
    feast_seconds: float = 1.5
    feast_cluster_nodes: int = 3  # the fast store on a local Redis Cluster too (0: skip)
    sweep_sizes: tuple[int, ...] = (1, 10, 50, 100, 250, 500, 1000, 2000)
    sweep_seconds: float = 4.0
    planner_seconds: float = 2.0
    profile_events: int = 10_000


def run_suite(
    settings: Settings,
    parts: Sequence[str],
    options: BenchOptions,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run ``parts`` against one private stack; the document ``plugin.bench.report`` renders."""
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown bench part(s): {', '.join(sorted(unknown))}")
    doc: dict[str, Any] = {
        "meta": {
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "parts": list(parts),
            "machine": describe_machine(),
            "options": asdict(options),
        }
    }
    workspace = open_workspace(settings)
    events = list(workspace.dataset.events())
    # As the worker does after start-up (streams/runner.py): keep the long-lived objects, the
    # dataset's 100k events here, out of the collector's full scans, which would stall the
    # in-process paths for a quarter of a second at a time.
    gc.collect()
    gc.freeze()
    needs_triton = bool(set(parts) - {"feast"})
    try:
        with (
            LoadMonitor() as monitor,
            bench_stack(
                settings,
                workspace,
                kafka=bool({"latency", "fetch-wait"} & set(parts)),
                triton=needs_triton,
            ) as stack,
        ):
            doc["meta"]["startup"] = stack.startup
            doc["meta"]["model_version"] = stack.version
            doc["meta"]["dataset"] = workspace.dataset.name
            doc["meta"]["worker_batch_size"] = stack.settings.worker.batch_size
            echo(f"servers up: {stack.startup}")
            for part in PARTS:
                if part in parts:
                    echo(f"-- {part}")
                    _PARTS[part](stack, events, options, doc, echo)
    finally:
        gc.unfreeze()
    doc["meta"]["load"] = monitor.summary()
    return doc


def _worker(
    stack: BenchStack, events: list[WatchEvent], o: BenchOptions, doc: dict[str, Any], echo: Echo
) -> None:
    results = worker_bench(
        stack,
        events,
        orders=o.orders,  # type: ignore[arg-type]
        limit=o.events,
        naive_seconds=o.naive_seconds,
        batched_seconds=o.batched_seconds,
        on_result=lambda r: echo(
            f"  {r.workload:13} {r.order:11} {r.path:16} {r.events:6} events "
            f"{r.events_per_s:9,.0f}/s"
        ),
    )
    doc["worker"] = {
        "results": [r.as_dict() for r in results],
        "ratios": worker_ratios(results),
    }


def _latency(
    stack: BenchStack, events: list[WatchEvent], o: BenchOptions, doc: dict[str, Any], echo: Echo
) -> None:
    def show(phase: Any) -> None:
        echo(
            f"  {phase.name:8} {phase.events:6} events produced in {phase.produce_seconds:.1f} s, "
            f"committed {phase.drain_seconds:.1f} s later"
        )

    doc["latency"] = latency_bench(
        stack,
        events,
        rates=o.rates,
        seconds=o.rate_seconds,
        backlog=o.backlog,
        batch_within_s=o.batch_within_s,
        fetch_max_wait_ms=o.fetch_max_wait_ms,
        warm_table=o.warm_table,
        on_phase=show,
    )
    if o.feedback_rate:  # 0 or None: skip
        echo("  the same at one rate with the feedback loop on")
        doc["latency_feedback"] = latency_bench(
            stack,
            events,
            rates=(o.feedback_rate,),
            seconds=o.rate_seconds,
            backlog=0,
            batch_within_s=o.batch_within_s,
            fetch_max_wait_ms=o.fetch_max_wait_ms,
            feedback=True,
            warm_table=o.warm_table,
            on_phase=show,
        )


def _fetch_wait(
    stack: BenchStack, events: list[WatchEvent], o: BenchOptions, doc: dict[str, Any], echo: Echo
) -> None:
    def show(row: dict[str, Any]) -> None:
        rates = ", ".join(
            f"{r['offered_per_s']:g}/s p50 {r['p50_ms']} p99 {r['p99_ms']} ms" for r in row["rates"]
        )
        echo(
            f"  wait {row['fetch_max_wait_ms']:4} ms, feedback "
            f"{'on ' if row['feedback_loop'] else 'off'}: {rates}; idle CPU "
            f"{row['idle_cpu_percent'].get('total')}%"
        )

    doc["fetch_wait"] = fetch_wait_sweep(
        stack,
        events,
        waits_ms=o.fetch_waits,
        rates=o.rates,
        seconds=o.rate_seconds,
        idle_seconds=o.idle_seconds,
        repeats=o.repeats,
        warm_table=o.warm_table,
        on_row=show,
    )


def _planner(
    stack: BenchStack, events: list[WatchEvent], o: BenchOptions, doc: dict[str, Any], echo: Echo
) -> None:
    doc["planner"] = planner_grid(
        stack,
        seconds=o.planner_seconds,
        on_row=lambda r: echo(
            f"  {r['planner']:16} batch {r['batch']:3} x {r['concurrency']:2}: "
            f"{r['plans_per_s']:9,.0f} plans/s"
        ),
    )


def _feast(
    stack: BenchStack, events: list[WatchEvent], o: BenchOptions, doc: dict[str, Any], echo: Echo
) -> None:
    rows = feast_bench(
        stack,
        sizes=o.feast_sizes,
        seconds=o.feast_seconds,
        cluster_nodes=o.feast_cluster_nodes,
        on_row=lambda r: echo(
            f"  {r.store:12} {r.op:5} batch {r.batch:5}: {r.as_dict()['rows_per_s']:>10,.0f} rows/s"
        ),
    )
    doc["feast"] = [r.as_dict() for r in rows]


def _sweep(
    stack: BenchStack, events: list[WatchEvent], o: BenchOptions, doc: dict[str, Any], echo: Echo
) -> None:
    results = sweep(
        stack,
        events,
        sizes=o.sweep_sizes,
        limit=o.events,
        seconds=o.sweep_seconds,
        on_result=lambda r: echo(
            f"  batch {r.batch_size:5}: {r.events:6} events {r.events_per_s:9,.0f}/s"
        ),
    )
    doc["sweep"] = sweep_rows(results)


def _profile(
    stack: BenchStack, events: list[WatchEvent], o: BenchOptions, doc: dict[str, Any], echo: Echo
) -> None:
    doc["profile"] = []
    for path in ("batched-sdk", "batched"):
        for kind in ("replans", "sequence-only"):
            entry = profile_worker(stack, events, path=path, kind=kind, limit=o.profile_events)
            echo(
                f"  {path:12} {kind:13}: top area {entry['areas'][0]['area']} "
                f"({100 * entry['areas'][0]['share']:.0f}%)"
            )
            doc["profile"].append(entry)


_PARTS: dict[str, Callable[..., None]] = {
    "worker": _worker,
    "latency": _latency,
    "fetch-wait": _fetch_wait,
    "planner": _planner,
    "feast": _feast,
    "sweep": _sweep,
    "profile": _profile,
}
