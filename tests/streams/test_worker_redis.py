"""The worker's batches on the real Feast Redis profile: batch boundaries must not lose state."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from plugin.adapters.feast_store import FeastStore
from plugin.core.catalog import ClusterCatalog
from plugin.core.events import WatchEvent
from plugin.localstack import RedisServer
from plugin.models.planner import BestOfNPlanner
from plugin.observability.metrics import WorkerMetrics
from plugin.settings import Settings, load_settings
from plugin.streaming.deadline import DeadlinePlanner
from plugin.streaming.generation import GenerationGuard, StateLost
from plugin.streaming.worker import Record, StreamWorker
from plugin.wiring import build_processor, generation_marker, online_store

pytestmark = pytest.mark.integration


def record(event: WatchEvent, offset: int) -> Record:
    value = event.model_dump_json().encode()
    return Record("watch-events", 0, offset, event.user_id.encode(), value, time.time())


@pytest.fixture
def redis_settings(
    stream_settings: Settings, redis_server: RedisServer, tmp_path: Path
) -> Settings:
    redis_server.client(db=6).flushdb()
    return load_settings(
        **{
            **stream_settings.model_dump(),
            "redis": {"host": redis_server.host, "port": redis_server.port, "db": 6},
            "feast": {"online_store": "redis", "registry_path": tmp_path / "registry.db"},
        }
    )


def test_events_of_one_second_split_across_batches_are_all_applied(
    catalog: ClusterCatalog,
    best_of_n: BestOfNPlanner,
    redis_settings: Settings,
    event: Any,
) -> None:
    """MovieLens has thousands of same-second events per user; where a batch boundary falls
    must not matter (Feast's Redis store drops writes that are not newer than the last)."""
    store = online_store(redis_settings, catalog)
    metrics = WorkerMetrics()
    deadline = DeadlinePlanner(best_of_n, 10.0, metrics)
    processor = build_processor(redis_settings, catalog, deadline, store)
    worker = StreamWorker(processor, catalog, redis_settings, metrics)
    first = event(1, 1)
    same_second = [event(n, n).model_copy(update={"event_time": first.event_time}) for n in (2, 3)]
    for offset, item in enumerate([first, *same_second]):
        worker.handle([record(item, offset)])
    state = store.read_sequences(["u1"])["u1"]
    assert state.event_count == 3
    assert state.recent_clusters == (3, 2, 1)
    assert state.planned_history == (3, 2)
    assert store.read_plans(["u1"])["u1"].history == (3, 2)


@pytest.mark.parametrize("in_store", [False, True], ids=["own-round-trips", "in-the-store"])
def test_a_flushed_store_stops_the_batch_before_any_write_and_sets_the_metric(
    catalog: ClusterCatalog,
    best_of_n: BestOfNPlanner,
    redis_settings: Settings,
    redis_server: RedisServer,
    event: Any,
    in_store: bool,
) -> None:
    redis_server.client(db=6).flushdb()  # each mode claims its own generation
    store = online_store(redis_settings, catalog)
    metrics = WorkerMetrics()
    processor = build_processor(redis_settings, catalog, best_of_n, store)
    marker = generation_marker(redis_settings)
    assert marker is not None
    guard = GenerationGuard.claim(marker, has_committed=lambda: False)  # a new group
    # In the store: the marker rides on the batch's state read and write (as build_worker
    # wires it); otherwise the worker reads it with its own GETs.
    folded = in_store and store.watch_marker(marker.key, guard.verify)
    assert folded == in_store
    worker = StreamWorker(
        processor, catalog, redis_settings, metrics, generation=guard, generation_in_store=folded
    )
    worker.handle([record(event(1, 1), 0)])
    assert metrics.generation_checks._value.get() == 2  # before the reads, after the writes
    assert guard.checks == 2
    assert metrics.state_lost._value.get() == 0

    redis_server.client(db=6).flushdb()  # what a restart without persistence leaves
    with pytest.raises(StateLost, match="online state lost"):
        worker.handle([record(event(2, 2), 1)])
    assert metrics.state_lost._value.get() == 1
    unwatched = FeastStore(redis_settings)  # the watched store refuses to read a lost state
    assert unwatched.read_sequences(["u1"]) == {}, "a batch after the loss wrote on the empty store"
