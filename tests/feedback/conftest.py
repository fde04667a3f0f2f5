"""Fixtures of the feedback tests: a ten-cluster catalog, an in-memory store, plans, records."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest

from plugin.core.feedback import FeedbackAggregate, FeedbackRecord
from plugin.core.planning import ExplorationPlan
from plugin.settings import Settings, load_settings
from tests.streams.conftest import CLUSTERS, T0, best_of_n, catalog, make_planner, watch
from tests.streams.conftest import MemoryStore as StreamMemoryStore

__all__ = ["CLUSTERS", "T0", "best_of_n", "catalog", "make_planner", "watch"]


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

    @property
    def records(self) -> list[FeedbackRecord]:
        return [r for batch in self.appended for r in batch]


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def memory_log() -> MemoryLog:
    return MemoryLog()


@pytest.fixture
def feedback_settings(tmp_path: Path) -> Settings:
    return load_settings(
        var_dir=tmp_path / "var",
        sequence={"history_length": 2, "novelty_window": 4},
        planner={"candidates": 4},
        worker={"metrics_port": 0, "plan_timeout_s": 5.0},
        feedback={"fresh": False},
    )


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


class Kit:
    """Helpers for test modules (importlib mode cannot import a conftest)."""

    t0 = T0
    clusters = CLUSTERS
    watch = staticmethod(watch)
    plan_for = staticmethod(plan_for)
    record = staticmethod(record)
    make_planner = staticmethod(make_planner)
    MemoryStore = MemoryStore
    MemoryLog = MemoryLog


@pytest.fixture(scope="session")
def kit() -> type[Kit]:
    return Kit
