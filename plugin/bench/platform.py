"""Platform-sized figures from the synthetic workload (``plugin.data.platform``).

``explore bench platform`` measures, on a private redis-server it starts (no Triton: the
untrained id model runs in-process at the platform's cluster count, which no trained version
here has):

* **Redis memory per user**: users' sequence states and plans written through the fast
  store, ``used_memory`` before and after, at three user counts (linear fit) and three
  cluster counts;
* **the lookup table** (the plan cache): bytes per entry and the time to rank a sample of
  histories with the id model (novelty + alignment, best-of-n), at three cluster counts;
  the size and time for all ``C*C`` histories follow from the entries' count, and the power
  law fitted over the three points extrapolates the rest;
* **worker events/s** (``StreamWorker.handle``, interleaved users, replans on, plan table warm
  in Redis, no in-process ranking memory: the platform's table does not fit one) at three
  user-base sizes and three cluster counts.

Where a run is scaled down (users, histories), the extrapolated figures are labelled
``extrapolated`` in the JSON and the tables; measured ones ``measured``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import torch

from plugin.adapters.feast_store import FeastStore
from plugin.adapters.plan_cache import (
    CachedPlanner,
    RankingCache,
    encode_ranking,
    precompute,
    truncated,
)
from plugin.bench.drain import drain_bench
from plugin.bench.feast_profiles import on_redis
from plugin.bench.machine import LoadMonitor, describe_machine
from plugin.core.catalog import ClusterCatalog
from plugin.core.planning import ExplorationPlan
from plugin.core.sequence import UserClusterSequence, push_cluster, to_micros
from plugin.data.platform import EPOCH_START, PlatformShape, PlatformWorkload
from plugin.localstack.redis import RedisServer
from plugin.localstack.tansu import KafkaBroker
from plugin.models.alignment import AlignmentConfig, AlignmentModel
from plugin.models.novelty import NoveltyConfig, NoveltyModel
from plugin.models.planner import BestOfNPlanner
from plugin.observability.metrics import WorkerMetrics
from plugin.settings import Settings
from plugin.streaming.generation import GenerationGuard, GenerationMarker, generation_key
from plugin.streaming.worker import Record, StreamWorker
from plugin.wiring import build_processor

Echo = Callable[[str], None]
# Primed states end the day before the synthetic clock starts.
PRIMED_AT = datetime.fromtimestamp(EPOCH_START, tz=UTC) - timedelta(days=1)
WRITE_BATCH = 2_000


@dataclass
class PreparedWorker:
    """A worker ready to time, its plan cache, its events and how many users and table
    entries they need."""

    worker: StreamWorker
    cached: CachedPlanner
    stream: list[tuple[str, bytes]]
    users: int
    table_entries: int


@dataclass
class PlatformOptions:
    """Sizes of the platform bench; the defaults fit a few minutes on 2 shared CPUs."""

    target_users: int = 1_000_000
    target_clusters: int = 500
    memory_users: tuple[int, ...] = (25_000, 50_000, 100_000)
    memory_cluster_users: int = 20_000
    clusters: tuple[int, ...] = (100, 250, 500)
    table_sample: int = 2_000  # histories ranked per cluster count (all of them if fewer)
    worker_events: int = 10_000
    worker_users: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    drain_events: int = 20_000  # the Kafka drain (plugin.bench.drain); 0: skip it
    drain_profile: bool = True
    seed: int = 15


def platform_bench(
    settings: Settings,
    options: PlatformOptions,
    echo: Echo = print,
    more: Mapping[str, Callable[[_Lab], dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Every figure of the module docstring, as one JSON-ready document; ``more`` adds
    sections measured on the same server at the end (the CLI's lever comparison)."""
    with _bench_run(settings, options, "platform") as (doc, lab):
        doc["memory_by_users"] = [
            lab.memory(users, options.target_clusters, echo) for users in options.memory_users
        ]
        doc["memory_by_clusters"] = [
            lab.memory(options.memory_cluster_users, clusters, echo)
            for clusters in options.clusters
        ]
        doc["table_by_clusters"] = [
            lab.table(clusters, options.table_sample, echo) for clusters in options.clusters
        ]
        doc["worker_by_users"] = [
            lab.worker(users, options.target_clusters, options.worker_events, echo)
            for users in options.worker_users
        ]
        doc["worker_by_clusters"] = [
            lab.worker(options.target_users, clusters, options.worker_events, echo)
            for clusters in options.clusters
        ]
        if options.drain_events:
            doc["drain"] = _drain(lab, options, echo)
        for name, measure in (more or {}).items():
            doc[name] = measure(lab)
    doc["fits"] = fits(doc, options)
    return doc


def drain_only(settings: Settings, options: PlatformOptions, echo: Echo = print) -> dict[str, Any]:
    """The platform bench's Kafka drain alone (``explore bench drain``): the worker against
    the raw consumer on one tansu, at the options' target users and clusters."""
    with _bench_run(settings, options, "drain") as (doc, lab):
        doc["drain"] = _drain(lab, options, echo)
    return doc


@contextmanager
def _bench_run(
    settings: Settings, options: PlatformOptions, name: str
) -> Iterator[tuple[dict[str, Any], _Lab]]:
    """The document a bench fills (machine, options, and the load while it ran) and a lab on
    the bench's own redis-server under ``var/bench/<name>``."""
    doc: dict[str, Any] = {
        "meta": {
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": describe_machine(),
        },
        "options": asdict(options),
    }
    run_dir = settings.var_dir / "bench" / name
    with (
        LoadMonitor() as monitor,
        RedisServer(name=f"{name}-redis", log_path=run_dir / "redis.log") as redis,
    ):
        yield doc, _Lab(_on(settings, redis), redis, run_dir, options.seed)
    doc["meta"]["load"] = monitor.summary()


def _on(settings: Settings, redis: RedisServer) -> Settings:
    """``settings`` with the bench's own redis-server as the online store's."""
    address = {"host": redis.host, "port": redis.port}
    return settings.model_copy(update={"redis": settings.redis.model_copy(update=address)})


def _drain(lab: _Lab, options: PlatformOptions, echo: Echo) -> dict[str, Any]:
    with KafkaBroker(name="platform-tansu", log_path=lab.run_dir / "tansu.log") as broker:
        return drain_bench(
            lambda: lab.prepared_worker(
                options.target_users, options.target_clusters, options.drain_events
            ),
            broker,
            profile=options.drain_profile,
            echo=echo,
        )


class _Lab:
    """One redis-server, flushed between measurements, and the stores and models over it."""

    def __init__(self, settings: Settings, redis: RedisServer, run_dir: Any, seed: int) -> None:
        self.settings = settings
        self.redis = redis
        self.client = redis.client()
        self.run_dir = run_dir
        self.seed = seed
        # Whether the table stores n + W clusters per ranking, as the worker's does.
        self.keep = True
        self._tables: set[tuple[int, int, int, int | None]] = set()

    def _store(self, name: str) -> FeastStore:
        registry = self.run_dir / name / "registry.db"
        registry.unlink(missing_ok=True)
        store = FeastStore(on_redis(self.settings, registry))
        store.apply()
        return store

    def _used(self) -> int:
        info: dict[str, Any] = self.client.info("memory")  # type: ignore[assignment]
        return int(info["used_memory"])

    # -- Redis memory --------------------------------------------------------------------------

    def memory(self, users: int, clusters: int, echo: Echo) -> dict[str, Any]:
        """States and plans of ``users`` users, ``clusters`` clusters: bytes in Redis."""
        self.client.flushall()
        store = self._store("memory")
        before = self._used()
        self.client.config_resetstat()
        started = time.perf_counter()
        rng = np.random.default_rng(self.seed)
        window = self.settings.sequence.novelty_window
        for start in range(0, users, WRITE_BATCH):
            ids = [f"p{n}" for n in range(start, min(users, start + WRITE_BATCH))]
            states = primed_states(ids, clusters, window, rng)
            store.write_sequences(states)
            store.write_plans(
                sample_plans(states, self.settings.planner.candidates, clusters, rng),
                lambda c: f"topic {c}",
                {s.user_id: s.revision_us for s in states},
            )
        seconds = time.perf_counter() - started
        used = self._used() - before
        # The server's own CPU per row (INFO commandstats): the basis for sizing shards.
        write_us = self._script_usec()
        self.client.config_resetstat()
        for start in range(0, users, WRITE_BATCH):
            store.read_sequences([f"p{n}" for n in range(start, min(users, start + WRITE_BATCH))])
        read_us = self._script_usec()
        row = {
            "users": users,
            "clusters": clusters,
            "bytes": used,
            "bytes_per_user": round(used / users, 1),
            "keys": int(self.client.dbsize()),  # type: ignore[arg-type]
            "write_seconds": round(seconds, 2),
            "rows_per_s": round(2 * users / seconds, 1),
            "server_us_per_row_written": round(write_us / (2 * users), 2),
            "server_us_per_row_read": round(read_us / users, 2),
        }
        echo(
            f"  memory: {users:>9,} users x {clusters} clusters: {used / 2**20:8.1f} MiB, "
            f"{row['bytes_per_user']:,.0f} B/user"
        )
        return row

    def _script_usec(self) -> int:
        """Microseconds redis-server spent in scripts since the last ``CONFIG RESETSTAT``."""
        stats: dict[str, Any] = self.client.info("commandstats")  # type: ignore[assignment]
        return sum(
            int(stats.get(name, {}).get("usec", 0)) for name in ("cmdstat_evalsha", "cmdstat_eval")
        )

    # -- the lookup table ----------------------------------------------------------------------

    def planner(self, clusters: int, parents: int = 25) -> BestOfNPlanner:
        """The id model (novelty + alignment, default sizes), untrained and seeded."""
        torch.manual_seed(self.seed)
        k = self.settings.sequence.history_length
        novelty = NoveltyModel(
            NoveltyConfig(
                n_clusters=clusters,
                n_parents=parents,
                parent_of=tuple(c % parents for c in range(clusters)),
                history_length=k,
            )
        )
        alignment = AlignmentModel(AlignmentConfig(n_clusters=clusters, history_length=k))
        p = self.settings.planner
        return BestOfNPlanner(novelty, alignment, p.candidates, p.temperature, p.seed, "platform")

    def cache(self) -> RankingCache:
        # No in-process copy: at the platform's size the table does not fit one.
        cache_settings = self.settings.cache.model_copy(update={"memory_entries": 0})
        p = self.settings.planner
        keep = p.candidates + self.settings.sequence.novelty_window if self.keep else None
        return RankingCache(self.client, cache_settings, p.temperature, p.seed, keep)

    def table(self, clusters: int, sample: int, echo: Echo) -> dict[str, Any]:
        """Rank ``sample`` histories (of all ``clusters**2``) into the table: time and bytes."""
        self.client.flushall()
        planner, cache = self.planner(clusters), self.cache()
        every = clusters * clusters
        histories = sample_histories(clusters, min(sample, every), self.seed)
        before = self._used()
        report = precompute(
            planner, cache, histories, self.settings.cache.precompute_batch, "sample"
        )
        used = self._used() - before
        per_entry = used / report.written
        rate = report.histories / report.seconds
        # What an entry would hold without the n + W cut: the whole ranking's JSON.
        probe = planner.rank(histories[:50])
        full = sum(len(encode_ranking(r)) for r in probe) / len(probe)
        kept = sum(len(encode_ranking(truncated(r, cache.keep))) for r in probe) / len(probe)
        full_per_entry = per_entry - kept + full
        row: dict[str, Any] = {
            "clusters": clusters,
            "histories_all": every,
            "histories_ranked": report.histories,
            "seconds": round(report.seconds, 2),
            "histories_per_s": round(rate, 1),
            "kept_clusters": cache.keep,
            "bytes_per_entry": round(per_entry, 1),
            "all_bytes": round(per_entry * every),
            "full_bytes_per_entry": round(full_per_entry, 1),
            "all_bytes_full": round(full_per_entry * every),
            "all_seconds": round(every / rate, 1),
            "all_is": "measured" if report.histories == every else "extrapolated",
        }
        echo(
            f"  table: {clusters} clusters: {rate:,.0f} histories/s, {per_entry:,.0f} B/entry "
            f"({full_per_entry:,.0f} uncut); "
            f"all {every:,}: {row['all_bytes'] / 2**20:,.0f} MiB, {row['all_seconds']:,.0f} s "
            f"({row['all_is']})"
        )
        return row

    # -- the worker ----------------------------------------------------------------------------

    def prepared_worker(
        self, users: int, clusters: int, events: int, tag: str = ""
    ) -> PreparedWorker:
        """A worker over the fast store and the warm plan table, and ``events`` platform
        events whose users all have a stored state (returning viewers).

        With a ``tag``, Redis is not flushed: the same events go to users renamed
        ``<tag><user>`` (fresh states, the same histories), and the table is ranked only if
        this table layout (cut or not) has not been filled yet: paired runs then share it."""
        if not tag:
            self.client.flushall()
            self._tables.clear()
        shape = PlatformShape(users=users, clusters=clusters, seed=self.seed)
        workload = PlatformWorkload(shape)
        catalog = workload.catalog()
        stream = list(workload.events(events))
        if tag:
            renamed = b'"user_id":"' + tag.encode()
            stream = [(tag + u, p.replace(b'"user_id":"', renamed, 1)) for u, p in stream]
        # No in-process ranking memory: the platform's table does not fit one.
        settings = self.settings.model_copy(
            update={"cache": self.settings.cache.model_copy(update={"memory_entries": 0})}
        )
        store = self._store(f"worker-{users}-{clusters}")
        rng = np.random.default_rng(self.seed)
        window, k = settings.sequence.novelty_window, settings.sequence.history_length
        ids = list(dict.fromkeys(user for user, _ in stream))
        primed: dict[str, tuple[int, ...]] = {}
        for start in range(0, len(ids), WRITE_BATCH):
            states = primed_states(ids[start : start + WRITE_BATCH], clusters, window, rng)
            store.write_sequences(states)
            primed.update((s.user_id, s.recent_clusters) for s in states)
        planner = self.planner(clusters)
        cached = CachedPlanner(planner, self.cache(), settings.planner.candidates)
        table = needed_histories(stream, catalog, primed, window, k)
        layout = (users, clusters, events, cached.cache.keep)
        if layout not in self._tables:
            precompute(planner, cached.cache, table, settings.cache.precompute_batch, "needed")
            self._tables.add(layout)
        processor = build_processor(settings, catalog, cached, store)
        # The generation marker, checked as `explore worker` checks it: in the batch's own
        # state read and write (plugin.streaming.generation).
        prefix = settings.worker.generation_key_prefix
        marker = GenerationMarker(self.client, generation_key(prefix, store.store.project))
        guard = GenerationGuard.claim(marker, has_committed=lambda: False)
        worker = StreamWorker(
            processor,
            catalog,
            settings,
            WorkerMetrics(),
            cache=cached,
            generation=guard,
            generation_in_store=store.watch_marker(marker.key, guard.verify),
        )
        return PreparedWorker(worker, cached, stream, len(ids), len(table))

    def worker(self, users: int, clusters: int, events: int, echo: Echo) -> dict[str, Any]:
        """``StreamWorker.handle`` over ``events`` platform events: events/s, plan table warm."""
        prepared = self.prepared_worker(users, clusters, events)
        worker, cached, stream = prepared.worker, prepared.cached, prepared.stream
        ids, table = range(prepared.users), range(prepared.table_entries)
        settings = worker.settings
        now = time.time()
        records = [
            Record("watch-events", 0, offset, user.encode(), payload, now)
            for offset, (user, payload) in enumerate(stream)
        ]
        batch = settings.worker.batch_size
        worker.handle(records[:batch])  # untimed: connections, scripts and caches warm
        started = time.perf_counter()
        for start in range(batch, len(records), batch):
            worker.handle(records[start : start + batch])
        seconds = time.perf_counter() - started
        stats = cached.stats
        lookups = stats.hits + stats.misses
        row = {
            "users": users,
            "clusters": clusters,
            "events": len(records) - batch,
            "distinct_users": len(ids),
            "seconds": round(seconds, 3),
            "events_per_s": round((len(records) - batch) / seconds, 1),
            "replans": worker.totals.replans,
            "table_entries": len(table),
            "table_hit_rate": round(stats.hits / lookups, 3) if lookups else None,
            "batch_size": batch,
        }
        echo(
            f"  worker: {users:>9,} users x {clusters} clusters: "
            f"{row['events_per_s']:,.0f} events/s, {row['replans']} replans, "
            f"table hit rate {row['table_hit_rate']}"
        )
        return row


def primed_states(
    ids: Sequence[str], clusters: int, window: int, rng: np.random.Generator
) -> list[UserClusterSequence]:
    """A returning viewer's state per id: a full window of distinct recent clusters."""
    out = []
    revision = to_micros(PRIMED_AT)
    for n, user_id in enumerate(ids):
        recent = tuple(
            int(c) for c in rng.choice(clusters, size=min(window, clusters), replace=False)
        )
        out.append(
            UserClusterSequence(
                user_id=user_id,
                recent_clusters=recent,
                last_event_time=PRIMED_AT,
                last_event_id=f"s{n}",
                event_count=40,
                positive_count=28,
                planned_history=recent[:2],
                planned_window=tuple(sorted(recent)),
                planned_at=PRIMED_AT,
                revision_us=revision,
            )
        )
    return out


def sample_plans(
    states: Sequence[UserClusterSequence], n: int, clusters: int, rng: np.random.Generator
) -> list[ExplorationPlan]:
    """A best-of-n plan per state: ``n`` candidates with their scores."""
    plans = []
    for state in states:
        candidates = tuple(int(c) for c in rng.integers(0, clusters, n))
        scores = tuple(float(s) for s in np.sort(rng.normal(size=n))[::-1])
        plans.append(
            ExplorationPlan(
                user_id=state.user_id,
                history=state.recent_clusters[:2],
                cluster_id=candidates[0],
                candidates=candidates,
                scores=scores,
                model_version="best-of-n-v12-0123456789abcdef",
                as_of=PRIMED_AT,
            )
        )
    return plans


def sample_histories(clusters: int, count: int, seed: int) -> list[tuple[int, ...]]:
    """``count`` distinct planning histories (pairs of distinct clusters, and single ones in
    their share C / C**2), drawn uniformly."""
    rng = np.random.default_rng(seed)
    every = clusters * clusters
    picked = rng.choice(every, size=count, replace=False)
    out: list[tuple[int, ...]] = []
    for index in picked.tolist():
        first, second = divmod(index, clusters)
        # The diagonal (c, c) stands for the single-cluster history (c,).
        out.append((first,) if first == second else (first, second))
    return out


def needed_histories(
    stream: Sequence[tuple[str, bytes]],
    catalog: ClusterCatalog,
    primed: dict[str, tuple[int, ...]],
    window: int,
    k: int,
) -> list[tuple[int, ...]]:
    """The histories the stream's users reach (every event taken as a positive watch: a
    superset), to fill the table before timing."""
    recent = dict(primed)
    seen: dict[tuple[int, ...], None] = {}
    for user, payload in stream:
        item = payload.split(b'"item_id":"', 1)[1].split(b'"', 1)[0].decode()
        cluster = catalog.cluster_of(item)
        if cluster is None:
            continue
        updated = push_cluster(recent.get(user, ()), cluster, window)
        recent[user] = updated
        seen[updated[:k]] = None
    return list(seen)


def _linear(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    slope, intercept = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    return float(slope), float(intercept)


def _power(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """``y = a * x**b`` fitted in log-log space: (a, b)."""
    b, log_a = np.polyfit(np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float)), 1)
    return float(math.exp(log_a)), float(b)


def fits(doc: dict[str, Any], o: PlatformOptions) -> dict[str, Any]:
    """Fitted growth over the three points of each table, and the platform's figures from
    them (labelled measured or extrapolated)."""
    out: dict[str, Any] = {}
    by_users = doc["memory_by_users"]
    slope, intercept = _linear([r["users"] for r in by_users], [r["bytes"] for r in by_users])
    measured_users = max(r["users"] for r in by_users)
    out["memory_vs_users"] = {
        "fit": "bytes = a + b * users",
        "b_bytes_per_user": round(slope, 1),
        "a_bytes": round(intercept),
        "at_target_bytes": round(intercept + slope * o.target_users),
        "at_target_is": "measured" if measured_users >= o.target_users else "extrapolated",
    }
    by_clusters = doc["memory_by_clusters"]
    a, b = _power([r["clusters"] for r in by_clusters], [r["bytes_per_user"] for r in by_clusters])
    out["memory_per_user_vs_clusters"] = {"fit": "bytes/user = a * clusters**b", "a": a, "b": b}
    table = doc["table_by_clusters"]
    for key, field in (
        ("table_bytes_vs_clusters", "all_bytes"),
        ("uncut_table_bytes_vs_clusters", "all_bytes_full"),
        ("precompute_s_vs_clusters", "all_seconds"),
    ):
        a, b = _power([r["clusters"] for r in table], [r[field] for r in table])
        out[key] = {
            "fit": f"{field} = a * clusters**b",
            "a": a,
            "b": b,
            "at_target": round(a * o.target_clusters**b, 1),
        }
    for key, section, x in (
        ("worker_vs_users", "worker_by_users", "users"),
        ("worker_vs_clusters", "worker_by_clusters", "clusters"),
    ):
        rows = doc[section]
        a, b = _power([r[x] for r in rows], [r["events_per_s"] for r in rows])
        out[key] = {"fit": f"events/s = a * {x}**b", "a": a, "b": b}
    return out
