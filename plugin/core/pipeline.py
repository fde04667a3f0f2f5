"""One batch through the whole path: read state, run the core, plan, write plans, write state.

Every driver (embedded replay, Faust worker, benchmarks) calls :meth:`BatchProcessor.process`.
The write order is what makes a crash safe: plans are written before the states that confirm
them, and a driver commits its input offsets only after ``process`` returns.

With ``shards`` (the Kafka partition of each user's events), a batch also keeps the store's
durable record of users owed a replan, in the same write as its states: a user whose replan was
deferred (planner down, timed out, busy) is recorded, and one whose plan is current is settled.
:meth:`BatchProcessor.repair` replans recorded users from their stored states, through the same
core rules, without waiting for their next event.

The processor's only hooks are those of the optional :class:`~plugin.core.ports.BatchObserver`
it is built with (the feedback loop): before the state read, between the read and the first
write, and after the writes. Nothing wraps its store or planner after it is built.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from plugin.core.catalog import ClusterCatalog
from plugin.core.events import WatchEvent
from plugin.core.planning import ExplorationPlan, Planner
from plugin.core.ports import BatchObserver, OwedChanges, OwedMark, SequencePlanStore
from plugin.core.sequence import (
    BatchResult,
    BatchStats,
    UserClusterSequence,
    apply_batch,
    confirm_plans,
    owed_replans,
)
from plugin.settings import Settings


@dataclass
class BatchTimings:
    """Seconds spent in each step, summed over batches."""

    read: float = 0.0
    core: float = 0.0
    plan: float = 0.0
    write: float = 0.0

    @classmethod
    def between(
        cls, started: float, read: float, core: float, plan: float, finished: float
    ) -> BatchTimings:
        """The steps' seconds from the clock readings at each step's end."""
        return cls(read - started, core - read, plan - core, finished - plan)

    def add(self, other: BatchTimings) -> None:
        self.read += other.read
        self.core += other.core
        self.plan += other.plan
        self.write += other.write


@dataclass
class BatchOutcome:
    stats: BatchStats
    plans: list[ExplorationPlan] = field(default_factory=list)
    timings: BatchTimings = field(default_factory=BatchTimings)
    # The record of owed replans: users recorded (still waiting) and settled by this write.
    owed: int = 0
    settled: int = 0


def owed_changes(
    result: BatchResult,
    updated: Mapping[str, UserClusterSequence],
    plans: Sequence[ExplorationPlan],
    shards: Mapping[str, str],
) -> OwedChanges:
    """A batch's changes to the record: each replan it asked for and did not get is owed at
    the written state's revision; every other written user is settled up to it."""
    planned = {plan.user_id for plan in plans}
    waiting = {r.user_id for r in result.replans} - planned
    owed: dict[str, OwedMark] = {}
    settled: dict[str, OwedMark] = {}
    for user_id, state in updated.items():
        shard = shards.get(user_id)
        if shard is None:
            continue
        mark = OwedMark(shard, state.revision_us)
        (owed if user_id in waiting else settled)[user_id] = mark
    return OwedChanges(owed, settled)


class BatchProcessor:
    """Applies validated event batches to the store, replanning through the planner, and shows
    each batch to ``observer`` (when given) at the points :meth:`process` names."""

    def __init__(
        self,
        catalog: ClusterCatalog,
        planner: Planner,
        store: SequencePlanStore,
        settings: Settings,
        observer: BatchObserver | None = None,
    ) -> None:
        self.catalog = catalog
        self.planner = planner
        self.store = store
        self.settings = settings
        self.observer = observer
        self._observer_thread: ThreadPoolExecutor | None = None

    def _beside(self, step: Callable[..., None], *args: Any) -> Future[None]:
        """``step(*args)`` on the processor's one observer thread."""
        if self._observer_thread is None:
            self._observer_thread = ThreadPoolExecutor(1, thread_name_prefix="batch-observer")
        return self._observer_thread.submit(step, *args)

    def process(
        self, events: Sequence[WatchEvent], shards: Mapping[str, str] | None = None
    ) -> BatchOutcome:
        """One batch, in this order: ``observer.before_read``, one state read,
        ``observer.before_writes`` (on a thread of its own, beside the core and the planner
        call, and finished before anything is written), the core, one planner call, the plans,
        the sequences that confirm them (with the batch's changes to the record of owed
        replans when ``shards``, each user's ``topic:partition``, is given),
        ``observer.after_writes`` (with the plans written). The observer's time before the reads
        counts in the ``read`` step; waiting for its ``before_writes`` in the ``plan`` step."""
        observer = self.observer
        started = time.perf_counter()
        if observer is not None:
            observer.before_read(events)
        user_ids = sorted({event.user_id for event in events})
        states = self.store.read_sequences(user_ids)
        after_read = time.perf_counter()
        # The pre-batch states go to the observer before anything is written, so what it
        # derives from them (the feedback log) is durable even if a write below fails. It
        # runs beside the core and the planner and is waited for before the first write:
        # the log's fsyncs (most of its time) then overlap the planner's round trips.
        pending = self._beside(observer.before_writes, events, states) if observer else None
        try:
            result = apply_batch(
                events, states, self.catalog, self.settings.sequence, self.settings.data
            )
            after_core = time.perf_counter()
            plans = self.planner.plan(result.replans) if result.replans else []
        finally:
            # Its error (then the batch fails before any write), or the core's: never a
            # batch that goes on, or is retried, while the observer still works on it.
            if pending is not None:
                pending.result()
        after_plan = time.perf_counter()
        updated = {**result.states, **confirm_plans(result.states, plans)}
        if plans:
            revisions = {plan.user_id: updated[plan.user_id].revision_us for plan in plans}
            self.store.write_plans(plans, self.catalog.describe, revisions)
        owed = owed_changes(result, updated, plans, shards) if shards is not None else None
        self.store.write_sequences(updated.values(), owed)
        finished = time.perf_counter()
        if observer is not None:
            observer.after_writes(events, plans)
        timings = BatchTimings.between(started, after_read, after_core, after_plan, finished)
        return BatchOutcome(
            stats=result.stats,
            plans=plans,
            timings=timings,
            owed=len(owed.owed) if owed else 0,
            settled=len(owed.settled) if owed else 0,
        )

    def repair(self, owed: Mapping[str, OwedMark]) -> BatchOutcome:
        """Replan users the store's record says are owed one, from their stored states.

        One state read, :func:`~plugin.core.sequence.owed_replans` (the batch's own replan
        rule), one planner call, the plans, then the confirming states together with the
        record's settlements. An entry is settled up to the revision of the state read, so one
        that a concurrent batch raised (a newer owed state) stays; a user the planner still
        cannot plan stays recorded. Repair stamps lose to any batch from the same state
        (``plugin.core.sequence``), so a repair never overwrites a newer state or plan.
        The observer sees nothing: a repair applies no events.
        """
        started = time.perf_counter()
        states = self.store.read_sequences(sorted(owed))
        after_read = time.perf_counter()
        result = owed_replans(states, self.settings.sequence)
        after_core = time.perf_counter()
        plans = self.planner.plan(result.replans) if result.replans else []
        after_plan = time.perf_counter()
        confirmed = confirm_plans(result.states, plans, repair=True)
        if plans:
            revisions = {plan.user_id: confirmed[plan.user_id].revision_us for plan in plans}
            self.store.write_plans(plans, self.catalog.describe, revisions)
        waiting = set(result.states) - set(confirmed)
        # Up to the revision read: what this repair planned (or found needing no plan) and
        # anything older. A concurrent batch's owed state is newer and keeps its entry.
        settled = {
            user_id: OwedMark(
                mark.shard,
                max(mark.revision_us, states[user_id].revision_us if user_id in states else 0),
            )
            for user_id, mark in owed.items()
            if user_id not in waiting
        }
        self.store.write_sequences(confirmed.values(), OwedChanges(settled=settled))
        finished = time.perf_counter()
        timings = BatchTimings.between(started, after_read, after_core, after_plan, finished)
        return BatchOutcome(
            stats=result.stats,
            plans=plans,
            timings=timings,
            owed=len(waiting),
            settled=len(settled),
        )
