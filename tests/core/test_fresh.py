"""Fresh transitions: the window arithmetic, the boost, and the Redis table against the
in-memory one."""

from __future__ import annotations

from datetime import timedelta

import pytest

from plugin.adapters.fresh_transitions import RedisFreshTransitions
from plugin.core.fresh import (
    FreshBoostPlanner,
    FreshTransitions,
    FreshWindow,
    boosted_plan,
    ranked_by_count,
)
from plugin.core.moves import NovelMove
from plugin.core.planning import PlanRequest, Selection, WindowTransitions
from plugin.localstack import RedisServer
from plugin.models.planner import BestOfNPlanner
from tests.support.streaming import CLUSTERS, T0, make_planner

DAY = 86_400


def moves() -> list[NovelMove]:
    t0 = T0
    return [
        NovelMove("a", (2, 1), 7, True, (2, 1), t0),
        NovelMove("b", (2, 1), 7, True, (2, 1), t0 + timedelta(days=1)),
        NovelMove("c", (2, 1), 5, True, (2, 1), t0 + timedelta(days=3)),
        NovelMove("d", (2, 3), 6, True, (2, 3), t0 + timedelta(days=3)),
        NovelMove("e", (2, 1), 9, False, (2, 1), t0 + timedelta(days=3)),  # negative: not counted
    ]


def test_recent_moves_count_most_and_old_ones_drop_out() -> None:
    window = FreshWindow(bucket_s=DAY, buckets=3, half_life_buckets=1.0, min_support=1.0)
    table = FreshTransitions(window, k=2)
    assert table.record(moves()) == 4
    at = T0 + timedelta(days=3)
    # Buckets day 3 (weight 1), day 2 (0.5), day 1 (0.25); day 0 is outside the window.
    assert table.lookup((2, 1), at) == {7: 0.25, 5: 1.0}
    # (2,) backs off to the most recent cluster alone: every move out of a history ending in 2.
    assert table.lookup((2, 9), at) == {7: 0.25, 5: 1.0, 6: 1.0}
    assert table.lookup((4,), at) == {}
    assert ranked_by_count(table.lookup((2, 9), at), frozenset({2, 9, 6})) == [5, 7]


def test_the_boost_reorders_only_the_proposed_candidates(best_of_n: BestOfNPlanner) -> None:
    request = PlanRequest("u", (2, 1), frozenset({2, 1}), T0)
    (ranking,) = best_of_n.rank([(2, 1)])
    plain = best_of_n.plan([request])[0]
    loser = plain.candidates[-1]
    boosted = boosted_plan(request, ranking, {loser: 1e6, 0: 1e9}, 1.0, "x", Selection(n=4))
    assert set(boosted.candidates) == set(plain.candidates)
    assert boosted.cluster_id == (0 if 0 in plain.candidates else loser)
    assert (
        boosted_plan(request, ranking, {}, 1.0, "x", Selection(n=4)).cluster_id == plain.cluster_id
    )


@pytest.mark.integration
def test_the_redis_table_counts_like_the_memory_one(
    redis_server: RedisServer, best_of_n: BestOfNPlanner
) -> None:
    client = redis_server.client(db=14)
    client.flushdb()
    window = FreshWindow(bucket_s=DAY, buckets=3, half_life_buckets=1.0, min_support=1.0)
    memory = FreshTransitions(window, k=2)
    redis_table = RedisFreshTransitions(client, window, k=2, prefix="t:fresh")
    memory.record(moves())
    assert redis_table.record(moves()) == 4
    at = T0 + timedelta(days=3)
    queries = [((2, 1), at), ((2, 9), at), ((4,), at), ((2, 1), at + timedelta(days=5))]
    assert redis_table.lookup_many(queries) == memory.lookup_many(queries)
    ttl = int(client.ttl(f"t:fresh:{window.bucket(at)}:2,1"))  # type: ignore[arg-type]
    assert 0 < ttl <= DAY * 4
    # The planner variant plans from the same counts in one lookup per batch.
    planner = FreshBoostPlanner(best_of_n, redis_table, n=4, weight=1.0)
    request = PlanRequest("u", (2, 1), frozenset({2, 1}), at)
    (plan,) = planner.plan([request])
    (ranking,) = best_of_n.rank([(2, 1)])
    expected = boosted_plan(
        request, ranking, memory.lookup((2, 1), at), 1.0, "x", best_of_n.selection("t")
    )
    assert plan.cluster_id == expected.cluster_id
    assert plan.model_version == "t+fresh"


def test_the_boost_keeps_the_versions_window_term() -> None:
    # Moves out of cluster 2 always go to the plain plan's last candidate, so a heavy window
    # term makes it the plan; the boost with no fresh counts must plan the same.
    request = PlanRequest("u", (2, 1), frozenset({2, 1}), T0)
    plain = make_planner().plan([request])[0]
    favoured = plain.candidates[-1]
    transitions = WindowTransitions.from_matrix(
        [
            [3.0 if (s, t) == (2, favoured) else 0.0 for t in range(CLUSTERS)]
            for s in range(CLUSTERS)
        ]
    )
    windowed = make_planner(window_weight=5.0, transitions=transitions)
    expected = windowed.plan([request])[0]
    assert expected.cluster_id == favoured != plain.cluster_id
    empty = FreshTransitions(FreshWindow(bucket_s=DAY, buckets=3, half_life_buckets=1.0), k=2)
    (boosted,) = FreshBoostPlanner(windowed, empty, n=4, weight=1.0).plan([request])
    assert boosted.cluster_id == expected.cluster_id
    assert boosted.candidates == expected.candidates
