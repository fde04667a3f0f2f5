"""The fast Redis online store writes exactly what Feast's own Redis store writes.

Both profiles run against one real redis-server, in two databases: the repo's profile (the fast
store's batched path) and a copy on Feast's standard ``type: redis`` store (the SDK path). The
same rows must leave byte-identical hashes, and the standard ``get_online_features`` must read
what the batched path wrote.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from feast import FeatureStore
from feast.value_type import ValueType

from plugin.adapters.fast_redis_online_store import (
    BatchedRedisPath,
    FastRedisOnlineStoreConfig,
    decode_value,
    encode_value,
)
from plugin.adapters.feast_store import PLAN_FEATURES, SEQUENCE_FEATURES, FeastStore
from plugin.bench.feast_profiles import on_redis
from plugin.core.catalog import ClusterCatalog, InterestCluster, ParentCluster
from plugin.core.planning import ExplorationPlan
from plugin.core.sequence import UserClusterSequence, to_micros
from plugin.localstack import RedisServer
from plugin.settings import Settings

pytestmark = pytest.mark.integration

T0 = datetime(1998, 1, 1, tzinfo=UTC)


def states() -> list[UserClusterSequence]:
    out = []
    for n in range(6):
        when = T0 + timedelta(minutes=n)
        out.append(
            UserClusterSequence(
                user_id=f"u{n}",
                recent_clusters=tuple(range(n % 4)),  # includes an empty sequence
                last_event_time=when,
                last_event_id=f"e{n}",
                event_count=n + 1,
                positive_count=n,
                planned_history=(1, 0) if n % 2 else (),
                planned_window=(0, 1, 2) if n % 2 else (),
                planned_at=when if n % 2 else None,
                revision_us=to_micros(when) + n,
            )
        )
    return out


def plans() -> list[ExplorationPlan]:
    return [
        ExplorationPlan(
            user_id=f"u{n}",
            history=(n, n + 1),
            cluster_id=7,
            candidates=(7, 3, 9),
            scores=(2.5, -0.125, 1e-9),
            model_version="best-of-n-v1-abc",
            as_of=T0 + timedelta(minutes=n),
        )
        for n in range(4)
    ]


def catalog() -> ClusterCatalog:
    return ClusterCatalog(
        clusters=tuple(
            InterestCluster(c, 0, (f"k{c}", "é"), (f"i{c}", f"j{c}"), 1) for c in range(3)
        ),
        parents=(ParentCluster(0, ("all",), (0, 1, 2)),),
        item_to_cluster={f"i{c}": c for c in range(3)},
    )


@pytest.fixture
def profiles(
    settings: Settings, redis_server: RedisServer, tmp_path: Path
) -> tuple[FeastStore, FeastStore]:
    """(fast, standard) stores on databases 11 and 12 of the session's redis-server."""
    base = settings.model_copy(
        update={
            "redis": settings.redis.model_copy(
                update={"host": redis_server.host, "port": redis_server.port}
            )
        }
    )
    stores = []
    for db, standard in ((11, False), (12, True)):
        redis_server.client(db=db).flushdb()
        config = on_redis(base, tmp_path / f"db{db}" / "registry.db", standard=standard, db=db)
        store = FeastStore(config)
        store.apply()
        stores.append(store)
    fast, sdk = stores
    assert isinstance(fast.store.config.online_store, FastRedisOnlineStoreConfig)
    assert fast.batched is not None and sdk.batched is None
    return fast, sdk


def fill(store: FeastStore) -> None:
    store.write_sequences(states())
    store.write_plans(plans(), lambda c: f"cluster {c}", {"u1": to_micros(T0) + 10**9})
    store.write_catalog(catalog())


def dump(redis_server: RedisServer, db: int) -> dict[bytes, dict[bytes, bytes]]:
    client = redis_server.client(db=db)
    return {key: dict(client.hgetall(key)) for key in client.keys("*")}  # type: ignore[union-attr,arg-type]


def test_the_batched_path_writes_the_same_bytes_as_the_sdk(
    profiles: tuple[FeastStore, FeastStore], redis_server: RedisServer
) -> None:
    fast, sdk = profiles
    fill(fast)
    fill(sdk)
    fast_hashes, sdk_hashes = dump(redis_server, 11), dump(redis_server, 12)
    # The catalog rows are stamped with the wall clock at write time: compare all but those.
    for hashes in (fast_hashes, sdk_hashes):
        for fields in hashes.values():
            fields.pop(b"_ts:cluster_items", None)
    assert len(fast_hashes) == 6 + 3
    assert fast_hashes == sdk_hashes


def test_the_standard_feast_read_path_reads_what_the_batched_path_wrote(
    profiles: tuple[FeastStore, FeastStore], tmp_path: Path
) -> None:
    fast, sdk = profiles
    fill(fast)
    users = [s.user_id for s in states()] + ["nobody"]
    # Feast's own store, reading database 11 (where the batched path wrote).
    standard_config = sdk.store.config.model_copy(deep=True)
    standard_config.online_store.connection_string = (
        fast.store.config.online_store.connection_string
    )
    standard_config.registry.path = str(fast.settings.feast.registry_path)
    reader = FeatureStore(config=standard_config, repo_path=str(sdk.settings.feast.repo_path))
    response = reader.get_online_features(
        features=[f"user_cluster_sequence:{f}" for f in SEQUENCE_FEATURES]
        + [f"exploration_plan:{f}" for f in PLAN_FEATURES],
        entity_rows=[{"user_id": u} for u in users],
        full_feature_names=True,
    ).to_dict()
    seq = {f: response[f"user_cluster_sequence__{f}"] for f in SEQUENCE_FEATURES}
    plan = {f: response[f"exploration_plan__{f}"] for f in PLAN_FEATURES}
    expected = {s.user_id: s for s in states()}
    for index, user in enumerate(users):
        if user == "nobody":
            assert seq["last_event_time_us"][index] is None
            continue
        state = expected[user]
        assert seq["recent_clusters"][index] == list(state.recent_clusters)
        assert seq["last_event_id"][index] == state.last_event_id
        assert seq["revision_us"][index] == state.revision_us
        assert seq["planned_history"][index] == list(state.planned_history)
        assert seq["planned_window"][index] == list(state.planned_window)
    assert plan["scores"][0] == [2.5, -0.125, 1e-9]
    assert plan["history"][1] == [1, 2]
    assert plan["description"][1] == "cluster 7"
    assert plan["cluster_id"][5] is None  # u5 has no plan
    # ... and the adapter's own reads (the batched path) agree with the SDK's view of it.
    assert fast.read_sequences(users) == expected
    assert fast.read_plans(["u0", "u1"]) == {p.user_id: p for p in plans()[:2]}
    assert fast.read_clusters([2])[0]["top_items"] == ["i2", "j2"]


def test_the_batched_path_reads_what_the_sdk_wrote(
    profiles: tuple[FeastStore, FeastStore],
) -> None:
    fast, sdk = profiles
    fill(sdk)
    # The fast profile, reading database 12 (where the SDK path wrote).
    settings = fast.settings
    reader = FeastStore(
        settings.model_copy(update={"redis": settings.redis.model_copy(update={"db": 12})})
    )
    assert reader.batched is not None
    rows = reader.batched.read("user_cluster_sequence", list(SEQUENCE_FEATURES), ["u3"])
    assert rows[0]["recent_clusters"] == [0, 1, 2]
    assert reader.read_sequences(["u3", "nobody"]) == {"u3": states()[3]}
    assert reader.read_plans(["u2"]) == sdk.read_plans(["u2"]) == {"u2": plans()[2]}


def test_rows_not_newer_than_the_stored_ones_are_skipped_like_feast_does(
    profiles: tuple[FeastStore, FeastStore],
) -> None:
    fast, _ = profiles
    batched = fast.batched
    assert isinstance(batched, BatchedRedisPath)
    newer = states()[2]
    fast.write_sequences([newer])
    older = UserClusterSequence(
        user_id=newer.user_id, last_event_time=T0, event_count=99, revision_us=newer.revision_us
    )
    fast.write_sequences([older])  # same stamp: skipped
    assert fast.read_sequences([newer.user_id])[newer.user_id].event_count == newer.event_count
    # Two rows for one user in a batch: the newer one wins, whatever the order.
    later = UserClusterSequence(
        user_id="u9", last_event_time=T0, event_count=2, revision_us=to_micros(T0) + 2
    )
    earlier = UserClusterSequence(
        user_id="u9", last_event_time=T0, event_count=1, revision_us=to_micros(T0) + 1
    )
    fast.write_sequences([later, earlier])
    assert fast.read_sequences(["u9"])["u9"].event_count == 2


def test_value_codec_round_trips_and_nulls() -> None:
    assert decode_value(encode_value([3, 1], ValueType.INT64_LIST).SerializeToString()) == [3, 1]
    assert decode_value(encode_value([], ValueType.STRING_LIST).SerializeToString()) == []
    assert decode_value(encode_value(None, ValueType.INT64).SerializeToString()) is None
    assert decode_value(None) is None
    assert decode_value(encode_value("x", ValueType.STRING).SerializeToString()) == "x"


def test_times_before_1970_are_written_and_read_back(
    profiles: tuple[FeastStore, FeastStore],
) -> None:
    """A negative protobuf Timestamp is a ten-byte varint; the write script must decode it."""
    fast, sdk = profiles
    early = datetime(1969, 7, 20, 20, 17, tzinfo=UTC)
    for store in (fast, sdk):
        for n in (1, 2):
            store.write_sequences(
                [
                    UserClusterSequence(
                        user_id="old",
                        recent_clusters=(n,),
                        last_event_time=early,
                        event_count=n,
                        revision_us=to_micros(early) + n,
                    )
                ]
            )
    assert fast.read_sequences(["old"])["old"].event_count == 2
    assert fast.read_sequences(["old"]) == sdk.read_sequences(["old"])


def test_the_pipelined_path_of_a_redis_cluster_writes_the_same_bytes(
    profiles: tuple[FeastStore, FeastStore],
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without scripts (what a Redis Cluster gets), Feast's two pipelines, same layout."""
    fast, sdk = profiles
    assert fast.batched is not None
    monkeypatch.setattr(fast.batched.online, "scripted", lambda online: False)
    for store in (fast, sdk):
        fill(store)
        store.write_sequences(states()[:2])  # not newer: skipped by both
    fast_hashes, sdk_hashes = dump(redis_server, 11), dump(redis_server, 12)
    for hashes in (fast_hashes, sdk_hashes):
        for fields in hashes.values():
            fields.pop(b"_ts:cluster_items", None)
    assert fast_hashes == sdk_hashes
    assert fast.read_sequences(["u1"]) == {"u1": states()[1]}


def test_one_round_trip_each_way_and_scripts_reloaded_after_a_flush(
    profiles: tuple[FeastStore, FeastStore], redis_server: RedisServer
) -> None:
    fast, _ = profiles
    fill(fast)  # the scripts are loaded now
    client = redis_server.client(db=11)
    client.config_resetstat()
    fast.write_sequences(states())
    fast.read_sequences(["u1", "u2"])
    calls: dict[str, Any] = client.info("commandstats")  # type: ignore[assignment]
    # No SCRIPT EXISTS before each pipeline (redis-py's registered scripts send one): one
    # EVALSHA each way, nothing else.
    assert calls["cmdstat_evalsha"]["calls"] == 2
    assert "cmdstat_script|exists" not in calls and "cmdstat_script" not in calls
    client.script_flush()  # what a restarted server forgets
    again = UserClusterSequence(
        user_id="u1", last_event_time=T0, event_count=41, revision_us=to_micros(T0) + 10**10
    )
    fast.write_sequences([again])  # NOSCRIPT, then loaded and sent once more
    assert fast.read_sequences(["u1"])["u1"].event_count == 41
