"""The fast Redis store on a real Redis Cluster (three local masters, formed by the fixture).

Feast's keys carry no hash tag, so a batch's users land in many slots on every node: the
fast store then writes one script call per slot in a cluster pipeline. What it writes must be
byte-identical to what Feast's standard store writes there, and Feast's standard read path
(``get_online_features`` on a ``redis_cluster`` store) must read it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from feast import FeatureStore

from plugin.adapters.feast_store import PLAN_FEATURES, SEQUENCE_FEATURES, FeastStore
from plugin.bench.feast_profiles import on_redis
from plugin.core.ports import OwedChanges, OwedMark
from plugin.core.sequence import UserClusterSequence
from plugin.localstack import RedisCluster
from plugin.settings import RedisSettings, Settings
from tests.adapters.test_fast_redis_online_store import T0, catalog, plans, states

pytestmark = pytest.mark.integration


def on_cluster(
    settings: Settings, cluster: RedisCluster, tmp_path: Path, standard: bool
) -> FeastStore:
    redis = settings.redis.model_copy(update={"cluster_nodes": cluster.startup_nodes.split(",")})
    name = "standard" if standard else "fast"
    config = on_redis(
        settings.model_copy(update={"redis": redis}),
        tmp_path / name / "registry.db",
        standard=standard,
    )
    store = FeastStore(config)
    store.apply()
    return store


@pytest.fixture
def cluster(redis_cluster: RedisCluster) -> RedisCluster:
    redis_cluster.client().flushall()
    return redis_cluster


def dump(cluster: RedisCluster) -> dict[bytes, dict[bytes, bytes]]:
    client = cluster.client()
    keys = client.keys(target_nodes=client.ALL_NODES)
    hashes = {key: dict(client.hgetall(key)) for key in keys}  # type: ignore[arg-type,union-attr]
    for fields in hashes.values():
        fields.pop(b"_ts:cluster_items", None)  # stamped with the wall clock at write time
    return hashes


def fill(store: FeastStore) -> None:
    store.write_sequences(states())
    store.write_plans(plans(), lambda c: f"cluster {c}")
    store.write_catalog(catalog())


def test_the_fast_store_writes_across_slots_what_feast_writes(
    settings: Settings, cluster: RedisCluster, tmp_path: Path
) -> None:
    fast = on_cluster(settings, cluster, tmp_path, standard=False)
    sdk = on_cluster(settings, cluster, tmp_path, standard=True)
    assert fast.batched is not None and sdk.batched is None
    assert not fast.batched.online.scripted(fast.store.config.online_store)
    fill(sdk)
    fill(sdk)  # the same rows again: not newer, skipped
    by_sdk = dump(cluster)
    cluster.client().flushall()
    fill(fast)
    fill(fast)
    by_fast = dump(cluster)
    assert len(by_fast) == 6 + 3
    assert by_fast == by_sdk
    # The keys really span the cluster: every node holds some of them.
    client = cluster.client()
    nodes = Counter(client.get_node_from_key(key).port for key in by_fast)
    assert len(nodes) == 3, nodes


def test_feasts_standard_read_path_reads_what_the_fast_store_wrote(
    settings: Settings, cluster: RedisCluster, tmp_path: Path
) -> None:
    fast = on_cluster(settings, cluster, tmp_path, standard=False)
    sdk = on_cluster(settings, cluster, tmp_path, standard=True)
    fill(fast)
    users = [s.user_id for s in states()] + ["nobody"]
    # Feast's own store type, with the registry the fast profile applied.
    config = sdk.store.config.model_copy(deep=True)
    config.registry.path = str(fast.settings.feast.registry_path)
    reader = FeatureStore(config=config, repo_path=str(sdk.settings.feast.repo_path))
    response = reader.get_online_features(
        features=[f"user_cluster_sequence:{f}" for f in SEQUENCE_FEATURES]
        + [f"exploration_plan:{f}" for f in PLAN_FEATURES],
        entity_rows=[{"user_id": u} for u in users],
        full_feature_names=True,
    ).to_dict()
    expected = {s.user_id: s for s in states()}
    for index, user in enumerate(users):
        events = response["user_cluster_sequence__event_count"][index]
        if user == "nobody":
            assert events is None
            continue
        assert events == expected[user].event_count
        clusters = response["user_cluster_sequence__recent_clusters"][index]
        assert clusters == list(expected[user].recent_clusters)
    assert response["exploration_plan__scores"][0] == [2.5, -0.125, 1e-9]
    assert response["exploration_plan__description"][1] == "cluster 7"
    # The fast store's own batched reads (one pipeline over the nodes) agree.
    assert fast.read_sequences(users) == expected
    assert fast.read_plans(["u0", "u3"]) == {p.user_id: p for p in (plans()[0], plans()[3])}
    assert sdk.read_sequences(users) == expected


def test_owed_replans_and_a_flushed_script_cache_on_the_cluster(
    settings: Settings, cluster: RedisCluster, tmp_path: Path
) -> None:
    fast = on_cluster(settings, cluster, tmp_path, standard=False)
    users = states()
    shards = [f"watch-events:{p}" for p in range(4)]
    owed = OwedChanges(
        owed={s.user_id: OwedMark(shards[n % 4], s.revision_us) for n, s in enumerate(users)}
    )
    fast.write_sequences(users, owed)
    assert set(fast.read_owed(shards, limit=10)) == {s.user_id for s in users}
    # A node that lost its scripts (restarted, or a new one): NOSCRIPT, reload, resend.
    cluster.client().script_flush()  # goes to every primary
    newer = UserClusterSequence(
        user_id="u1", recent_clusters=(4,), last_event_time=T0, event_count=50,
        revision_us=users[1].revision_us + 1,
    )  # fmt: skip
    settled = OwedChanges(settled={"u1": OwedMark(shards[1], newer.revision_us)})
    fast.write_sequences([newer], settled)
    assert fast.read_sequences(["u1"])["u1"].event_count == 50
    assert "u1" not in fast.read_owed(shards, limit=10)
    assert fast.count_owed(shards) == len(users) - 1


def test_cluster_nodes_make_a_cluster_connection_string_without_a_database() -> None:

    redis = RedisSettings(cluster_nodes=["10.0.0.1:7000", "10.0.0.2:7001"], db=3)
    parts = redis.connection_string().split(",")
    assert parts[:2] == ["10.0.0.1:7000", "10.0.0.2:7001"]
    assert not any(part.startswith("db=") for part in parts)
    assert RedisSettings().connection_string().split(",")[:2] == ["127.0.0.1:6379", "db=0"]
    with pytest.raises(ValueError, match="host:port"):
        RedisSettings(cluster_nodes=["10.0.0.1"])
