"""User feedback on exploration plans: which engagement answers which plan, and what it teaches.

Pure and framework-free, like :mod:`plugin.core.sequence`: no Kafka, Feast or Triton here. The
worker's batch processor shows each batch to :class:`FeedbackCollector` (its
:class:`~plugin.core.ports.BatchObserver`), which reaches the outside through small ports (the
plan store, the log, the online aggregates, the fresh-transition table); ``explore refresh``
turns the log back into alignment labels with :func:`feedback_selection`.

The rule
--------
A user's stored plan was made from their history ``h`` (the K most recent unique clusters) and
proposes a cluster outside their novelty window. The plan is *current* while the user's history
is still ``h``. The first applied event of the user that moves them off ``h`` (an engagement
with any cluster other than the newest one of ``h``) **answers** the plan, and becomes one
:class:`FeedbackRecord`:

* ``accepted``: the engaged cluster is the planned one;
* ``positive``: the engagement was positive (rating or watch ratio at the data thresholds);
* ``novel``: the engaged cluster was outside the user's novelty window, so the move is a
  *novel move out of h*, the unit the alignment labels are made of.

Repeats of the newest cluster do not answer a plan (the user is still where the plan found
them). A plan is answered at most once: after its answer the history has moved, and a later
return to the same history needs a new plan. Stale, duplicated, late and unknown-item events
are skipped exactly as :func:`plugin.core.sequence.apply_batch` skips them, so a replayed batch
produces no feedback and a record is keyed by the event that answered: ``(user_id, event_id)``.

What a record teaches
---------------------
The collective label of a pair is a success rate: ``label(h, c) = positive novel moves h -> c
/ novel moves out of h`` over the dataset. An answered plan of ``c`` for ``h`` is one more
*trial of that pair*: :func:`feedback_selection` turns each record into a
:class:`~plugin.models.data.PlanOutcome` of weight ``label_weight``, a success when the user
engaged ``c`` positively, and :func:`~plugin.models.data.feedback_labels` adds it to that pair's
numerator and denominator only. So a planned cluster that users answer badly loses label
against the other candidates of its history, one they accept gains, and the pairs nobody was
shown keep the dataset's labels. (Counting a bad answer as one more move out of ``h``, as the
dataset's moves count, would scale every label of ``h`` alike and change no plan.) Novel,
positive answers are also novel moves, which a refresh with ``--novelty`` adds to the novelty
model's pairs.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cached_property
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from plugin.core.catalog import ClusterCatalog
from plugin.core.coalesce import Coalescer
from plugin.core.events import ORDER_KEY, WatchEvent
from plugin.core.moves import NovelMove, PlanOutcome
from plugin.core.planning import ExplorationPlan
from plugin.core.sequence import UserClusterSequence, push_cluster, to_micros
from plugin.settings import DataSettings, SequenceSettings

log = logging.getLogger(__name__)

# How often the worker publishes its batches' online aggregates, fresh counts and monitor.
PUBLISH_INTERVAL_S = 1.0


class FeedbackRecord(BaseModel):
    """How a user answered the plan they held: one engagement, keyed by ``(user_id, event_id)``.

    ``history``, ``planned_cluster``, ``model_version`` and ``planned_at`` are the plan's;
    the rest is the engagement's. ``planned_novel`` says whether the planned cluster was
    still outside the user's novelty window at the engagement (the plan's novelty);
    ``engaged_rank`` is the engaged cluster's position among the plan's candidates (None when
    it was not a candidate). ``source`` is ``stream`` for records the worker derived, or what
    a tool that wrote records itself says (``injected`` in the loop test).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    user_id: str
    event_id: str
    item_id: str
    event_time: datetime
    history: list[int]
    planned_cluster: int
    engaged_cluster: int
    engaged_rank: int | None = None
    accepted: bool
    positive: bool
    novel: bool
    planned_novel: bool
    rating: float | None = None
    watch_ratio: float | None = None
    model_version: str
    catalog_version: str
    planned_at: datetime
    source: str = "stream"

    @property
    def key(self) -> tuple[str, str]:
        """The idempotence key: the event that answered the plan."""
        return (self.user_id, self.event_id)

    @property
    def accepted_positive(self) -> bool:
        """The plan's success: its cluster was engaged, and positively."""
        return self.accepted and self.positive

    @cached_property
    def encoded(self) -> bytes:
        """The record as JSON, made once: the log's journal and the feedback topic both carry
        it (a frozen model, so it never goes stale)."""
        return self.model_dump_json().encode()


@dataclass(frozen=True)
class BatchFeedback:
    """What a batch taught: the plans it answered and every novel move in it."""

    records: list[FeedbackRecord]
    moves: list[NovelMove]


def batch_feedback(
    events: Iterable[WatchEvent],
    states: Mapping[str, UserClusterSequence],
    plans: Mapping[str, ExplorationPlan],
    catalog: ClusterCatalog,
    sequence: SequenceSettings,
    engagement: DataSettings,
    catalog_version: str | None = None,
) -> BatchFeedback:
    """Walk a batch the way the core applies it and collect its feedback and novel moves.

    ``states`` and ``plans`` are the users' stored state and plan *before* the batch (the
    same reads the batch processor makes). Pure: the same inputs give the same output.
    ``catalog_version`` saves hashing the catalog (its version is a content hash) per call.
    """
    k, window = sequence.history_length, sequence.novelty_window
    records: list[FeedbackRecord] = []
    moves: list[NovelMove] = []
    recent: dict[str, tuple[int, ...]] = {}
    marks: dict[str, tuple[datetime, str] | None] = {}
    open_plans = dict(plans)
    for event in sorted(events, key=ORDER_KEY):
        user = event.user_id
        if user not in recent:
            state = states.get(user)
            recent[user] = state.recent_clusters if state is not None else ()
            marks[user] = state.watermark() if state is not None else None
        mark = marks[user]
        if mark is not None and event.order_key <= mark:
            continue  # stale: the core skips it, so does feedback
        cluster = catalog.cluster_of(event.item_id)
        if cluster is None:
            continue
        marks[user] = event.order_key
        before = recent[user]
        recent[user] = push_cluster(before, cluster, window)
        if not before or cluster == before[0]:
            continue  # a first event or a repeat: not a move
        positive = event.is_positive(engagement.positive_rating, engagement.positive_watch_ratio)
        novel = cluster not in before
        if novel:
            moves.append(NovelMove(user, before[:k], cluster, positive, before, event.event_time))
        plan = open_plans.get(user)
        if plan is None or plan.history != before[:k] or event.event_time < plan.as_of:
            continue
        del open_plans[user]  # answered: at most one record per plan
        catalog_version = catalog_version or catalog.version
        records.append(
            FeedbackRecord(
                user_id=user,
                event_id=event.event_id,
                item_id=event.item_id,
                event_time=event.event_time,
                history=list(plan.history),
                planned_cluster=plan.cluster_id,
                engaged_cluster=cluster,
                engaged_rank=plan.candidates.index(cluster) if cluster in plan.candidates else None,
                accepted=cluster == plan.cluster_id,
                positive=positive,
                novel=novel,
                planned_novel=plan.cluster_id not in before,
                rating=event.rating,
                watch_ratio=event.watch_ratio,
                model_version=plan.model_version,
                catalog_version=catalog_version,
                planned_at=plan.as_of,
            )
        )
    return BatchFeedback(records=records, moves=moves)


def dedupe(records: Iterable[FeedbackRecord]) -> list[FeedbackRecord]:
    """One record per ``(user_id, event_id)``, the first seen, in input order."""
    seen: dict[tuple[str, str], FeedbackRecord] = {}
    for record in records:
        seen.setdefault(record.key, record)
    return list(seen.values())


# -- what refresh learns from ------------------------------------------------------------------


@dataclass(frozen=True)
class FeedbackSelection:
    """What a refresh learns from the log, and why the other records were left out."""

    outcomes: list[PlanOutcome]  # every usable answered plan (alignment labels)
    moves: list[NovelMove]  # the novel answers among them (novelty pairs)
    records: int
    unique: int
    other_catalog: int
    already_in_data: int

    def as_dict(self) -> dict[str, int]:
        return {
            "records": self.records,
            "unique": self.unique,
            "other_catalog": self.other_catalog,
            "already_in_data": self.already_in_data,
            "used": len(self.outcomes),
            "accepted_positive": sum(o.success for o in self.outcomes),
            "novel_moves": len(self.moves),
        }


def feedback_selection(
    records: Iterable[FeedbackRecord],
    catalog_version: str,
    dataset_events: Collection[tuple[str, str]] = frozenset(),
    weight: float = 1.0,
) -> FeedbackSelection:
    """The plan outcomes (weight ``weight``) and novel moves a refresh adds to the dataset's.

    Left out: duplicates (same ``(user_id, event_id)``), records of plans made on another
    catalog (their cluster ids mean other clusters), and answers whose event is one of the
    dataset's own ``(user_id, event_id)``: a replayed dataset's users never saw those plans,
    and its moves are in the training data already (held-out ones would flatter the gate).
    """
    every = list(records)
    unique = dedupe(every)
    outcomes: list[PlanOutcome] = []
    moves: list[NovelMove] = []
    other_catalog = duplicate = 0
    for record in unique:
        if record.catalog_version != catalog_version:
            other_catalog += 1
            continue
        if record.key in dataset_events:
            duplicate += 1
            continue
        history = tuple(record.history)
        outcomes.append(
            PlanOutcome(history, record.planned_cluster, record.accepted_positive, weight)
        )
        if record.novel:
            moves.append(
                NovelMove(
                    record.user_id,
                    history,
                    record.engaged_cluster,
                    record.positive,
                    history,
                    record.event_time,
                )
            )
    return FeedbackSelection(
        outcomes=outcomes,
        moves=moves,
        records=len(every),
        unique=len(unique),
        other_catalog=other_catalog,
        already_in_data=duplicate,
    )


# -- online aggregates per (history, candidate) ------------------------------------------------


def aggregate_key(history: Sequence[int], candidate: int) -> str:
    """The ``history_candidate`` entity key: ``"c1,c2>c"`` (history most recent first)."""
    return f"{','.join(str(c) for c in history)}>{candidate}"


@dataclass(frozen=True)
class FeedbackAggregate:
    """Counts of answered plans for one (history, planned cluster), as the Feast view holds."""

    key: str
    answered: int = 0
    engaged: int = 0
    engaged_positive: int = 0
    novel: int = 0
    model_version: str = ""
    revision_us: int = 0  # strictly increasing write stamp (Feast's Redis store keeps newer)

    @property
    def positive_rate(self) -> float:
        """Share of answered plans whose cluster was engaged positively."""
        return self.engaged_positive / self.answered if self.answered else 0.0

    def plus(self, other: FeedbackAggregate) -> FeedbackAggregate:
        """Both counts added; the newer stamp (moved on by a microsecond when not newer)."""
        return replace(
            self,
            answered=self.answered + other.answered,
            engaged=self.engaged + other.engaged,
            engaged_positive=self.engaged_positive + other.engaged_positive,
            novel=self.novel + other.novel,
            model_version=other.model_version or self.model_version,
            revision_us=max(other.revision_us, self.revision_us + 1),
        )


def aggregate(records: Iterable[FeedbackRecord]) -> dict[str, FeedbackAggregate]:
    """Records counted per (history, planned cluster), stamped with their newest event time."""
    # Plain counters per key, one aggregate each at the end (not one frozen copy per record).
    counts: dict[str, list[int]] = {}  # answered, engaged, engaged_positive, novel, stamp
    versions: dict[str, str] = {}
    for record in records:
        key = aggregate_key(record.history, record.planned_cluster)
        stamp = to_micros(record.event_time)
        row = counts.get(key)
        if row is None:
            row = counts[key] = [0, 0, 0, 0, stamp]
        row[0] += 1
        row[1] += record.accepted
        row[2] += record.accepted_positive
        row[3] += record.novel
        row[4] = max(row[4], stamp)
        if record.model_version:  # the last non-empty one, as FeedbackAggregate.plus keeps
            versions[key] = record.model_version
    return {
        key: FeedbackAggregate(
            key=key,
            answered=answered,
            engaged=engaged,
            engaged_positive=positive,
            novel=novel,
            model_version=versions.get(key, ""),
            revision_us=stamp,
        )
        for key, (answered, engaged, positive, novel, stamp) in counts.items()
    }


def merge_aggregates(
    stored: Mapping[str, FeedbackAggregate], delta: Mapping[str, FeedbackAggregate]
) -> list[FeedbackAggregate]:
    """The rows to write: each key's stored counts plus the batch's, with a newer stamp."""
    return [stored[key].plus(row) if key in stored else row for key, row in sorted(delta.items())]


# -- ports and the worker's driver -------------------------------------------------------------


class PlanReader(Protocol):
    def read_plans(self, user_ids: Sequence[str]) -> dict[str, ExplorationPlan]: ...


class FeedbackSink(Protocol):
    """Where records go durably (the Parquet log)."""

    def append(self, records: Sequence[FeedbackRecord]) -> object:
        """Durable on return."""
        ...

    def settle(self) -> None:
        """Finish what the appends left to the background (the log's parts)."""
        ...


class AggregateStore(Protocol):
    """The online ``feedback_aggregates`` view.

    ``add_feedback_aggregates`` adds a batch's counts to the stored ones; with several workers
    it must be atomic per key in the store (a read then a write of the sums would lose the
    increments of a worker that wrote in between)."""

    def add_feedback_aggregates(self, rows: Sequence[FeedbackAggregate]) -> None: ...


class MoveSink(Protocol):
    """Where the batch's novel moves go (the fresh-transition table)."""

    def record(self, moves: Sequence[NovelMove]) -> object: ...


class RecordObserver(Protocol):
    """Monitoring: sees every record once its batch went through."""

    def observe(self, records: Sequence[FeedbackRecord]) -> object: ...


@dataclass
class FeedbackTotals:
    records: int = 0
    accepted: int = 0
    accepted_positive: int = 0
    novel: int = 0
    moves: int = 0
    aggregate_errors: int = 0
    fresh_errors: int = 0
    by_version: Counter[str] = field(default_factory=Counter)


class FeedbackCollector:
    """Per batch: the stored plans, feedback logged before the batch's writes, then aggregates,
    fresh transitions and monitoring after them; the records go out with the batch.

    It is the :class:`~plugin.core.ports.BatchObserver` of the worker's
    :class:`~plugin.core.pipeline.BatchProcessor`, given to it when both are built
    (``plugin.wiring.build_worker``). Order and guarantees (docs/FEEDBACK.md):

    1. :meth:`before_read`: nothing is read; it forgets the previous batch's findings;
    2. :meth:`before_writes`, with the states the processor's own read returned, on the
       processor's observer thread beside the core and the planner: the users' stored plans
       (below), then the records, appended to the log before any state or plan of the batch
       is written;
    3. :meth:`after_writes`, after the batch's writes: the plans it wrote are remembered and
       the records counted; then, on a thread of the collector's own while the batches go on,
       the online aggregates (one read, one write), the fresh transition counts and the
       monitor, for all the batches of the last ``PUBLISH_INTERVAL_S`` at once. These are best
       effort: a failure is logged and counted, never fails the batch (the log is the source
       of truth, and ``refresh`` rebuilds the aggregates from it). :meth:`settle` publishes
       what is left now.

    The stored plans: a plan this collector saw written (up to ``plan_memory`` users, the
    least recently seen forgotten first) is used when the user's state confirms it (the
    state's ``planned_history`` and ``planned_at`` are the plan's: ``confirm_plans`` wrote
    them from it); every other user's plan is read from the store, in one ``read_plans`` call.
    So the plan read left the batch's serial path (it was one round trip before the state
    read, docs/BENCHMARKS.md), and a worker that owns its users reads only those it has not
    planned since it started, or whose plan another writer (a repair, a worker that held the
    partition) changed.

    A batch that fails after step 2 and is retried logs its records again (the log dedupes
    by key on read). Records are held by key until a batch goes through: then they are
    counted online once, and :meth:`take` hands them to the output topic once, even when the
    retry no longer derives them (its first attempt wrote the plans that answered them).
    """

    def __init__(
        self,
        plans: PlanReader,
        catalog: ClusterCatalog,
        sequence: SequenceSettings,
        engagement: DataSettings,
        sink: FeedbackSink,
        aggregates: AggregateStore | None = None,
        fresh: MoveSink | None = None,
        observer: RecordObserver | None = None,
        plan_memory: int = 100_000,
    ) -> None:
        self.plans = plans
        self.catalog = catalog
        self.sequence = sequence
        self.engagement = engagement
        self.sink = sink
        self.aggregates = aggregates
        self.fresh = fresh
        self.observer = observer
        self.totals = FeedbackTotals()
        self.catalog_version = catalog.version
        # Records not yet sent (take) and not yet counted online; keyed, so a record that a
        # retried batch derives again is held once.
        self._unsent: dict[tuple[str, str], FeedbackRecord] = {}
        self._uncounted: dict[tuple[str, str], FeedbackRecord] = {}
        # What the batch in progress read and found: set by before_read and before_writes.
        self._moves: list[NovelMove] | None = None
        # Plans written by the batches this collector saw, by user, least recently used first.
        self.plan_memory = plan_memory
        self._written: OrderedDict[str, ExplorationPlan] = OrderedDict()
        self.plans_read = 0  # users whose plan was read from the store
        self.plans_remembered = 0  # users whose plan came from the memory
        # The batches' aggregates, fresh counts and monitor, published together at most once
        # per PUBLISH_INTERVAL_S (after_writes).
        self._publisher: Coalescer[tuple[list[FeedbackRecord], list[NovelMove]]] = Coalescer(
            self._publish, PUBLISH_INTERVAL_S, "feedback-publish"
        )

    def before_read(self, events: Sequence[WatchEvent]) -> None:
        """Step 1: forget the previous batch's findings (the plans are read in step 2)."""
        self._moves = None

    def stored_plans(
        self, users: Iterable[str], states: Mapping[str, UserClusterSequence]
    ) -> dict[str, ExplorationPlan]:
        """The users' stored plans: remembered ones their state confirms, the rest read."""
        plans: dict[str, ExplorationPlan] = {}
        unknown: list[str] = []
        for user in sorted(set(users)):
            plan = self._written.get(user)
            state = states.get(user)
            if (
                plan is not None
                and state is not None
                and state.planned_at == plan.as_of
                and state.planned_history == plan.history
            ):
                plans[user] = plan
                self._written.move_to_end(user)
            else:
                unknown.append(user)
        self.plans_remembered += len(plans)
        self.plans_read += len(unknown)
        if unknown:
            plans.update(self.plans.read_plans(unknown))
        return plans

    def before_writes(
        self, events: Sequence[WatchEvent], states: Mapping[str, UserClusterSequence]
    ) -> None:
        """Step 2: the batch's records, from its pre-batch ``states`` and the users' stored
        plans, appended to the log."""
        found = batch_feedback(
            events,
            states,
            self.stored_plans((event.user_id for event in events), states),
            self.catalog,
            self.sequence,
            self.engagement,
            self.catalog_version,
        )
        if found.records:
            self.sink.append(found.records)  # durable before the batch writes anything
        for record in found.records:
            self._unsent.setdefault(record.key, record)
            self._uncounted.setdefault(record.key, record)
        self._moves = found.moves

    def after_writes(
        self, events: Sequence[WatchEvent], plans: Sequence[ExplorationPlan] = ()
    ) -> None:
        """Step 3: remember the written ``plans`` and count the records; the aggregates, fresh
        counts and the monitor are published in the background (:meth:`settle`)."""
        for plan in plans:
            self._written[plan.user_id] = plan
            self._written.move_to_end(plan.user_id)
        while len(self._written) > self.plan_memory:
            self._written.popitem(last=False)
        moves = self._moves or []
        records = list(self._uncounted.values())
        self._uncounted.clear()
        self._moves = None
        t = self.totals
        t.records += len(records)
        t.accepted += sum(r.accepted for r in records)
        t.accepted_positive += sum(r.accepted_positive for r in records)
        t.novel += sum(r.novel for r in records)
        t.moves += len(moves)
        t.by_version.update(r.model_version for r in records)
        if not records and not moves:
            return
        # Off the batch's path: these three took about 9 ms a batch (two Redis round trips
        # and the monitor) while the batch's plans waited to be sent. They are best effort, so
        # nothing the batch guarantees waits for them; published together once a second, they
        # cost two round trips a second instead of two a batch.
        self._publisher.add((records, moves))

    def settle(self) -> None:
        """Publish what the batches left (aggregates, fresh counts, monitor) now, and finish
        the log's background work (a driver calls it before it stops, and a reader of the
        aggregates after a batch)."""
        self._publisher.settle()
        self.sink.settle()

    def _publish(self, batches: list[tuple[list[FeedbackRecord], list[NovelMove]]]) -> None:
        records = [record for batch, _ in batches for record in batch]
        moves = [move for _, batch in batches for move in batch]
        if records and self.aggregates is not None:
            try:
                delta = aggregate(records)
                self.aggregates.add_feedback_aggregates([delta[key] for key in sorted(delta)])
            except Exception as exc:  # best effort: see the class docstring
                self.totals.aggregate_errors += 1
                log.warning("feedback aggregates not updated: %s", exc)
        if moves and self.fresh is not None:
            try:
                self.fresh.record(moves)
            except Exception as exc:
                self.totals.fresh_errors += 1
                log.warning("fresh transitions not updated: %s", exc)
        if records and self.observer is not None:
            try:
                self.observer.observe(records)
            except Exception as exc:
                log.warning("feedback monitor not updated: %s", exc)

    def take(self) -> list[FeedbackRecord]:
        """The records of batches that went through and were not taken yet."""
        records = list(self._unsent.values())
        self._unsent.clear()
        return records

    def snapshot(self) -> dict[str, object]:
        t = self.totals
        return {
            "records": t.records,
            "accepted": t.accepted,
            "accepted_positive": t.accepted_positive,
            "acceptance_rate": round(t.accepted_positive / t.records, 4) if t.records else None,
            "novel": t.novel,
            "novel_moves": t.moves,
            "aggregate_errors": t.aggregate_errors,
            "fresh_errors": t.fresh_errors,
            "by_model_version": dict(t.by_version),
            "plans_read": self.plans_read,
            "plans_remembered": self.plans_remembered,
        }
