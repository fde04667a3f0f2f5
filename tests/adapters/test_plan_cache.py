"""The plan cache on a real redis-server: exact round trips, hits, TTL, versions, precompute."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from redis.backoff import NoBackoff
from redis.retry import Retry

from plugin.adapters.plan_cache import (
    CachedPlanner,
    RankingCache,
    all_histories,
    count_all_histories,
    decode_ranking,
    encode_ranking,
    precompute,
    seen_histories,
)
from plugin.core.catalog import ClusterCatalog
from plugin.core.events import WatchEvent
from plugin.core.planning import HistoryRanking, PlanRequest, RankingPlanner, WindowTransitions
from plugin.localstack import RedisServer
from plugin.models.planner import BestOfNPlanner
from plugin.settings import CacheSettings

T0 = datetime(1998, 1, 1, tzinfo=UTC)


def requests() -> list[PlanRequest]:
    """Users sharing histories, with different novelty windows."""
    out = []
    for index in range(24):
        history = (index % 5, (index + 1) % 5)
        extra = {(index * 3) % 10, (index * 7) % 10}
        out.append(PlanRequest(f"u{index}", history, frozenset(history) | extra, T0))
    return out


def test_a_ranking_survives_encoding_exactly(best_of_n: BestOfNPlanner) -> None:
    (ranking,) = best_of_n.rank([(3, 1)])
    assert decode_ranking(encode_ranking(ranking)) == ranking


def test_an_infinite_log_probability_survives_encoding_too() -> None:
    # json.dumps spells it -Infinity, which is not standard JSON: the decoder falls back.
    ranking = HistoryRanking((1, 2), (3, 4), (-math.inf, -0.25), (0.5, 1.0))
    assert decode_ranking(encode_ranking(ranking)) == ranking


def test_history_enumeration() -> None:
    histories = list(all_histories(5, 2))
    assert len(histories) == count_all_histories(5, 2) == 5 + 5 * 4
    assert (3,) in histories and (3, 1) in histories and (1, 1) not in histories


def test_seen_histories_follow_the_core_rules(
    catalog: ClusterCatalog, event: Callable[..., WatchEvent]
) -> None:
    events = [event(1, 1), event(2, 2), event(3, 2), event(4, 1), event(5, 7, user="u2")]
    assert seen_histories(events, catalog, k=2, window=4) == [(1,), (2, 1), (1, 2), (7,)]


def test_the_frequency_planner_cannot_be_cached() -> None:
    from plugin.core.frequency import TransitionCounts, TransitionFrequencyPlanner

    class Tiny:
        version = "v"

        def __len__(self) -> int:
            return 3

    baseline = TransitionFrequencyPlanner(TransitionCounts(2), Tiny(), n=2)  # type: ignore[arg-type]
    assert not isinstance(baseline, RankingPlanner)


@pytest.fixture
def cache(redis_server: RedisServer) -> Iterator[RankingCache]:
    client = redis_server.client(db=2)
    client.flushdb()
    yield RankingCache(client, CacheSettings(ttl_s=60), temperature=1.5, seed=7)
    client.flushdb()


@pytest.mark.integration
def test_cached_plans_equal_uncached_plans_and_hits_are_counted(
    cache: RankingCache, planner_factory: Callable[..., BestOfNPlanner]
) -> None:
    planner = planner_factory()
    cached = CachedPlanner(planner_factory(), cache, n=4)
    batch = requests()
    assert cached.plan(batch) == planner.plan(batch)
    # 5 distinct histories among 24 requests: the first batch ranks each once.
    assert (cached.stats.hits, cached.stats.misses, cached.stats.histories_ranked) == (0, 24, 5)
    assert cached.plan(batch) == planner.plan(batch)
    assert (cached.stats.hits, cached.stats.misses, cached.stats.rank_calls) == (24, 24, 1)
    assert cached.stats.hit_rate == 0.5
    assert cache.size("t") == 5


@pytest.mark.integration
def test_keys_carry_the_model_version_and_expire(
    cache: RankingCache, planner_factory: Callable[..., BestOfNPlanner]
) -> None:
    old = CachedPlanner(planner_factory(version="v1"), cache, n=4)
    new = CachedPlanner(planner_factory(seed=8, version="v2"), cache, n=4)
    batch = requests()[:3]
    old.plan(batch)
    plans = new.plan(batch)
    assert new.stats.hits == 0, "a new model version never reads the old version's rankings"
    assert {p.model_version for p in plans} == {"v2"}
    key = cache.key("v2", batch[0].history)
    assert key == "explore:ranking:v2:t1.5:s7:0,1"
    ttl = int(cache.client.ttl(key))  # type: ignore[arg-type]
    assert 0 < ttl <= 60


@pytest.mark.integration
def test_precompute_fills_every_history_and_then_everything_hits(
    cache: RankingCache, planner_factory: Callable[..., BestOfNPlanner]
) -> None:
    planner = planner_factory()
    report = precompute(planner, cache, all_histories(10, 2), batch_size=32, source="all")
    assert report.written == report.histories == 100
    assert report.rank_calls == 4
    cached = CachedPlanner(planner_factory(), cache, n=4)
    batch = requests()
    assert cached.plan(batch) == planner.plan(batch)
    assert cached.stats.hit_rate == 1.0 and cached.stats.rank_calls == 0


@pytest.mark.integration
def test_a_redis_outage_degrades_to_planning_without_the_cache(
    planner_factory: Callable[..., BestOfNPlanner], tmp_path: Any
) -> None:
    from plugin.localstack import free_port

    dead = RedisServer(port=free_port()).client(
        socket_connect_timeout=0.2, socket_timeout=0.2, retry=Retry(NoBackoff(), 0)
    )
    cached = CachedPlanner(planner_factory(), RankingCache(dead, CacheSettings(), 1.5, 7), n=4)
    batch = requests()[:4]
    assert cached.plan(batch) == planner_factory().plan(batch)
    assert cached.stats.errors == 2 and cached.stats.misses == 4


@pytest.mark.integration
def test_a_cache_that_keeps_n_plus_w_clusters_plans_exactly_as_the_planner(
    redis_server: RedisServer, planner_factory: Callable[..., BestOfNPlanner]
) -> None:
    """n + W clusters per ranking hold every plan whose excluded set has at most W clusters."""
    client = redis_server.client(db=3)
    client.flushdb()
    n, window = 4, 4  # requests() exclude up to 4 clusters of the 10
    cache = RankingCache(client, CacheSettings(ttl_s=60), 1.5, 7, keep=n + window)
    planner = planner_factory()
    batch = requests()
    assert max(len(r.excluded) for r in batch) <= window
    precompute(planner, cache, all_histories(10, 2), batch_size=64, source="all")
    cached = CachedPlanner(planner_factory(), cache, n=n)
    assert cached.plan(batch) == planner.plan(batch)
    assert cached.stats.hit_rate == 1.0
    stored = cache.get_many("t", [(0, 1)])[0]
    assert stored is not None and len(stored.order) == n + window < 10
    assert cache.key("t", (0, 1)) == "explore:ranking:t:t1.5:s7:k8:0,1"
    client.flushdb()


@pytest.mark.integration
def test_a_cache_too_short_for_the_chosen_n_refuses_instead_of_planning_worse(
    redis_server: RedisServer, planner_factory: Callable[..., BestOfNPlanner]
) -> None:
    """A version that chose an n the cache was not sized for: a clear error, not a plan
    picked from fewer candidates than the version asks for."""
    client = redis_server.client(db=3)
    client.flushdb()
    cache = RankingCache(client, CacheSettings(ttl_s=60), 1.5, 7, keep=5)
    batch = requests()
    precompute(planner_factory(), cache, all_histories(10, 2), batch_size=64, source="all")
    with pytest.raises(ValueError, match=r"selection\.candidates"):
        CachedPlanner(planner_factory(), cache, n=4).plan(batch)
    client.flushdb()


@pytest.mark.integration
def test_cached_plans_apply_the_window_term_exactly_as_the_planner(
    cache: RankingCache, planner_factory: Callable[..., BestOfNPlanner]
) -> None:
    """The window term is per user, applied at selection: the cached ranking is the same,
    and the plan selected from it equals the planner's (which the term changes here)."""
    # A window model where users who were in cluster c go to c + 5: the term pulls plans there.
    matrix = [[3.0 if to == (source + 5) % 10 else 0.0 for to in range(10)] for source in range(10)]
    window = {"window_weight": 2.0, "transitions": WindowTransitions.from_matrix(matrix)}
    planner = planner_factory(**window)
    cached = CachedPlanner(planner_factory(**window), cache, n=4)
    batch = requests()
    plans = planner.plan(batch)
    assert cached.plan(batch) == plans
    assert cached.plan(batch) == plans and cached.stats.hits == len(batch)
    assert plans != planner_factory().plan(batch)
    assert all(p.cluster_id not in r.excluded for p, r in zip(plans, batch, strict=True))
