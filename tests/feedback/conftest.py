"""Fixtures of the feedback tests: a ten-cluster catalog, an in-memory store, plans, records."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import torch

from plugin.catalog import ClusterCatalog, InterestCluster, ParentCluster
from plugin.events import WatchEvent
from plugin.feedback import FeedbackAggregate, FeedbackRecord
from plugin.models.alignment import AlignmentConfig, AlignmentModel
from plugin.models.novelty import NoveltyConfig, NoveltyModel
from plugin.models.planner import BestOfNPlanner
from plugin.planning import ExplorationPlan
from plugin.sequence import UserClusterSequence
from plugin.settings import Settings, load_settings

T0 = datetime(1998, 1, 1, tzinfo=UTC)
CLUSTERS = 10


@pytest.fixture
def catalog() -> ClusterCatalog:
    """Item ``i<c>`` lives in cluster c, for c in 0..9."""
    return ClusterCatalog(
        clusters=tuple(InterestCluster(c, 0, (f"k{c}",), (f"i{c}",), 1) for c in range(CLUSTERS)),
        parents=(ParentCluster(0, ("all",), tuple(range(CLUSTERS))),),
        item_to_cluster={f"i{c}": c for c in range(CLUSTERS)},
    )


class MemoryStore:
    """Sequences, plans and feedback aggregates in dicts (the ports the feedback loop uses)."""

    def __init__(self) -> None:
        self.sequences: dict[str, UserClusterSequence] = {}
        self.plans: dict[str, ExplorationPlan] = {}
        self.aggregates: dict[str, FeedbackAggregate] = {}
        self.calls: list[str] = []
        self.fail_writes = 0

    def read_sequences(self, user_ids: Sequence[str]) -> dict[str, UserClusterSequence]:
        self.calls.append("read_sequences")
        return {u: self.sequences[u] for u in user_ids if u in self.sequences}

    def write_sequences(self, states: Iterable[UserClusterSequence]) -> None:
        self.calls.append("write_sequences")
        if self.fail_writes:
            self.fail_writes -= 1
            raise ConnectionError("store down")
        self.sequences.update({s.user_id: s for s in states})

    def write_plans(
        self,
        plans: Sequence[ExplorationPlan],
        describe: Callable[[int], str],
        revisions: Mapping[str, int] | None = None,
    ) -> None:
        self.calls.append("write_plans")
        self.plans.update({p.user_id: p for p in plans})

    def read_plans(self, user_ids: Sequence[str]) -> dict[str, ExplorationPlan]:
        self.calls.append("read_plans")
        return {u: self.plans[u] for u in user_ids if u in self.plans}

    def write_catalog(self, catalog: ClusterCatalog) -> None:
        pass

    def read_feedback_aggregates(self, keys: Sequence[str]) -> dict[str, FeedbackAggregate]:
        return {k: self.aggregates[k] for k in keys if k in self.aggregates}

    def write_feedback_aggregates(self, rows: Sequence[FeedbackAggregate]) -> None:
        for row in rows:  # like Feast's Redis store: a row not newer than the stored is dropped
            stored = self.aggregates.get(row.key)
            if stored is None or row.revision_us > stored.revision_us:
                self.aggregates[row.key] = row


class MemoryLog:
    """A :class:`~plugin.feedback.FeedbackSink` in a list (every append kept, duplicates too)."""

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


def make_planner(n: int = 4, version: str = "t") -> BestOfNPlanner:
    torch.manual_seed(0)
    novelty = NoveltyModel(
        NoveltyConfig(
            n_clusters=CLUSTERS, n_parents=2, parent_of=tuple(c % 2 for c in range(CLUSTERS))
        )
    )
    alignment = AlignmentModel(AlignmentConfig(n_clusters=CLUSTERS))
    return BestOfNPlanner(novelty, alignment, n=n, temperature=1.5, seed=7, model_version=version)


@pytest.fixture
def best_of_n() -> BestOfNPlanner:
    return make_planner()


@pytest.fixture
def feedback_settings(tmp_path: Path) -> Settings:
    return load_settings(
        var_dir=tmp_path / "var",
        sequence={"history_length": 2, "novelty_window": 4},
        planner={"candidates": 4},
        worker={"metrics_port": 0, "plan_timeout_s": 5.0},
        feedback={"fresh": False},
    )


def watch(n: int, cluster: int, user: str = "u1", rating: float = 5, **extra: Any) -> WatchEvent:
    """A watch of cluster ``cluster`` at minute ``n`` (rating 5: positive)."""
    return WatchEvent(
        event_id=f"e{n:04d}",
        user_id=user,
        item_id=f"i{cluster}",
        event_time=T0 + timedelta(minutes=n),
        rating=rating,
        **extra,
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
