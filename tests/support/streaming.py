"""The streaming and feedback tests' world: a ten-cluster catalog, an in-memory store, planners."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import torch

from plugin.core.catalog import ClusterCatalog, InterestCluster, ParentCluster
from plugin.core.events import WatchEvent
from plugin.core.planning import ExplorationPlan, WindowTransitions
from plugin.core.ports import OwedChanges
from plugin.core.sequence import UserClusterSequence
from plugin.models.alignment import AlignmentConfig, AlignmentModel
from plugin.models.novelty import NoveltyConfig, NoveltyModel
from plugin.models.planner import BestOfNPlanner

T0 = datetime(1998, 1, 1, tzinfo=UTC)
CLUSTERS = 10


def ten_clusters() -> ClusterCatalog:
    """Item ``i<c>`` lives in cluster c, for c in 0..9."""
    return ClusterCatalog(
        clusters=tuple(InterestCluster(c, 0, (f"k{c}",), (f"i{c}",), 1) for c in range(CLUSTERS)),
        parents=(ParentCluster(0, ("all",), tuple(range(CLUSTERS))),),
        item_to_cluster={f"i{c}": c for c in range(CLUSTERS)},
    )


class MemoryStore:
    """A :class:`~plugin.core.ports.SequencePlanStore` in dicts, counting its calls."""

    def __init__(self) -> None:
        self.sequences: dict[str, UserClusterSequence] = {}
        self.plans: dict[str, ExplorationPlan] = {}
        self.calls: list[str] = []
        self.fail_writes = 0

    def read_sequences(self, user_ids: Sequence[str]) -> dict[str, UserClusterSequence]:
        self.calls.append("read_sequences")
        return {u: self.sequences[u] for u in user_ids if u in self.sequences}

    def write_sequences(
        self, states: Iterable[UserClusterSequence], owed: OwedChanges | None = None
    ) -> None:
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
        return {u: self.plans[u] for u in user_ids if u in self.plans}

    def write_catalog(self, catalog: ClusterCatalog) -> None:
        pass


def make_planner(
    n: int = 4,
    seed: int = 7,
    version: str = "t",
    window_weight: float = 0.0,
    transitions: WindowTransitions | None = None,
) -> BestOfNPlanner:
    torch.manual_seed(0)
    novelty = NoveltyModel(
        NoveltyConfig(
            n_clusters=CLUSTERS, n_parents=2, parent_of=tuple(c % 2 for c in range(CLUSTERS))
        )
    )
    alignment = AlignmentModel(AlignmentConfig(n_clusters=CLUSTERS))
    return BestOfNPlanner(
        novelty,
        alignment,
        n=n,
        temperature=1.5,
        seed=seed,
        model_version=version,
        window_weight=window_weight,
        transitions=transitions,
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
