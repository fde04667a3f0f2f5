"""Feast online-store rows/s: the SDK path against the fast store's batched path.

For each batch size, user-sequence rows (the worker's largest write) are written and read
through :class:`~plugin.adapters.feast_store.FeastStore` for a fixed time:

* ``sdk``: Feast's standard Redis store; writes go through ``write_to_online_store``
  (DataFrame -> Arrow -> protobuf -> two pipelines), reads through ``get_online_features``;
* ``sdk push``: the same rows through ``FeatureStore.push`` (what a naive client calls);
* ``fast``: the repo's profile, the fast store's batched path (one script call per batch in
  each direction, same hash layout);
* ``fast cluster``: the same store on a local Redis Cluster of ``cluster_nodes`` masters
  (one script call per hash slot, one pipeline round trip per node), on the same CPUs.

Each write carries new revisions, so no row is skipped as stale.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pandas as pd

from plugin.adapters.feast_store import SEQUENCE_VIEW, FeastStore
from plugin.bench.feast_profiles import on_redis
from plugin.bench.stack import BenchStack
from plugin.core.sequence import UserClusterSequence, to_micros
from plugin.localstack.redis import RedisCluster
from plugin.settings import Settings

T0 = datetime(1998, 1, 1, tzinfo=UTC)
SIZES = (1, 10, 100, 500, 2000)


@dataclass
class StoreRow:
    store: str
    op: str
    batch: int
    rows: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "op": self.op,
            "batch": self.batch,
            "rows": self.rows,
            "seconds": round(self.seconds, 3),
            "rows_per_s": round(self.rows / self.seconds, 1) if self.seconds else None,
            "ms_per_call": round(1000 * self.seconds * self.batch / self.rows, 3)
            if self.rows
            else None,
        }


def sequences(batch: int, round_: int, users: int) -> list[UserClusterSequence]:
    """``batch`` realistic states (W recent clusters, K-history) with a fresh revision."""
    when = T0 + timedelta(seconds=round_)
    return [
        UserClusterSequence(
            user_id=str((round_ * batch + i) % users),
            recent_clusters=tuple((i + j) % 48 for j in range(20)),
            last_event_time=when,
            last_event_id=f"e{round_}-{i}",
            event_count=round_ + 1,
            positive_count=round_,
            planned_history=(i % 48, (i + 1) % 48),
            planned_window=tuple(sorted((i + j) % 48 for j in range(20))),
            planned_at=when,
            revision_us=to_micros(when) + i,
        )
        for i in range(batch)
    ]


def _timed(call: Callable[[int], int], seconds: float, max_calls: int) -> tuple[int, float]:
    rows, calls = 0, 0
    started = time.perf_counter()
    while calls < max_calls and (calls == 0 or time.perf_counter() - started < seconds):
        rows += call(calls)
        calls += 1
    return rows, time.perf_counter() - started


def feast_bench(
    stack: BenchStack,
    *,
    sizes: Sequence[int] = SIZES,
    seconds: float = 1.5,
    users: int = 5000,
    cluster_nodes: int = 3,
    on_row: Callable[[StoreRow], None] | None = None,
) -> list[StoreRow]:
    """Write and read rows/s per store and batch size (see the module docstring);
    ``cluster_nodes`` 0 skips the Redis Cluster arm."""
    out: list[StoreRow] = []

    def measure(name: str, store: FeastStore, push: bool) -> None:
        store.apply()
        for row in _store_rows(name, store, sizes, seconds, users, push=push):
            out.append(row)
            if on_row is not None:
                on_row(row)

    for name, standard in (("sdk", True), ("fast", False)):
        measure(name, FeastStore(stack.arm(f"feast-{name}", standard=standard)), standard)
    if cluster_nodes:
        logs = stack.run_dir / "logs"
        with RedisCluster(cluster_nodes, name="bench-redis-cluster", log_dir=logs) as cluster:
            measure("fast cluster", FeastStore(on_cluster(stack.settings, cluster, stack)), False)
    return out


def on_cluster(settings: Settings, cluster: RedisCluster, stack: BenchStack) -> Settings:
    """``settings`` on the fast store over ``cluster``, with a registry of its own."""
    redis = settings.redis.model_copy(update={"cluster_nodes": cluster.startup_nodes.split(",")})
    registry = stack.run_dir / "feast-cluster" / "registry.db"
    registry.unlink(missing_ok=True)
    return on_redis(settings.model_copy(update={"redis": redis}), registry)


def _store_rows(
    name: str, store: Any, sizes: Sequence[int], seconds: float, users: int, push: bool
) -> Iterator[StoreRow]:
    # Rounds go on across batch sizes, so that every write is newer than the one before.
    rounds = 0

    def write(size: int, call: int) -> int:
        store.write_sequences(sequences(size, rounds + call, users))
        return size

    def push_rows(size: int, call: int) -> int:
        store.store.push(f"{SEQUENCE_VIEW}_push", push_frame(size, rounds + call, users))
        return size

    def read(size: int, call: int) -> int:
        store.read_sequences([str(i % users) for i in range(size)])
        return size

    steps: list[tuple[str, str, Callable[[int, int], int], int]] = [
        (name, "write", write, 20_000),
        (name, "read", read, 20_000),
    ]
    if push:
        steps.insert(1, ("sdk push", "write", push_rows, 5_000))
    for size in sizes:
        for label, op, call, budget in steps:
            rows, spent = _timed(partial(call, size), seconds, max(3, budget // size))
            rounds += rows // size + 1
            yield StoreRow(label, op, size, rows, spent)


def push_frame(batch: int, round_: int, users: int) -> pd.DataFrame:
    """The rows of :func:`sequences` as the DataFrame ``FeatureStore.push`` takes."""
    return pd.DataFrame(
        [
            {
                "user_id": s.user_id,
                "recent_clusters": list(s.recent_clusters),
                "history": list(s.recent_clusters[:2]),
                "last_event_id": s.last_event_id,
                "last_event_time_us": s.revision_us,
                "event_count": s.event_count,
                "positive_count": s.positive_count,
                "planned_history": list(s.planned_history),
                "planned_window": list(s.planned_window),
                "planned_at_us": s.revision_us,
                "revision_us": s.revision_us,
                "event_timestamp": datetime.fromtimestamp(s.revision_us / 1e6, tz=UTC),
            }
            for s in sequences(batch, round_, users)
        ]
    )
