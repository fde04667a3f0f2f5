"""Feast round trips on the SQLite store and on a real redis-server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from plugin.adapters.feast_store import FeastStore
from plugin.core.catalog import ClusterCatalog, InterestCluster, ParentCluster
from plugin.core.planning import ExplorationPlan
from plugin.core.sequence import UserClusterSequence
from plugin.localstack import RedisServer
from plugin.settings import load_settings

T0 = datetime(1998, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FeastStore]:
    feast: dict[str, Any] = {
        "online_store": request.param,
        "sqlite_path": tmp_path / "online.db",
        "registry_path": tmp_path / "registry.db",
    }
    redis: dict[str, Any] = {}
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        # One database per test keeps tests independent on a shared server.
        redis = {"host": server.host, "port": server.port, "db": 1}
        server.client(db=1).flushdb()
    settings = load_settings(var_dir=tmp_path, feast=feast, redis=redis)
    feast_store = FeastStore(settings)
    feast_store.apply()
    yield feast_store


def state(user: str, minutes: int, **changes: Any) -> UserClusterSequence:
    base = UserClusterSequence(
        user_id=user,
        recent_clusters=(3, 1, 4),
        last_event_time=T0 + timedelta(minutes=minutes),
        last_event_id=f"e{minutes}",
        event_count=minutes,
        positive_count=1,
    )
    return replace(base, **changes)


def test_sequences_round_trip_and_unknown_users_are_absent(store: FeastStore) -> None:
    planned = state("u1", 5, planned_history=(3, 1), planned_at=T0 + timedelta(minutes=5))
    store.write_sequences([planned, state("u2", 7)])
    found = store.read_sequences(["u1", "u2", "nobody"])
    assert found == {"u1": planned, "u2": state("u2", 7)}


def test_newer_state_replaces_older(store: FeastStore) -> None:
    store.write_sequences([state("u1", 5)])
    newer = state("u1", 9, recent_clusters=(2, 3, 1, 4))
    store.write_sequences([newer])
    assert store.read_sequences(["u1"])["u1"] == newer


def test_plans_round_trip_with_descriptions(store: FeastStore) -> None:
    plan = ExplorationPlan(
        user_id="u1",
        history=(3, 1),
        cluster_id=2,
        candidates=(2, 5, 0),
        scores=(0.5, 0.3, 0.2),
        model_version="frequency-test",
        as_of=T0,
    )
    store.write_plans([plan], lambda c: f"cluster {c}")
    assert store.read_plans(["u1", "u2"]) == {"u1": plan}
    (row, missing) = store.read_plan_rows(["u1", "u2"])
    assert row["description"] == "cluster 2"
    assert missing["cluster_id"] is None


def test_cluster_items_round_trip(store: FeastStore) -> None:
    catalog = ClusterCatalog(
        clusters=(
            InterestCluster(0, 0, ("comedy", "1990s"), ("10", "11"), 2),
            InterestCluster(1, 0, ("drama",), ("12",), 1, summary="Dramas, such as Twelve"),
        ),
        parents=(ParentCluster(0, ("films",), (0, 1)),),
        item_to_cluster={"10": 0, "11": 0, "12": 1},
        item_titles={"10": "Ten (1995)"},
    )
    store.write_catalog(catalog)
    first, second = store.read_clusters([0, 1])
    assert first["top_items"] == ["10", "11"]
    assert first["top_titles"] == ["Ten (1995)", "11"]
    assert first["description"] == "comedy, 1990s"
    assert second["parent_description"] == "films"
    # The readable summary, or the keywords for a catalog without one.
    assert first["summary"] == "comedy, 1990s"
    assert second["summary"] == "Dramas, such as Twelve"
    assert second["catalog_version"] == catalog.version


@pytest.mark.integration
def test_a_redis_that_stops_answering_fails_the_batch_within_the_socket_timeout(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """A Redis that accepts connections but never answers (here: paused) makes a write raise
    instead of hanging the batch, and the same store works again once Redis answers."""
    redis_server.client(db=7).flushdb()
    settings = load_settings(
        var_dir=tmp_path,
        feast={"online_store": "redis", "registry_path": tmp_path / "registry.db"},
        redis={
            "host": redis_server.host,
            "port": redis_server.port,
            "db": 7,
            "socket_timeout_s": 0.2,
            "connect_timeout_s": 0.3,
        },
    )
    store = FeastStore(settings)
    store.apply()
    store.write_sequences([state("u1", 1)])
    assert store.batched is not None
    client = store.batched.online._get_client(store.store.config.online_store)
    options = client.get_connection_kwargs()
    assert (options["socket_timeout"], options["socket_connect_timeout"]) == (0.2, 0.3)
    # One attempt per command: redis-py's own retries (3, with up to 14 s of jittered
    # backoff, docs/ROBUSTNESS.md) would multiply the bound and outlast the pause.
    client.set_retry(Retry(NoBackoff(), 0))

    admin = redis_server.client(socket_timeout=10)
    admin.execute_command("CLIENT", "PAUSE", 1500, "ALL")
    try:
        started = time.perf_counter()
        with pytest.raises(redis.TimeoutError):
            store.write_sequences([state("u1", 2)])
        assert time.perf_counter() - started < 1.0
    finally:
        admin.ping()  # answered once the pause is over: the session's server is shared
    newer = state("u1", 3)
    store.write_sequences([newer])  # what the worker's retry of the batch does
    assert store.read_sequences(["u1"]) == {"u1": newer}
