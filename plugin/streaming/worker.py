"""One micro-batch of Kafka records through the core, without Faust.

:meth:`StreamWorker.handle` is what the Faust agent runs (in an executor thread) for every
batch: validate each record, run :class:`~plugin.core.pipeline.BatchProcessor` on the valid ones
(one Feast read, one planner call, one plan write, one sequence write), and build the output
messages. It does no Kafka I/O, so the agent decides when to send and when to ack, and unit
tests drive it with plain records.

:meth:`StreamWorker.repair` is the repair loop's round, which the agent runs on the same batch
thread between batches: it replans users of the worker's own partitions whose replan was
deferred, from the store's durable record of owed replans (``plugin.core.pipeline``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from plugin.adapters.kafka_io import DeadLetter, PlanUpdate, SourceRecord
from plugin.adapters.plan_cache import CachedPlanner
from plugin.core.catalog import ClusterCatalog
from plugin.core.events import (
    EARLIEST_EVENT_TIME,
    MAX_CLOCK_SKEW,
    EventRejection,
    WatchEvent,
    parse_event,
)
from plugin.core.fast_events import fast_event
from plugin.core.feedback import FeedbackCollector
from plugin.core.pipeline import BatchOutcome, BatchProcessor, BatchTimings
from plugin.core.ports import OwedReplanRecord
from plugin.observability.metrics import WorkerMetrics, rejection_kind
from plugin.settings import Settings
from plugin.streaming.deadline import DeadlinePlanner
from plugin.streaming.generation import GenerationGuard, StateLost

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Record:
    """One consumed Kafka message; ``timestamp`` is its Kafka timestamp in epoch seconds."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None

    def source(self) -> SourceRecord:
        produced = (
            datetime.fromtimestamp(self.timestamp, tz=UTC) if self.timestamp is not None else None
        )
        key = _bounded(_key_text(self.key))
        return SourceRecord(
            topic=self.topic,
            partition=self.partition,
            offset=self.offset,
            key=key,
            produced_at=produced,
        )


@dataclass(frozen=True)
class Outbound:
    """A message to send once the batch is processed."""

    topic: str
    key: bytes | None
    value: bytes


@dataclass
class BatchReport:
    records: int
    accepted: int
    rejected: int
    outcome: BatchOutcome | None
    outbound: list[Outbound]
    seconds: float


@dataclass
class RepairReport:
    """One repair round: the owed users it read, planned and settled, and the plan updates to
    send. ``more``: a round was full, so another one should follow at once."""

    read: int
    planned: int
    settled: int
    still_owed: int
    outbound: list[Outbound]
    seconds: float
    more: bool


@dataclass
class RepairTotals:
    rounds: int = 0
    read: int = 0
    planned: int = 0
    settled: int = 0
    last_owed: int | None = None
    last_round_at: float | None = None


@dataclass
class WorkerTotals:
    """Running totals for the worker's JSON summary (Prometheus has the same as counters)."""

    events: int = 0
    accepted: int = 0
    rejected: int = 0
    batches: int = 0
    replans: int = 0
    plans: int = 0
    stale: int = 0
    unknown_items: int = 0
    busy_seconds: float = 0.0
    timings: BatchTimings = field(default_factory=BatchTimings)
    planned_users: set[str] = field(default_factory=set)
    users: set[str] = field(default_factory=set)
    first_batch_at: float | None = None
    last_batch_at: float | None = None
    rejections: dict[str, int] = field(default_factory=dict)


def _key_text(key: bytes | None) -> str | None:
    return key.decode("utf-8", "replace") if key is not None else None


# A Kafka key is not bounded by the event's size limit: cut it where it is copied into a
# reason or a dead letter, so a hostile key cannot make the dead letter too large to send.
MAX_KEY_CHARS = 256


def _bounded(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_KEY_CHARS:
        return text
    return text[:MAX_KEY_CHARS] + "…"


KEY_MISSING = "key: missing; watch events must be keyed by user_id"


def _check_key(key: bytes | None, event: WatchEvent) -> WatchEvent | EventRejection:
    if key is None:
        return EventRejection(reason=KEY_MISSING, payload="")
    text = _key_text(key)
    if text != event.user_id:
        return EventRejection(
            reason=f"key: {_bounded(text)!r} does not match user_id {event.user_id!r}",
            payload="",
        )
    return event


def parse_record(
    value: bytes | None,
    now: datetime,
    earliest: datetime = EARLIEST_EVENT_TIME,
    max_skew: timedelta = MAX_CLOCK_SKEW,
) -> WatchEvent | EventRejection:
    """:func:`~plugin.core.events.parse_event` that never raises: an error the validation did not
    expect becomes a rejection too. One hostile record must not fail its batch, or the batch
    is retried until the worker exits, and a restarted worker meets the same record again."""
    try:
        return parse_event(value, now=now, earliest=earliest, max_skew=max_skew)
    except RecursionError:  # json.loads on thousands of nested brackets
        return EventRejection(reason="not JSON: nested too deeply", payload="")
    except Exception as exc:  # e.g. OverflowError: a time zone moves a date past year 1/9999
        detail = " ".join(str(exc).split())[:200]
        return EventRejection(
            reason=f"event: cannot be validated ({type(exc).__name__}: {detail})", payload=""
        )


def event_time_bounds(settings: Settings) -> tuple[datetime, timedelta]:
    """The plausible window of event times: (earliest, largest skew ahead of the clock)."""
    window = settings.worker
    return window.earliest_event_time, timedelta(seconds=window.max_clock_skew_s)


def accept_record(
    record: Record,
    now: datetime,
    catalog: ClusterCatalog,
    earliest: datetime = EARLIEST_EVENT_TIME,
    max_skew: timedelta = MAX_CLOCK_SKEW,
) -> WatchEvent | EventRejection:
    """The event of ``record``, or why it is a dead letter: what the worker applies, and what
    ``explore rebuild`` applies again."""
    return admit_record(record, parse_record(record.value, now, earliest, max_skew), catalog)


def admit_record(
    record: Record, result: WatchEvent | EventRejection, catalog: ClusterCatalog
) -> WatchEvent | EventRejection:
    """The checks after parsing that need the record and the catalog: its key, its item."""
    if isinstance(result, WatchEvent):
        # The user's state is read, changed and written back per batch, so all of a user's
        # events must reach one worker: the partition their key hashes to. A record keyed
        # otherwise, or not keyed at all (the default partitioner scatters those), may be on
        # a partition another worker owns, and applying it here could race with that
        # worker's writes.
        result = _check_key(record.key, result)
    if isinstance(result, WatchEvent) and catalog.cluster_of(result.item_id) is None:
        # The core would skip it and count it; as a dead letter it can be replayed once a
        # catalog rebuild knows the item (docs/ROBUSTNESS.md).
        result = EventRejection(
            reason=f"item_id: unknown item {result.item_id!r} (not in the cluster catalog)",
            payload="",
        )
    return result


def parse_records(
    values: Sequence[bytes | None],
    now: datetime,
    earliest: datetime = EARLIEST_EVENT_TIME,
    max_skew: timedelta = MAX_CLOCK_SKEW,
) -> list[WatchEvent | EventRejection]:
    """:func:`parse_record` for a batch: plain payloads through the msgspec fast path
    (:func:`~plugin.core.fast_events.fast_event`), every other one through
    :func:`parse_record`, so each rejection keeps the strict parser's reason."""
    out: list[WatchEvent | EventRejection] = []
    for value in values:
        try:
            event = fast_event(value, now, earliest, max_skew)
        except Exception:  # never: but one odd payload must not fail the batch
            event = None
        out.append(event if event is not None else parse_record(value, now, earliest, max_skew))
    return out


class StreamWorker:
    """Validates, processes and turns one batch of records into output messages.

    Built fully assembled (``plugin.wiring.build_worker``): ``deadline`` and ``cache`` are the
    planners inside ``processor.planner`` that the summary reports on, and ``feedback``, when
    given, must be the processor's own observer: it derives the records that join the outbound
    (:mod:`plugin.core.feedback`). ``owed`` is the processor's store as the record of owed
    replans, when it keeps one: batches then record deferred replans and :meth:`repair`
    makes them. ``generation``, when given, is checked around every batch's reads and writes
    and before each repair round; it raises
    :class:`~plugin.streaming.generation.StateLost` when the store lost its data. With
    ``generation_in_store`` the processor's store already reads and verifies the marker in the
    batch's own state read and write (``FeastStore.watch_marker``), so the worker only counts
    those two checks.
    """

    def __init__(
        self,
        processor: BatchProcessor,
        catalog: ClusterCatalog,
        settings: Settings,
        metrics: WorkerMetrics,
        deadline: DeadlinePlanner | None = None,
        cache: CachedPlanner | None = None,
        feedback: FeedbackCollector | None = None,
        owed: OwedReplanRecord | None = None,
        generation: GenerationGuard | None = None,
        generation_in_store: bool = False,
    ) -> None:
        if feedback is not None and processor.observer is not feedback:
            # Records only come from batches the collector saw: a collector the processor
            # does not run would send nothing, silently.
            raise ValueError("the feedback collector must be the processor's observer")
        self.processor = processor
        self.catalog = catalog
        self.settings = settings
        self.metrics = metrics
        self.deadline = deadline
        self.cache = cache
        self.feedback = feedback
        # The store's record of owed replans (None: the store keeps none, e.g. SQLite); it
        # must be the processor's store, which writes the record with the states.
        self.owed = owed if owed is not None and owed.keeps_owed_replans else None
        # The online state's generation marker (None: not checked, e.g. SQLite).
        self.generation = generation
        self.generation_in_store = generation is not None and generation_in_store
        self.state_lost: str | None = None  # why the worker stopped, for its summary
        self.repairs = RepairTotals()
        self.totals = WorkerTotals()
        self.assigned: list[str] = []
        self._cache_seen = (0, 0)
        self._lock = threading.Lock()

    # -- one batch ---------------------------------------------------------------------------

    def handle(self, records: Sequence[Record]) -> BatchReport:
        """Validate, process and build the batch's plan updates and dead letters.

        Safe to call again with the same records after a failure: the core's watermarks make
        a second application change nothing, and nothing is sent until this returns.
        """
        started = time.perf_counter()
        now = datetime.now(tz=UTC)
        bounds = event_time_bounds(self.settings)
        kafka = self.settings.kafka
        events: list[WatchEvent] = []
        newest: dict[str, Record] = {}
        by_user: dict[str, list[Record]] = {}
        outbound: list[Outbound] = []
        reasons: list[str] = []
        parsed = parse_records([record.value for record in records], now, *bounds)
        for record, parsed_result in zip(records, parsed, strict=True):
            result = admit_record(record, parsed_result, self.catalog)
            if isinstance(result, EventRejection):
                letter = DeadLetter.from_raw(result.reason, record.value, record.source(), now)
                key_bytes = record.key[:MAX_KEY_CHARS] if record.key is not None else None
                outbound.append(Outbound(kafka.dead_letter_topic, key_bytes, letter.encode()))
                reasons.append(result.reason)
                continue
            events.append(result)
            by_user.setdefault(result.user_id, []).append(record)
            newest[result.user_id] = record

        # With feedback on, the processor runs the collector around its reads and writes.
        # Each user's shard: where the record of owed replans keeps them, so that only the
        # worker owning the partition repairs them.
        shards = (
            {user: f"{record.topic}:{record.partition}" for user, record in newest.items()}
            if self.owed is not None
            else None
        )
        outcome = self._process(events, shards) if events else None
        done = time.time()
        written_at = datetime.now(tz=UTC)
        if outcome is not None:
            for plan in outcome.plans:
                trigger = newest.get(plan.user_id)
                update = PlanUpdate.from_plan(
                    plan,
                    self.catalog.describe(plan.cluster_id),
                    written_at,
                    trigger.source() if trigger is not None else None,
                )
                outbound.append(Outbound(kafka.plans_topic, plan.user_id.encode(), update.encode()))
        if self.feedback is not None:
            for answer in self.feedback.take():
                outbound.append(
                    Outbound(kafka.feedback_topic, answer.user_id.encode(), answer.encoded)
                )
        report = BatchReport(
            records=len(records),
            accepted=len(events),
            rejected=len(records) - len(events),
            outcome=outcome,
            outbound=outbound,
            seconds=time.perf_counter() - started,
        )
        # Metrics only once the batch went through: a retried batch must not count twice.
        self._observe(report, by_user, done, reasons)
        return report

    def settle(self) -> None:
        """Wait for the feedback loop's publication of the last batch (aggregates, fresh
        counts, monitor), which goes on in the background after :meth:`handle` returns."""
        if self.feedback is not None:
            self.feedback.settle()

    def _process(self, events: Sequence[WatchEvent], shards: dict[str, str] | None) -> BatchOutcome:
        """The processor's batch between two marker checks: before any state is read, and
        after the writes, before the batch can be acked, so a store that lost its data is
        never written on, or committed past, unnoticed (plugin.streaming.generation)."""
        if self.generation is None:
            return self.processor.process(events, shards)
        if self.generation_in_store:  # both checks ride on the store's read and write
            outcome = self._guarded(lambda: self.processor.process(events, shards))
            self.metrics.generation_checks.inc(2)
            return outcome
        self._check_generation()
        outcome = self.processor.process(events, shards)
        self._check_generation()
        return outcome

    def _guarded(self, step: Callable[[], BatchOutcome]) -> BatchOutcome:
        try:
            return step()
        except StateLost:
            self.metrics.state_lost.set(1)
            raise

    # -- the repair loop ----------------------------------------------------------------------

    def owned_shards(self) -> list[str]:
        """The ``topic:partition`` shards of the events topic this worker owns now."""
        prefix = f"{self.settings.kafka.events_topic}:"
        return [shard for shard in self.assigned if shard.startswith(prefix)]

    def repair(self) -> RepairReport | None:
        """One repair round over the partitions this worker owns: read up to
        ``worker.repair_batch`` owed users per partition from the record, replan them through
        the processor (:meth:`~plugin.core.pipeline.BatchProcessor.repair`) and return the plan
        updates to send. None when there is no record or nothing is owed.

        Run it on the batch thread, between batches: a user's state is then never read by a
        batch and a repair at once in this worker, and revision stamps make a repair lose to
        any batch another worker (one that took over the partition) wrote meanwhile.
        """
        if self.owed is None:
            return None
        self._check_generation()  # also how an idle worker notices a lost store
        shards = self.owned_shards()
        started = time.perf_counter()
        limit = self.settings.worker.repair_batch
        owed = self.owed.read_owed(shards, limit) if shards else {}
        if not owed:
            self._note_repair(0, 0, 0, 0)
            return None
        outcome = self._guarded(lambda: self.processor.repair(owed))
        written_at = datetime.now(tz=UTC)
        kafka = self.settings.kafka
        outbound = [
            Outbound(
                kafka.plans_topic,
                plan.user_id.encode(),
                PlanUpdate.from_plan(
                    plan, self.catalog.describe(plan.cluster_id), written_at, None
                ).encode(),
            )
            for plan in outcome.plans
        ]
        per_shard: dict[str, int] = {}
        for mark in owed.values():
            per_shard[mark.shard] = per_shard.get(mark.shard, 0) + 1
        report = RepairReport(
            read=len(owed),
            planned=len(outcome.plans),
            settled=outcome.settled,
            still_owed=outcome.owed,
            outbound=outbound,
            seconds=time.perf_counter() - started,
            # Another round at once only when this one got through and some shard had more.
            more=bool(outcome.plans) and any(n >= limit for n in per_shard.values()),
        )
        self._note_repair(report.read, report.planned, report.settled, report.still_owed)
        if report.planned:
            log.info(
                "deferred replans repaired",
                extra={
                    "planned": report.planned,
                    "settled": report.settled,
                    "still_owed": report.still_owed,
                    "seconds": round(report.seconds, 3),
                },
            )
        self.metrics.plans_written.inc(report.planned)
        return report

    def _check_generation(self) -> None:
        if self.generation is None:
            return
        self.metrics.generation_checks.inc()
        try:
            self.generation.check()
        except StateLost:
            self.metrics.state_lost.set(1)
            raise

    def _note_repair(self, read: int, planned: int, settled: int, still_owed: int) -> None:
        with self._lock:
            r = self.repairs
            r.rounds += 1
            r.read += read
            r.planned += planned
            r.settled += settled
            r.last_owed = still_owed
            r.last_round_at = time.time()
            if planned:
                self.totals.plans += planned

    def _observe(
        self,
        report: BatchReport,
        by_user: dict[str, list[Record]],
        done: float,
        reasons: list[str],
    ) -> None:
        m = self.metrics
        m.events_in.inc(report.records)
        for reason in reasons:
            m.reject(reason)
        m.batches.inc()
        m.batch_events.observe(report.records)
        m.batch_seconds.observe(report.seconds)
        state_lat = [done - r.timestamp for rs in by_user.values() for r in rs if r.timestamp]
        plan_lat: list[float] = []
        outcome = report.outcome
        if outcome is not None:
            stats, timings = outcome.stats, outcome.timings
            m.events_applied.inc(stats.applied)
            m.events_skipped.labels(why="stale").inc(stats.stale)
            m.events_skipped.labels(why="unknown_item").inc(stats.unknown_items)
            m.replans.inc(stats.replans)
            m.plans_written.inc(len(outcome.plans))
            m.store_seconds.labels(op="read").observe(timings.read)
            m.store_seconds.labels(op="write").observe(timings.write)
            for plan in outcome.plans:
                plan_lat += [done - r.timestamp for r in by_user[plan.user_id] if r.timestamp]
        m.event_to_state_seconds.observe_many(state_lat)
        m.event_to_plan_seconds.observe_many(plan_lat)
        m.state_latency.extend(state_lat)
        m.plan_latency.extend(plan_lat)
        if self.cache is not None:
            hits, misses = self.cache.stats.hits, self.cache.stats.misses
            m.cache_hits.inc(hits - self._cache_seen[0])
            m.cache_misses.inc(misses - self._cache_seen[1])
            self._cache_seen = (hits, misses)
        with self._lock:
            t = self.totals
            t.events += report.records
            t.accepted += report.accepted
            t.rejected += report.rejected
            t.batches += 1
            t.users.update(by_user)
            if outcome is not None:
                t.replans += outcome.stats.replans
                t.plans += len(outcome.plans)
                t.stale += outcome.stats.stale
                t.unknown_items += outcome.stats.unknown_items
                t.timings.add(outcome.timings)
                t.planned_users.update(plan.user_id for plan in outcome.plans)
            t.busy_seconds += report.seconds
            t.last_batch_at = done
            if t.first_batch_at is None:
                t.first_batch_at = done - report.seconds
            for reason in reasons:
                kind = rejection_kind(reason)
                t.rejections[kind] = t.rejections.get(kind, 0) + 1

    # -- summaries ---------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Totals, throughput, latency percentiles and cache stats, for reports and the demo."""
        with self._lock:
            t = self.totals
            span = (
                (t.last_batch_at - t.first_batch_at)
                if t.first_batch_at is not None and t.last_batch_at is not None
                else 0.0
            )
            summary: dict[str, Any] = {
                "events": t.events,
                "accepted": t.accepted,
                "rejected": t.rejected,
                "rejections": dict(t.rejections),
                "batches": t.batches,
                "users": len(t.users),
                "planned_users": len(t.planned_users),
                "replans": t.replans,
                "plans": t.plans,
                "stale_events": t.stale,
                "unknown_items": t.unknown_items,
                "seconds_by_step": {
                    "read": round(t.timings.read, 3),
                    "core": round(t.timings.core, 3),
                    "plan": round(t.timings.plan, 3),
                    "write": round(t.timings.write, 3),
                },
                "busy_seconds": round(t.busy_seconds, 3),
                "span_seconds": round(span, 3),
                "events_per_second": round(t.events / span, 1) if span > 0 else None,
                "events_per_busy_second": round(t.events / t.busy_seconds, 1)
                if t.busy_seconds
                else None,
            }
        summary["planner"] = self.processor.planner.model_version
        summary["replans_deferred"] = self.deadline.deferred if self.deadline else 0
        summary["event_to_plan"] = self.metrics.plan_latency.summary()
        summary["event_to_state"] = self.metrics.state_latency.summary()
        summary["plan_cache"] = self.cache.stats.as_dict() if self.cache else None
        summary["assigned"] = list(self.assigned)
        with self._lock:
            r = self.repairs
            summary["repairs"] = (
                {
                    "rounds": r.rounds,
                    "read": r.read,
                    "planned": r.planned,
                    "settled": r.settled,
                    "owed_after_last_round": r.last_owed,
                }
                if self.owed is not None
                else None
            )
        summary["feedback"] = self.feedback.snapshot() if self.feedback is not None else None
        summary["generation_checks"] = self.generation.checks if self.generation else None
        summary["state_lost"] = self.state_lost
        summary["updated_at"] = datetime.now(tz=UTC).isoformat()
        return summary

    def write_stats(self, path: Path) -> None:
        """Write :meth:`snapshot` as JSON, atomically (readers never see half a file)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        partial.write_text(json.dumps(self.snapshot(), indent=2))
        partial.replace(path)
