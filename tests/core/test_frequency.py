"""The transition-frequency planner: counting novel transitions, back-off, novelty of plans."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from plugin.core.catalog import ClusterCatalog, InterestCluster, ParentCluster
from plugin.core.events import WatchEvent
from plugin.core.frequency import TransitionFrequencyPlanner, count_novel_transitions
from plugin.core.planning import PlanningError, PlanRequest

T0 = datetime(1998, 1, 1, tzinfo=UTC)
CATALOG = ClusterCatalog(
    clusters=tuple(InterestCluster(c, 0, (f"k{c}",), (f"i{c}",), 1) for c in range(6)),
    parents=(ParentCluster(0, ("all",), tuple(range(6))),),
    item_to_cluster={f"i{c}": c for c in range(6)},
)


def watch(user: str, clusters: list[int]) -> list[WatchEvent]:
    return [
        WatchEvent(
            event_id=f"{user}-{n}",
            user_id=user,
            item_id=f"i{c}",
            event_time=T0 + timedelta(minutes=n),
            rating=5,
        )
        for n, c in enumerate(clusters)
    ]


EVENTS = (
    watch("a", [0, 1, 2])
    + watch("b", [0, 1, 2])
    + watch("c", [0, 1, 3])
    + watch("d", [1, 0, 4, 0])  # the final 0 is not novel for d: inside its window
)


def request(history: tuple[int, ...], excluded: set[int] | None = None) -> PlanRequest:
    return PlanRequest("u", history, frozenset(excluded if excluded is not None else history), T0)


def test_counts_only_novel_transitions_keyed_by_recent_history() -> None:
    counts = count_novel_transitions(EVENTS, CATALOG, k=2, window=10)
    assert counts.by_history[(1, 0)] == {2: 2, 3: 1}
    assert counts.by_history[(1,)] == {2: 2, 3: 1, 0: 1}
    assert counts.by_history[(0, 1)] == {4: 1}
    assert (4,) not in counts.by_history  # d's 4 -> 0 returns inside its window: not novel
    assert counts.transitions == 2 + 2 + 2 + 2  # d makes 3 moves, 2 of them novel


def test_plans_most_frequent_novel_successor() -> None:
    planner = TransitionFrequencyPlanner(
        count_novel_transitions(EVENTS, CATALOG, k=2, window=10), CATALOG, n=4
    )
    (plan,) = planner.plan([request((1, 0))])
    assert plan.cluster_id == 2
    assert plan.candidates[:2] == (2, 3)
    assert plan.scores[0] == pytest.approx(2 / 3)
    assert plan.model_version.startswith("frequency-")


def test_excluded_clusters_are_never_planned() -> None:
    planner = TransitionFrequencyPlanner(
        count_novel_transitions(EVENTS, CATALOG, k=2, window=10), CATALOG, n=4
    )
    (plan,) = planner.plan([request((1, 0), excluded={1, 0, 2})])
    assert plan.cluster_id == 3
    assert not set(plan.candidates) & {0, 1, 2}


def test_unseen_history_backs_off_to_its_latest_cluster_then_popularity() -> None:
    planner = TransitionFrequencyPlanner(
        count_novel_transitions(EVENTS, CATALOG, k=2, window=10), CATALOG, n=4
    )
    (suffix,) = planner.plan([request((1, 5))])  # (1, 5) unseen; (1,) was followed by 2 twice
    assert suffix.cluster_id == 2
    (popular,) = planner.plan([request((5,))])  # nothing ever followed 5
    assert popular.cluster_id in {1, 2}  # the most frequent novel targets overall
    assert popular.scores == tuple(sorted(popular.scores, reverse=True))


def test_everything_excluded_is_an_error_naming_the_user() -> None:
    planner = TransitionFrequencyPlanner(
        count_novel_transitions(EVENTS, CATALOG, k=2, window=10), CATALOG, n=4
    )
    with pytest.raises(PlanningError, match="user u"):
        planner.plan([request((0,), excluded=set(range(6)))])
