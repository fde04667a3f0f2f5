"""Event-to-plan latency through the whole path, at fixed offered rates, and the drain rate of a
backlog: producer -> tansu -> the Faust worker (a child process, as ``explore worker`` runs it)
-> Feast on Redis and Triton.

The run
-------
1. A backlog of ``backlog`` events is produced before the worker starts; the worker then drains
   it as fast as it can (events/s through Kafka, from the worker's own summary).
2. For each offered rate, ``seconds`` worth of further events are produced at that rate, and the
   bench waits until the worker has committed them before the next rate.
3. Both topics are read back. An event that changed its user's K-cluster history must lead to
   a plan: its latency is the ``written_at`` of the first plan update for that user triggered
   at or after its offset, minus the event's Kafka timestamp (set by the producer when it
   sent the event). ``written_at`` is taken after the Feast writes returned, so the plan was
   visible to a ranker by then. An event whose plan never came is counted as ``unplanned``.

All events are MovieLens-100K in the ``interleaved`` order (``plugin.bench.workload``), each
phase a fresh slice, so users keep moving and most events replan.
"""

from __future__ import annotations

import bisect
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from plugin.adapters.feast_store import repo_config
from plugin.adapters.kafka_io import (
    PlanUpdate,
    produce,
    read_topic,
    topic_partitions,
    wait_for_commits,
)
from plugin.bench.stack import BenchStack
from plugin.bench.workload import build_workload, history_changes, messages
from plugin.core.events import WatchEvent
from plugin.localstack import create_topics
from plugin.localstack.worker import WorkerProcess
from plugin.settings import Settings

RATES = (250.0, 500.0, 1000.0, 2000.0)


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted values (None when empty)."""
    if not ordered:
        return None
    rank = math.ceil(q * len(ordered))
    return ordered[min(len(ordered), max(1, rank)) - 1]


@dataclass
class Phase:
    """One offered rate (``rate`` None: the backlog)."""

    name: str
    rate: float | None
    events: int
    produce_seconds: float = 0.0
    drain_seconds: float = 0.0
    end_offsets: dict[int, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    unplanned: int = 0
    worker: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        ordered = sorted(self.latencies_ms)
        row: dict[str, Any] = {
            "phase": self.name,
            "offered_per_s": self.rate,
            "events": self.events,
            "produced_per_s": round(self.events / self.produce_seconds, 1)
            if self.produce_seconds
            else None,
            "planned_events": len(ordered),
            "unplanned_events": self.unplanned,
        }
        for q in (0.5, 0.95, 0.99):
            value = percentile(ordered, q)
            row[f"p{round(q * 100)}_ms"] = round(value, 1) if value is not None else None
        row["max_ms"] = round(ordered[-1], 1) if ordered else None
        if self.worker:
            row["worker"] = self.worker
        return row


def latency_bench(
    stack: BenchStack,
    events: Sequence[WatchEvent],
    *,
    rates: Sequence[float] = RATES,
    seconds: float = 10.0,
    backlog: int = 20_000,
    batch_within_s: float | None = None,
    feedback: bool = False,
    on_phase: Callable[[Phase], None] | None = None,
) -> dict[str, Any]:
    """Run the phases above; the per-phase rows, the worker's settings and summary.

    ``batch_within_s`` overrides ``worker.batch_within_s``; ``feedback`` turns the worker's
    feedback loop on (off by default: it is not part of the event-to-plan path)."""
    settings = _own_topics(stack.arm("latency", feedback=feedback))
    if batch_within_s is not None:
        worker = settings.worker.model_copy(update={"batch_within_s": batch_within_s})
        settings = settings.model_copy(update={"worker": worker})
    plan = [Phase("backlog", None, backlog)] + [
        Phase(f"{rate:g}/s", rate, max(1, round(rate * seconds))) for rate in rates
    ]
    total = sum(phase.events for phase in plan)
    workload = build_workload(events, stack.workspace.catalog, "replans", "interleaved", total)
    if len(workload.events) < total:
        raise ValueError(f"the dataset has {len(workload.events):,} events, {total:,} needed")
    batches = []
    start = 0
    for phase in plan:
        batches.append(messages(workload.events[start : start + phase.events]))
        start += phase.events

    log_path = stack.run_dir / "latency" / "worker.log"
    log_path.unlink(missing_ok=True)
    timeout = max(120.0, 4 * total / 1000)
    with WorkerProcess(settings, log_path) as child:
        for index, phase in enumerate(plan):
            if index == 0 and phase.events:
                report = produce(settings, batches[0])  # before the worker is ready: a backlog
                child.wait_assigned(timeout_s=180)
            elif index == 0:
                child.wait_assigned(timeout_s=180)
                continue
            else:
                report = produce(settings, batches[index], rate=phase.rate)
            phase.produce_seconds = report.seconds
            phase.end_offsets = dict(report.end_offsets)
            began = time.perf_counter()
            wait_for_commits(
                settings,
                report.end_offsets,
                timeout_s=timeout,
                poll_s=0.2,
                alive=lambda: child.alive,
            )
            phase.drain_seconds = time.perf_counter() - began
            if index == 0:
                time.sleep(1.2)  # the worker refreshes its summary every second
                phase.worker = _backlog_figures(child.stats())
            if on_phase is not None:
                on_phase(phase)
        time.sleep(1.2)
        summary = child.stats()
        code = child.stop()
    _attach_latencies(stack, settings, workload.events, plan)
    return {
        "settings": {
            "batch_size": settings.worker.batch_size,
            "batch_within_s": settings.worker.batch_within_s,
            "fetch_max_wait_ms": settings.worker.fetch_max_wait_ms,
            "partitions": settings.kafka.partitions,
            "seconds_per_rate": seconds,
            "planner": "triton behind the Redis plan cache (empty at start)",
            "feedback_loop": feedback,
            "online_store": "redis, " + type(_online_store(settings)).__name__,
        },
        "phases": [phase.as_dict() for phase in plan],
        "worker_summary": {
            key: summary.get(key)
            for key in ("events", "batches", "replans", "plans", "plan_cache", "event_to_plan")
        },
        "worker_exit_code": code,
    }


_runs = itertools.count(1)


def _own_topics(settings: Settings) -> Settings:
    """Fresh topics and consumer group for one run: the latencies are read back from the
    topics, which must hold this run's messages only."""
    kafka = settings.kafka
    tag = f"bench{next(_runs)}"
    renamed: dict[str, Any] = {
        name: f"{getattr(kafka, name)}-{tag}"
        for name in type(kafka).model_fields
        if name.endswith("_topic")
    }
    renamed["group_id"] = f"{kafka.group_id}-{tag}"
    own = settings.model_copy(update={"kafka": kafka.model_copy(update=renamed)})
    create_topics(own.kafka.bootstrap_servers, topic_partitions(own.kafka))
    return own


def _online_store(settings: Any) -> Any:
    return repo_config(settings).online_store


def _backlog_figures(stats: dict[str, Any]) -> dict[str, Any]:
    return {
        key: stats.get(key)
        for key in ("events", "batches", "events_per_second", "events_per_busy_second")
    }


def _attach_latencies(
    stack: BenchStack, settings: Any, sent: Sequence[WatchEvent], plan: list[Phase]
) -> None:
    """Per phase, the latency of every history-changing event to its plan (module docstring)."""
    budget = 60.0 + len(sent) / 1000
    consumed = read_topic(settings, settings.kafka.events_topic, idle_s=1.5, timeout_s=budget)
    updates = [
        PlanUpdate.model_validate_json(r.value)
        for r in read_topic(settings, settings.kafka.plans_topic, idle_s=1.5, timeout_s=budget)
    ]
    triggers: dict[tuple[int, str], list[tuple[int, float]]] = {}
    for update in updates:
        if update.trigger is None or update.trigger.key is None:
            continue
        place = (update.trigger.partition, update.trigger.key)
        triggers.setdefault(place, []).append(
            (update.trigger.offset, update.written_at.timestamp())
        )
    for found in triggers.values():
        found.sort()
    # Per partition, offsets are the produce order; a user's events stay in one partition.
    ordered = sorted(consumed, key=lambda r: (r.partition, r.offset))
    by_value = {m: e for e, m in zip(sent, (v for _, v in messages(sent)), strict=True)}
    in_order = [by_value[r.value] for r in ordered if r.value in by_value]
    k, window = settings.sequence.history_length, settings.sequence.novelty_window
    changed = history_changes(in_order, stack.workspace.catalog, k, window)
    records = [r for r in ordered if r.value in by_value]
    bounds = [phase.end_offsets for phase in plan]
    for record, moved in zip(records, changed, strict=True):
        if not moved:
            continue
        phase = plan[_phase_of(record.partition, record.offset, bounds)]
        found = triggers.get((record.partition, record.key.decode() if record.key else ""), [])
        at = bisect.bisect_left(found, (record.offset, -math.inf))
        if at == len(found):
            phase.unplanned += 1
            continue
        phase.latencies_ms.append((found[at][1] - record.timestamp_ms / 1000) * 1000)


def _phase_of(partition: int, offset: int, bounds: Sequence[dict[int, int]]) -> int:
    for index, ends in enumerate(bounds):
        if offset < ends.get(partition, 0):
            return index
    return len(bounds) - 1
