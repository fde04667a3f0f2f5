"""Deferred replans on the real Feast Redis profile: recorded with the states, repaired without a
new event, never over a newer state, and cached histories planned even while the planner fails."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from plugin.adapters.feast_store import FeastStore
from plugin.adapters.plan_cache import CachedPlanner, RankingCache
from plugin.core.catalog import ClusterCatalog
from plugin.core.events import WatchEvent
from plugin.core.planning import ExplorationPlan, HistoryRanking, PlanRequest
from plugin.core.sequence import apply_batch
from plugin.localstack import RedisServer
from plugin.models.planner import BestOfNPlanner
from plugin.observability.metrics import WorkerMetrics
from plugin.settings import CacheSettings, Settings, load_settings
from plugin.streaming.deadline import DeadlinePlanner
from plugin.streaming.worker import Record, StreamWorker
from plugin.wiring import build_processor, online_store
from tests.support.streaming import MemoryStore

pytestmark = pytest.mark.integration

SHARD = "watch-events:0"


class FlakyPlanner:
    """A planner that fails every call while ``down``, like Triton stopped."""

    def __init__(self, planner: BestOfNPlanner) -> None:
        self.planner = planner
        self.down = False
        self.calls = 0

    @property
    def model_version(self) -> str:
        return self.planner.model_version

    def _check(self) -> None:
        self.calls += 1
        if self.down:
            raise ConnectionError("planner down")

    def rank(self, histories: Sequence[tuple[int, ...]]) -> list[HistoryRanking]:
        self._check()
        return self.planner.rank(histories)

    def plan(self, requests: Sequence[PlanRequest]) -> list[ExplorationPlan]:
        self._check()
        return self.planner.plan(requests)


def record(event: WatchEvent, offset: int, partition: int = 0) -> Record:
    value = event.model_dump_json().encode()
    return Record("watch-events", partition, offset, event.user_id.encode(), value, time.time())


@pytest.fixture
def redis_settings(
    stream_settings: Settings, redis_server: RedisServer, tmp_path: Path
) -> Settings:
    redis_server.client(db=7).flushdb()
    return load_settings(
        **{
            **stream_settings.model_dump(),
            "redis": {"host": redis_server.host, "port": redis_server.port, "db": 7},
            "feast": {"online_store": "redis", "registry_path": tmp_path / "registry.db"},
            "worker": {**stream_settings.worker.model_dump(), "repair_batch": 2},
        }
    )


def make_worker(
    catalog: ClusterCatalog, planner: Any, settings: Settings
) -> tuple[StreamWorker, FeastStore]:
    store = online_store(settings, catalog)
    metrics = WorkerMetrics()
    deadline = DeadlinePlanner(planner, settings.worker.plan_timeout_s, metrics)
    processor = build_processor(settings, catalog, deadline, store)
    worker = StreamWorker(processor, catalog, settings, metrics, deadline, owed=store)
    worker.assigned = [SHARD]
    return worker, store


def reference(
    catalog: ClusterCatalog, planner: BestOfNPlanner, settings: Settings, events: list[WatchEvent]
) -> MemoryStore:
    """The same events through the core with a planner that never fails."""
    memory = MemoryStore()
    build_processor(settings, catalog, planner, memory).process(events)
    return memory


def test_deferred_replans_are_recorded_and_repaired_without_a_new_event(
    catalog: ClusterCatalog,
    planner_factory: Callable[..., BestOfNPlanner],
    redis_settings: Settings,
    event: Callable[..., WatchEvent],
) -> None:
    flaky = FlakyPlanner(planner_factory())
    worker, store = make_worker(catalog, flaky, redis_settings)
    users = [f"u{n}" for n in range(5)]
    events = [event(n, (n + i) % 10, user=u) for i, u in enumerate(users) for n in (1, 2)]
    flaky.down = True
    worker.handle([record(e, offset) for offset, e in enumerate(events)])
    assert store.count_owed([SHARD]) == len(users)
    assert store.read_plans(users) == {}
    # A round while the planner is still down plans nobody and keeps everyone recorded.
    report = worker.repair()
    assert report is not None and report.planned == 0 and report.still_owed == 2
    assert store.count_owed([SHARD]) == len(users)

    flaky.down = False
    planned = 0
    while (report := worker.repair()) is not None:
        planned += report.planned
        assert len(report.outbound) == report.planned
    assert planned == len(users)  # rounds of repair_batch=2: 2, 2, 1
    assert store.count_owed([SHARD]) == 0
    expected = reference(catalog, planner_factory(), redis_settings, events)
    assert store.read_plans(users) == expected.plans
    stored = store.read_sequences(users)
    assert all(stored[u].plan_is_current(2) for u in users)
    assert {u: s.planned_history for u, s in stored.items()} == {
        u: s.planned_history for u, s in expected.sequences.items()
    }
    # Nothing owed is nothing to do.
    assert worker.repair() is None


def test_only_the_partitions_a_worker_owns_are_repaired(
    catalog: ClusterCatalog,
    planner_factory: Callable[..., BestOfNPlanner],
    redis_settings: Settings,
    event: Callable[..., WatchEvent],
) -> None:
    flaky = FlakyPlanner(planner_factory())
    worker, store = make_worker(catalog, flaky, redis_settings)
    flaky.down = True
    worker.handle([record(event(1, 1, user="a"), 0, 0), record(event(1, 2, user="b"), 0, 1)])
    assert store.read_owed(["watch-events:0", "watch-events:1"], 10).keys() == {"a", "b"}
    flaky.down = False
    worker.assigned = ["watch-events:1", "other-topic:0"]
    report = worker.repair()
    assert report is not None and report.planned == 1
    assert set(store.read_plans(["a", "b"])) == {"b"}
    assert store.read_owed(["watch-events:0", "watch-events:1"], 10).keys() == {"a"}


def test_a_repair_never_overwrites_a_newer_state_or_plan(
    catalog: ClusterCatalog,
    planner_factory: Callable[..., BestOfNPlanner],
    redis_settings: Settings,
    event: Callable[..., WatchEvent],
) -> None:
    flaky = FlakyPlanner(planner_factory())
    worker, store = make_worker(catalog, flaky, redis_settings)
    flaky.down = True
    first = event(1, 1)
    worker.handle([record(first, 0)])
    owed = store.read_owed([SHARD], 10)
    assert set(owed) == {"u1"}

    # A batch lands between the repair's read of the record and its writes, and its replan is
    # deferred again: the repair, from the older state, must change nothing it wrote.
    newer = event(2, 3)
    worker.handle([record(newer, 1)])
    after_batch = store.read_sequences(["u1"])["u1"]
    flaky.down = False
    outcome = worker.processor.repair(owed)
    state = store.read_sequences(["u1"])["u1"]
    assert state.last_event_id == newer.event_id and state.recent_clusters == (3, 1)
    # The repair planned the state it read (the newer one) and confirmed it.
    assert [p.history for p in outcome.plans] == [(3, 1)]
    assert state.planned_history == (3, 1)
    assert state.revision_us > after_batch.revision_us
    assert store.count_owed([SHARD]) == 0

    # The other order: a batch that read a state before a repair wrote its confirmation must
    # still win, whatever its events' times (same second here).
    flaky.down = True
    same_second = event(3, 5)
    worker.handle([record(same_second, 2)])
    before = store.read_sequences(["u1"])
    flaky.down = False
    worker.processor.repair(store.read_owed([SHARD], 10))
    repaired = store.read_sequences(["u1"])["u1"]
    assert repaired.plan_is_current(2)
    late = event(4, 7).model_copy(update={"event_time": same_second.event_time})
    result = apply_batch([late], before, catalog, redis_settings.sequence, redis_settings.data)
    assert result.states["u1"].revision_us > repaired.revision_us
    store.write_sequences(result.states.values())
    assert store.read_sequences(["u1"])["u1"].last_event_id == late.event_id


def test_a_failing_or_late_planner_still_plans_the_cached_histories(
    catalog: ClusterCatalog,
    planner_factory: Callable[..., BestOfNPlanner],
    redis_server: RedisServer,
    event: Callable[..., WatchEvent],
    stream_settings: Settings,
) -> None:
    client = redis_server.client(db=8)
    client.flushdb()
    flaky = FlakyPlanner(planner_factory())
    cached = CachedPlanner(flaky, RankingCache(client, CacheSettings(ttl_s=60), 1.5, 7), n=4)
    deadline = DeadlinePlanner(cached, 2.0, WorkerMetrics(), fallback=cached.plan_cached)
    t = event(1, 1).event_time
    warm = [PlanRequest("w", (1, 2), frozenset({1, 2}), t)]
    assert len(deadline.plan(warm)) == 1
    hit = PlanRequest("hit", (1, 2), frozenset({1, 2, 7}), t)
    miss = PlanRequest("miss", (4, 5), frozenset({4, 5}), t)

    flaky.down = True
    plans = deadline.plan([hit, miss])
    assert [p.user_id for p in plans] == ["hit"]
    assert plans == planner_factory().plan([hit])
    assert deadline.deferred == 1 and cached.stats.planned_without_planner == 1

    # Late rather than failing: the hit is planned at once, the miss deferred.
    flaky.down = False
    slow = DeadlinePlanner(_Slow(cached, 1.0), 0.2, fallback=cached.plan_cached)
    started = time.perf_counter()
    plans = slow.plan([hit, miss])
    assert time.perf_counter() - started < 0.9
    assert [p.user_id for p in plans] == ["hit"] and slow.deferred == 1
    wait_until = time.monotonic() + 5
    while not slow.healthy and time.monotonic() < wait_until:  # the late call answers
        time.sleep(0.05)
    assert slow.healthy
    slow.close()


class _Slow:
    def __init__(self, planner: CachedPlanner, seconds: float) -> None:
        self.planner = planner
        self.seconds = seconds

    @property
    def model_version(self) -> str:
        return self.planner.model_version

    def plan(self, requests: Sequence[PlanRequest]) -> list[ExplorationPlan]:
        time.sleep(self.seconds)
        return self.planner.plan(requests)


def test_a_batch_written_while_a_repair_plans_wins_over_the_repair(
    catalog: ClusterCatalog,
    planner_factory: Callable[..., BestOfNPlanner],
    redis_settings: Settings,
    event: Callable[..., WatchEvent],
) -> None:
    flaky = FlakyPlanner(planner_factory())
    repairer, store = make_worker(catalog, flaky, redis_settings)
    # Another worker (one that took the partition over) on its own store client.
    other, _ = make_worker(catalog, FlakyPlanner(planner_factory()), redis_settings)
    other_planner = other.processor.planner.planner  # type: ignore[attr-defined]
    flaky.down = True
    repairer.handle([record(event(1, 1), 0)])
    newer = event(2, 4).model_copy(update={"event_time": event(1, 1).event_time})
    read = store.read_sequences

    def read_then_race(user_ids: Sequence[str]) -> dict[str, Any]:
        states = read(user_ids)
        other_planner.down = True  # its replan is deferred too: the user stays owed
        other.handle([record(newer, 1)])
        return states

    store.read_sequences = read_then_race  # type: ignore[method-assign]
    flaky.down = False
    outcome = repairer.processor.repair(store.read_owed([SHARD], 10))
    store.read_sequences = read  # type: ignore[method-assign]
    assert [p.history for p in outcome.plans] == [(1,)]
    state = store.read_sequences(["u1"])["u1"]
    assert state.last_event_id == newer.event_id and state.recent_clusters == (4, 1)
    assert not state.plan_is_current(2)
    # The newer state is still owed: the next round plans it.
    assert set(store.read_owed([SHARD], 10)) == {"u1"}
    report = repairer.repair()
    assert report is not None and report.planned == 1
    assert store.read_plans(["u1"])["u1"].history == (4, 1)
    assert store.read_sequences(["u1"])["u1"].plan_is_current(2)
    assert store.count_owed([SHARD]) == 0
