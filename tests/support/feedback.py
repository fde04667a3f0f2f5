"""The feedback tests' helpers: a store with aggregates, a log in memory, plans and records."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from plugin.core.feedback import FeedbackAggregate, FeedbackRecord, merge_aggregates
from plugin.core.planning import ExplorationPlan
from tests.support.streaming import T0
from tests.support.streaming import MemoryStore as StreamMemoryStore


class MemoryStore(StreamMemoryStore):
    """The streaming tests' store plus feedback aggregates, counting plan reads too (the ports
    the feedback loop uses)."""

    def __init__(self) -> None:
        super().__init__()
        self.aggregates: dict[str, FeedbackAggregate] = {}

    def read_plans(self, user_ids: Sequence[str]) -> dict[str, ExplorationPlan]:
        self.calls.append("read_plans")
        return super().read_plans(user_ids)

    def read_feedback_aggregates(self, keys: Sequence[str]) -> dict[str, FeedbackAggregate]:
        return {k: self.aggregates[k] for k in keys if k in self.aggregates}

    def add_feedback_aggregates(self, rows: Sequence[FeedbackAggregate]) -> None:
        stored = self.read_feedback_aggregates([row.key for row in rows])
        self.write_feedback_aggregates(merge_aggregates(stored, {row.key: row for row in rows}))

    def write_feedback_aggregates(self, rows: Sequence[FeedbackAggregate]) -> None:
        for row in rows:  # like Feast's Redis store: a row not newer than the stored is dropped
            stored = self.aggregates.get(row.key)
            if stored is None or row.revision_us > stored.revision_us:
                self.aggregates[row.key] = row


class MemoryLog:
    """A :class:`~plugin.core.feedback.FeedbackSink` in a list (every append kept, duplicates
    too)."""

    def __init__(self) -> None:
        self.appended: list[list[FeedbackRecord]] = []

    def append(self, records: Sequence[FeedbackRecord]) -> None:
        self.appended.append(list(records))

    def settle(self) -> None:
        """Nothing is left to the background: every append is kept at once."""

    @property
    def records(self) -> list[FeedbackRecord]:
        return [r for batch in self.appended for r in batch]


def plan_for(
    user: str, history: tuple[int, ...], cluster: int, minute: int = 0, version: str = "t"
) -> ExplorationPlan:
    others = tuple(c for c in (9, 8, 6, 5) if c != cluster and c not in history)[:3]
    return ExplorationPlan(
        user_id=user,
        history=history,
        cluster_id=cluster,
        candidates=(cluster, *others),
        scores=(1.0, 0.5, 0.2, 0.1),
        model_version=version,
        as_of=T0 + timedelta(minutes=minute),
    )


def record(
    user: str,
    n: int,
    history: tuple[int, ...],
    planned: int,
    engaged: int,
    positive: bool,
    catalog_version: str = "cat",
    novel: bool = True,
    source: str = "stream",
) -> FeedbackRecord:
    """A feedback record answering a plan at minute ``n``."""
    return FeedbackRecord(
        user_id=user,
        event_id=f"e{n:04d}",
        item_id=f"i{engaged}",
        event_time=T0 + timedelta(minutes=n),
        history=list(history),
        planned_cluster=planned,
        engaged_cluster=engaged,
        accepted=planned == engaged,
        positive=positive,
        novel=novel,
        planned_novel=True,
        rating=5.0 if positive else 1.0,
        model_version="best-of-n-v1-cat",
        catalog_version=catalog_version,
        planned_at=T0 + timedelta(minutes=n - 1),
        source=source,
    )
