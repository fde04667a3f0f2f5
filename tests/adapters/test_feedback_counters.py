"""Online feedback aggregates incremented on the Redis server (plugin.adapters.feedback_counters).

Against one real redis-server: the script leaves exactly the bytes Feast's SDK writes for the
summed rows, Feast's standard read path reads them, a rewrite from the log is picked up by the
next increment, and two writers hammering the same keys at once lose no increment.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest
from feast import FeatureStore

from plugin.adapters.feast_store import FEEDBACK_FEATURES, FeastStore
from plugin.bench.feast_profiles import on_redis
from plugin.core.feedback import FeedbackAggregate, aggregate, merge_aggregates
from plugin.localstack import RedisServer
from plugin.settings import Settings
from tests.support.feedback import record as feedback_record

pytestmark = pytest.mark.integration

r = feedback_record


def dump(redis_server: RedisServer, db: int) -> dict[bytes, dict[bytes, bytes]]:
    client = redis_server.client(db=db)
    return {key: dict(client.hgetall(key)) for key in client.keys("*")}  # type: ignore[union-attr,arg-type]


def first_revision(key: str) -> int:
    return batches()[0][key].revision_us


def batches() -> list[dict[str, FeedbackAggregate]]:
    """Three batches over overlapping keys; the second's answers are older (a lagging
    partition), the third has a key answered many times."""
    return [
        aggregate([r("u1", 50, (2, 1), 7, 7, True), r("u2", 51, (2, 1), 7, 3, False)]),
        aggregate([r("u3", 10, (2, 1), 7, 7, False), r("u4", 11, (5,), 6, 6, True)]),
        aggregate(
            [r(f"v{n}", 100 + n, (5,), 6, 6 if n % 3 else 2, n % 2 == 0) for n in range(300)]
        ),
    ]


@pytest.fixture
def pair(settings: Settings, redis_server: RedisServer, tmp_path: Path) -> tuple[FeastStore, ...]:
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
        store = FeastStore(
            on_redis(base, tmp_path / f"db{db}" / "registry.db", standard=standard, db=db)
        )
        store.apply()
        stores.append(store)
    return tuple(stores)


def test_increments_leave_the_bytes_the_sdk_writes_for_the_sums(
    pair: tuple[FeastStore, FeastStore], redis_server: RedisServer
) -> None:
    fast, sdk = pair
    assert fast.counters is not None
    for delta in batches():
        fast.add_feedback_aggregates(list(delta.values()))
        # The reference: Feast's SDK write of the stored counts plus the batch's.
        stored = sdk.read_feedback_aggregates(sorted(delta))
        sdk.write_feedback_aggregates(merge_aggregates(stored, delta))
    assert dump(redis_server, 11) == dump(redis_server, 12)
    found = fast.read_feedback_aggregates(["2,1>7", "5>6"])
    assert (found["2,1>7"].answered, found["2,1>7"].engaged, found["2,1>7"].novel) == (3, 2, 3)
    assert found["5>6"].answered == 301
    # The second batch's answers are older: they still land, stamped a microsecond later.
    assert found["2,1>7"].revision_us == first_revision("2,1>7") + 1


def test_the_standard_feast_read_path_reads_the_incremented_counts(
    pair: tuple[FeastStore, FeastStore],
) -> None:
    fast, sdk = pair
    for delta in batches():
        fast.add_feedback_aggregates(list(delta.values()))
    config = sdk.store.config.model_copy(deep=True)
    config.online_store.connection_string = fast.store.config.online_store.connection_string
    config.registry.path = str(fast.settings.feast.registry_path)
    reader = FeatureStore(config=config, repo_path=str(sdk.settings.feast.repo_path))
    response = reader.get_online_features(
        features=[f"feedback_aggregates:{name}" for name in FEEDBACK_FEATURES],
        entity_rows=[{"history_candidate": "5>6"}, {"history_candidate": "9>9"}],
    ).to_dict()
    positives = sum(1 for n in range(300) if n % 3 and n % 2 == 0) + 1
    assert response["answered"] == [301, None]
    assert response["engaged_positive"][0] == positives
    assert response["positive_rate"][0] == positives / 301
    assert response["model_version"][0] == "best-of-n-v1-cat"


def test_a_rewrite_from_the_log_is_what_the_next_increment_adds_to(
    pair: tuple[FeastStore, FeastStore],
) -> None:
    fast, _ = pair
    first, second, _ = batches()
    fast.add_feedback_aggregates(list(first.values()))
    # `explore refresh` rewrites a key with the log's exact counts, stamped newer.
    row = fast.read_feedback_aggregates(["2,1>7"])["2,1>7"]
    exact = FeedbackAggregate(
        "2,1>7", answered=10, engaged=4, engaged_positive=2, novel=9,
        model_version="v9", revision_us=row.revision_us + 5,
    )  # fmt: skip
    fast.write_feedback_aggregates([exact])
    fast.add_feedback_aggregates([second["2,1>7"]])
    after = fast.read_feedback_aggregates(["2,1>7"])["2,1>7"]
    assert (after.answered, after.engaged, after.engaged_positive, after.novel) == (11, 5, 2, 10)
    assert after.model_version == "best-of-n-v1-cat"
    assert after.revision_us == exact.revision_us + 1


KEYS = [f"{a},{b}>{c}" for a, b, c in ((1, 2, 3), (2, 1, 3), (4, 5, 6), (7, 8, 9), (3, 3, 1))]


def hammer(store: FeastStore, seed: int, rounds: int, atomic: bool) -> list[int]:
    """``rounds`` batches over the same keys; the answered counts it added, per key."""
    rng = random.Random(seed)
    added = [0] * len(KEYS)
    for n in range(rounds):
        rows = []
        for index, key in enumerate(KEYS):
            answered = rng.randint(1, 5)
            added[index] += answered
            rows.append(
                FeedbackAggregate(key, answered, answered - 1, 1, answered, "v", 10**15 + n)
            )
        if atomic:
            store.add_feedback_aggregates(rows)
        else:  # the read-modify-write the worker used to do
            stored = store.read_feedback_aggregates(KEYS)
            store.write_feedback_aggregates(merge_aggregates(stored, {r.key: r for r in rows}))
    return added


def concurrent_run(stores: list[FeastStore], rounds: int, atomic: bool) -> tuple[int, int]:
    """Writers at once (one thread and one Redis connection each); (expected, stored) total
    of the answered counts."""
    results: list[list[int]] = [[] for _ in stores]
    start = threading.Barrier(len(stores))

    def run(index: int) -> None:
        start.wait()
        results[index] = hammer(stores[index], index, rounds, atomic)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = stores[0].read_feedback_aggregates(KEYS)
    expected = sum(sum(added) for added in results)
    return expected, sum(row.answered for row in stored.values())


def test_two_writers_on_the_same_keys_lose_no_increment(
    pair: tuple[FeastStore, FeastStore], redis_server: RedisServer
) -> None:
    fast, _ = pair
    # A second writer on the same database with its own Feast store and Redis connection.
    other = FeastStore(fast.settings)
    rounds = 300
    expected, stored = concurrent_run([fast, other], rounds, atomic=True)
    rows = fast.read_feedback_aggregates(KEYS)
    assert stored == expected
    for row in rows.values():
        assert row.engaged == row.answered - 2 * rounds  # each batch: answered - 1, twice
        assert row.engaged_positive == 2 * rounds
        assert row.positive_rate == row.engaged_positive / row.answered
    # The same load through the old read-modify-write (printed for docs/ROBUSTNESS.md).
    redis_server.client(db=11).flushdb()
    naive_expected, naive_stored = concurrent_run([fast, other], rounds, atomic=False)
    print(
        f"\natomic: {stored} of {expected} answered counts stored; read-modify-write: "
        f"{naive_stored} of {naive_expected} ({naive_expected - naive_stored} lost)"
    )
