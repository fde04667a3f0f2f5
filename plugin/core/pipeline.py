"""One batch through the whole path: read state, run the core, plan, write plans, write state.

Every driver (embedded replay, Faust worker, benchmarks) calls :meth:`BatchProcessor.process`.
The write order is what makes a crash safe: plans are written before the states that confirm
them, and a driver commits its input offsets only after ``process`` returns.

The processor's only hooks are those of the optional :class:`~plugin.core.ports.BatchObserver`
it is built with (the feedback loop): before the state read, between the read and the first
write, and after the writes. Nothing wraps its store or planner after it is built.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from plugin.core.catalog import ClusterCatalog
from plugin.core.events import WatchEvent
from plugin.core.planning import ExplorationPlan, Planner
from plugin.core.ports import BatchObserver, SequencePlanStore
from plugin.core.sequence import BatchStats, apply_batch, confirm_plans
from plugin.settings import Settings


@dataclass
class BatchTimings:
    """Seconds spent in each step, summed over batches."""

    read: float = 0.0
    core: float = 0.0
    plan: float = 0.0
    write: float = 0.0

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

    def process(self, events: Sequence[WatchEvent]) -> BatchOutcome:
        """One batch, in this order: ``observer.before_read``, one state read,
        ``observer.before_writes``, the core, one planner call, the plans, the sequences that
        confirm them, ``observer.after_writes``. The observer's time before the writes counts
        in the ``read`` step."""
        timings = BatchTimings()
        observer = self.observer
        started = time.perf_counter()
        if observer is not None:
            observer.before_read(events)
        user_ids = sorted({event.user_id for event in events})
        states = self.store.read_sequences(user_ids)
        if observer is not None:
            # The pre-batch states, before anything is written: what the observer derives
            # from them (the feedback log) is durable even if a write below fails.
            observer.before_writes(events, states)
        after_read = time.perf_counter()
        result = apply_batch(
            events, states, self.catalog, self.settings.sequence, self.settings.data
        )
        after_core = time.perf_counter()
        plans = self.planner.plan(result.replans) if result.replans else []
        after_plan = time.perf_counter()
        updated = {**result.states, **confirm_plans(result.states, plans)}
        if plans:
            revisions = {plan.user_id: updated[plan.user_id].revision_us for plan in plans}
            self.store.write_plans(plans, self.catalog.describe, revisions)
        self.store.write_sequences(updated.values())
        finished = time.perf_counter()
        if observer is not None:
            observer.after_writes(events)
        timings.read = after_read - started
        timings.core = after_core - after_read
        timings.plan = after_plan - after_core
        timings.write = finished - after_plan
        return BatchOutcome(stats=result.stats, plans=plans, timings=timings)
