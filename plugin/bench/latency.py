"""Event-to-plan latency through the whole path, at fixed offered rates, and the drain rate of a
backlog: producer -> tansu -> the Faust worker (a child process, as ``explore worker`` runs it)
-> Feast on Redis and Triton.

The run
-------
1. A backlog of ``backlog`` events is produced before the worker starts; the worker then drains
   it as fast as it can (events/s through Kafka, from the worker's own summary).
2. For each offered rate, ``seconds`` worth of further events are produced at that rate, and the
   bench waits until the worker has committed them before the next rate.
3. When the worker deferred replans (``worker.plan_timeout_s``), the bench waits, bounded by
   ``owed_wait_s``, for its repair loop to make them (docs/ROBUSTNESS.md); then, with
   ``idle_seconds``, it samples the CPU use of the idle worker, tansu and redis-server (what a
   shorter ``worker.fetch_max_wait_ms`` costs when no events come).
4. Both topics are read back. An event that changed its user's K-cluster history must lead to
   a plan: its latency is the ``written_at`` of the first plan update for that user triggered
   at or after its offset, minus the event's Kafka timestamp (set by the producer when it
   sent the event). ``written_at`` is taken after the Feast writes returned, so the plan was
   visible to a ranker by then. An event with no such plan is

   * ``repaired`` when a plan the repair loop made for the user (no trigger) was written after
     it: planned, and its latency counts;
   * ``no_plan_owed`` when the user's last plan before it was made from the planner input the
     user ended the run with (K-history and novelty window): they came back, within one
     batch, to the state their plan was made for, so the core rightly asked for no new plan
     (``plugin.core.sequence.needs_replan``). Overloaded runs have these: batches are large,
     and late in the interleaved order few users remain, so one batch holds a user twice
     (e.g. clusters a, b, a);
   * ``unplanned`` otherwise: a lost plan, which the targets count as a failure.

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
    ConsumedRecord,
    PlanUpdate,
    produce,
    read_topic,
    topic_partitions,
    wait_for_commits,
)
from plugin.bench.machine import idle_cpu_percent
from plugin.bench.stack import BenchStack
from plugin.bench.workload import PlannerInput, build_workload, messages, planner_inputs
from plugin.core.catalog import ClusterCatalog
from plugin.core.events import WatchEvent
from plugin.jobs.precompute import precompute_plans
from plugin.localstack import create_topics
from plugin.localstack.worker import WorkerProcess
from plugin.settings import Settings
from plugin.wiring import triton_planner

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
    repaired: int = 0
    no_plan_owed: int = 0
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
            "repaired_events": self.repaired,
            "no_plan_owed_events": self.no_plan_owed,
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
    fetch_max_wait_ms: int | None = None,
    feedback: bool = False,
    idle_seconds: float = 0.0,
    owed_wait_s: float = 30.0,
    warm_table: bool = False,
    on_phase: Callable[[Phase], None] | None = None,
) -> dict[str, Any]:
    """Run the phases above; the per-phase rows, the worker's settings and summary.

    ``batch_within_s`` and ``fetch_max_wait_ms`` override those ``worker`` settings;
    ``feedback`` turns the worker's feedback loop on (the Faust app's default; off here by
    default); ``idle_seconds`` (0: skip) is how long the idle CPU use is sampled;
    ``warm_table`` fills the plan table with every history before the worker starts, as a
    deployment does with ``explore precompute`` (default: empty, so the first batches that
    meet a history wait for Triton)."""
    settings = _own_topics(stack.arm("latency", feedback=feedback))
    overrides: dict[str, Any] = {}
    if batch_within_s is not None:
        overrides["batch_within_s"] = batch_within_s
    if fetch_max_wait_ms is not None:
        overrides["fetch_max_wait_ms"] = fetch_max_wait_ms
    if overrides:
        worker = settings.worker.model_copy(update=overrides)
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

    table: dict[str, Any] | None = None
    if warm_table:
        remote = triton_planner(settings, stack.workspace.catalog)
        try:  # into the settings' own plan cache: the one the worker reads
            table = precompute_plans(settings, stack.workspace, remote, "all").as_dict()
        finally:
            remote.close()
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
        owed = _wait_for_repairs(child, settings, owed_wait_s)
        idle: dict[str, Any] | None = None
        if idle_seconds > 0:
            pids = {"worker": child.process.pid} if child.process is not None else {}
            pids.update({name: pid for name, pid in stack.pids.items() if name != "triton"})
            idle = {"seconds": idle_seconds, **idle_cpu_percent(pids, idle_seconds)}
        if idle is not None or owed["waited_s"]:
            time.sleep(1.2)  # a summary written after the waits
        summary = child.stats()
        code = child.stop()
    _attach_latencies(stack, settings, workload.events, plan)
    return {
        "settings": {
            "batch_size": settings.worker.batch_size,
            "batch_within_s": settings.worker.batch_within_s,
            "batch_poll_s": settings.worker.batch_poll_s,
            "fetch_max_wait_ms": settings.worker.fetch_max_wait_ms,
            "partitions": settings.kafka.partitions,
            "seconds_per_rate": seconds,
            "planner": "triton behind the Redis plan cache ("
            + ("filled with every history at start)" if warm_table else "empty at start)"),
            "plan_table": table,
            "feedback_loop": feedback,
            "online_store": "redis, " + type(_online_store(settings)).__name__,
        },
        "phases": [phase.as_dict() for phase in plan],
        "owed_replans": owed,
        "idle_cpu_percent": idle,
        "worker_summary": {key: summary.get(key) for key in SUMMARY_KEYS},
        "worker_exit_code": code,
    }


# What the bench keeps of the worker's summary: ``seconds_by_step`` shows where a batch's time
# went, ``replans_deferred`` and ``repairs`` whether the repair loop had work.
SUMMARY_KEYS = (
    "events",
    "batches",
    "replans",
    "plans",
    "plan_cache",
    "event_to_plan",
    "seconds_by_step",
    "busy_seconds",
    "replans_deferred",
    "repairs",
)


def _wait_for_repairs(child: WorkerProcess, settings: Settings, bound_s: float) -> dict[str, Any]:
    """When the worker deferred replans, wait (up to ``bound_s``) until a repair round that
    began after now found none owed, so that repaired plans are in the plans topic before it
    is read back; what was deferred, whether the wait ended with none owed, and how long."""
    stats = child.stats()
    deferred = int(stats.get("replans_deferred") or 0)
    out: dict[str, Any] = {"deferred": deferred, "drained": True, "waited_s": 0.0}
    if deferred == 0:
        return out
    began = time.perf_counter()
    rounds = (stats.get("repairs") or {}).get("rounds", 0)
    # Two repair intervals: the round in progress may have read the record before now.
    while time.perf_counter() - began < bound_s and child.alive:
        time.sleep(settings.worker.repair_interval_s / 2)
        repairs = child.stats().get("repairs") or {}
        if repairs.get("rounds", 0) >= rounds + 2 and repairs.get("owed_after_last_round") == 0:
            break
    repairs = child.stats().get("repairs") or {}
    out["drained"] = repairs.get("owed_after_last_round") == 0
    out["repaired"] = repairs.get("planned")
    out["waited_s"] = round(time.perf_counter() - began, 1)
    return out


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
    k, window = settings.sequence.history_length, settings.sequence.novelty_window
    account(consumed, updates, sent, stack.workspace.catalog, k, window, plan)


def account(
    consumed: Sequence[ConsumedRecord],
    updates: Sequence[PlanUpdate],
    sent: Sequence[WatchEvent],
    catalog: ClusterCatalog,
    k: int,
    window: int,
    plan: list[Phase],
) -> None:
    """Add to each phase its events' latencies and the events with no plan, each kind counted
    apart (module docstring): ``consumed`` is the events topic read back, ``updates`` the plans
    topic, ``sent`` the events the bench produced."""
    triggers: dict[tuple[int, str], list[tuple[int, float]]] = {}
    repaired: dict[str, list[float]] = {}  # plans the repair loop made, by user: written_at
    for update in updates:
        if update.trigger is None or update.trigger.key is None:
            repaired.setdefault(update.user_id, []).append(update.written_at.timestamp())
            continue
        place = (update.trigger.partition, update.trigger.key)
        triggers.setdefault(place, []).append(
            (update.trigger.offset, update.written_at.timestamp())
        )
    for found in triggers.values():
        found.sort()
    for times in repaired.values():
        times.sort()
    # Per partition, offsets are the produce order; a user's events stay in one partition.
    ordered = sorted(consumed, key=lambda r: (r.partition, r.offset))
    by_value = {m: e for e, m in zip(sent, (v for _, v in messages(sent)), strict=True)}
    records = [r for r in ordered if r.value in by_value]
    inputs = planner_inputs([by_value[r.value] for r in records], catalog, k, window)
    at_offset: dict[tuple[int, int], PlannerInput] = {}
    last_input: dict[tuple[int, str], PlannerInput] = {}
    for record, (state, _) in zip(records, inputs, strict=True):
        at_offset[(record.partition, record.offset)] = state
        last_input[(record.partition, _key(record))] = state
    bounds = [phase.end_offsets for phase in plan]
    for record, (_, moved) in zip(records, inputs, strict=True):
        if not moved:
            continue
        phase = plan[_phase_of(record.partition, record.offset, bounds)]
        place = (record.partition, _key(record))
        sent_at = record.timestamp_ms / 1000
        found = triggers.get(place, [])
        at = bisect.bisect_left(found, (record.offset, -math.inf))
        if at < len(found):
            phase.latencies_ms.append((found[at][1] - sent_at) * 1000)
            continue
        later = repaired.get(place[1], [])
        after = bisect.bisect_left(later, sent_at)
        if after < len(later):
            phase.repaired += 1
            phase.latencies_ms.append((later[after] - sent_at) * 1000)
        elif at > 0 and at_offset.get((record.partition, found[at - 1][0])) == last_input[place]:
            phase.no_plan_owed += 1
        else:
            phase.unplanned += 1


def _key(record: Any) -> str:
    return record.key.decode() if record.key else ""


def _phase_of(partition: int, offset: int, bounds: Sequence[dict[int, int]]) -> int:
    for index, ends in enumerate(bounds):
        if offset < ends.get(partition, 0):
            return index
    return len(bounds) - 1
