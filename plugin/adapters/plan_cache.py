"""The plan cache: the paper's lookup table of plans per cluster history, in Redis.

What is cached is the planner's per-history :class:`HistoryRanking`, not the plan: a plan is
``select(request, ranking, n, version)``, a pure function of the ranking and the user's
excluded clusters. So a cached plan is the uncached plan by construction, and one entry serves
every user with that history whatever their novelty window holds.

Keys carry everything the ranking depends on besides the history::

    <prefix>:<model_version>:t<temperature>:s<seed>:<c1>,<c2>

so publishing a new model version, or changing the temperature or seed, starts a fresh
table; old entries expire by TTL. When planners use each version's own chosen temperature
(``selection.apply``) the temperature part is ``tchosen``: the version names it.

With ``keep`` (the worker's ``n + W``: candidates plus the novelty window), only the first
``keep`` clusters of each ranking are stored, and the key says so (``...:k<keep>:...``). That
is exact for every plan: a plan takes the first n clusters of the order that are not in the
user's window, and the window holds at most W clusters, so they are always among the first
n + W. At the platform's 500 clusters it makes an entry about 14x smaller and 14x cheaper to
decode (docs/SCALING.md), and the table grows with C**2 instead of C**3.

Per batch: one MGET, one ``rank`` call for all the misses, one pipelined SET. A Redis failure
degrades to planning without the cache, never to a failed batch.

Each process also keeps the rankings it has read or written (``cache.memory_entries``, oldest
out first), so a history seen before costs no Redis round trip at all. An entry never goes
stale: its key names everything the ranking depends on.

Only planners that expose ``rank`` can be cached (best-of-n in-process, Triton). The
transition-frequency baseline plans straight from counts and has no ranking: it bypasses the
cache (it is no :class:`~plugin.core.planning.RankingPlanner`).
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import msgspec
import redis
from tqdm import tqdm

from plugin.core.catalog import ClusterCatalog
from plugin.core.events import ORDER_KEY, WatchEvent
from plugin.core.planning import (
    ExplorationPlan,
    HistoryRanking,
    PlanRequest,
    RankingPlanner,
    SelectingPlanner,
    Selection,
)
from plugin.core.sequence import push_cluster
from plugin.settings import CacheSettings

log = logging.getLogger(__name__)


def encode_ranking(ranking: HistoryRanking) -> bytes:
    # JSON keeps Python floats exact (shortest round-trip repr), so a cached ranking selects
    # the very plan the planner would.
    return json.dumps(
        {
            "h": ranking.history,
            "o": ranking.order,
            "n": ranking.novelty_log_probs,
            "a": ranking.alignment_scores,
        },
        separators=(",", ":"),
    ).encode()


class _StoredRanking(msgspec.Struct):
    """The stored JSON of :func:`encode_ranking`, typed: msgspec checks and converts it in C
    (``json.loads`` and a ``map`` per field were the plan table's largest cost, profile)."""

    h: tuple[int, ...]
    o: tuple[int, ...]
    n: tuple[float, ...]
    a: tuple[float, ...]


_RANKING: Final = msgspec.json.Decoder(_StoredRanking)


def decode_ranking(raw: bytes) -> HistoryRanking:
    # msgspec parses floats correctly rounded, as json does: a cached ranking still selects
    # the very plan the planner would (tests/adapters/test_plan_cache.py).
    try:
        data = _RANKING.decode(raw)
    except msgspec.DecodeError:  # ValidationError too, a subclass
        # Not standard JSON: json.dumps wrote an infinite log-probability as -Infinity.
        data = msgspec.convert(json.loads(raw), _StoredRanking)
    return HistoryRanking(
        history=data.h, order=data.o, novelty_log_probs=data.n, alignment_scores=data.a
    )


def truncated(ranking: HistoryRanking, keep: int | None) -> HistoryRanking:
    """The ranking's first ``keep`` clusters (all of them when ``keep`` is None)."""
    if keep is None or len(ranking.order) <= keep:
        return ranking
    return HistoryRanking(
        history=ranking.history,
        order=ranking.order[:keep],
        novelty_log_probs=ranking.novelty_log_probs[:keep],
        alignment_scores=ranking.alignment_scores[:keep],
    )


class RankingCache:
    """Rankings per (model version, temperature, seed, history) in Redis, with a TTL."""

    def __init__(
        self,
        client: redis.Redis,
        settings: CacheSettings,
        temperature: float | None,
        seed: int,
        keep: int | None = None,
    ) -> None:
        """``keep``: clusters stored per ranking (None: all; see the module docstring)."""
        if keep is not None and keep < 1:
            raise ValueError(f"keep must be positive, got {keep}")
        self.client = client
        self.ttl_s = settings.ttl_s
        self.prefix = settings.key_prefix
        self.keep = keep
        # None: each version's chosen temperature, which its model version already names.
        chosen = "chosen" if temperature is None else repr(temperature)
        self.sampling = f"t{chosen}:s{seed}" + (f":k{keep}" if keep is not None else "")
        self.memory_entries = settings.memory_entries
        self._memory: dict[str, HistoryRanking] = {}
        self._memory_lock = threading.Lock()

    def namespace(self, model_version: str) -> str:
        return f"{self.prefix}:{model_version}:{self.sampling}"

    def key(self, model_version: str, history: tuple[int, ...]) -> str:
        return f"{self.namespace(model_version)}:{','.join(str(c) for c in history)}"

    def get_many(
        self, model_version: str, histories: Sequence[tuple[int, ...]]
    ) -> list[HistoryRanking | None]:
        """From memory, then one MGET for the rest; entries that are missing or unreadable
        come back as None."""
        keys = [self.key(model_version, h) for h in histories]
        found: list[HistoryRanking | None] = [self._memory.get(key) for key in keys]
        absent = [i for i, ranking in enumerate(found) if ranking is None]
        if not absent:
            return found
        raw = cast(list[bytes | None], self.client.mget([keys[i] for i in absent]))
        read: dict[str, HistoryRanking] = {}
        for i, value in zip(absent, raw, strict=True):
            if value is None:
                continue
            try:
                ranking = decode_ranking(value)
            except (ValueError, KeyError, TypeError):
                log.warning("unreadable plan-cache entry for history %s", histories[i])
                continue
            if ranking.history == histories[i]:
                found[i] = read[keys[i]] = ranking
        self._remember(read)
        return found

    def put_many(self, model_version: str, rankings: Iterable[HistoryRanking]) -> int:
        """One pipelined round trip of SET with the TTL; the number written."""
        pipe = self.client.pipeline(transaction=False)
        written: dict[str, HistoryRanking] = {}
        for full in rankings:
            ranking = truncated(full, self.keep)
            key = self.key(model_version, ranking.history)
            pipe.set(key, encode_ranking(ranking), ex=self.ttl_s)
            written[key] = ranking
        if written:
            pipe.execute()
            self._remember(written)
        return len(written)

    def _remember(self, rankings: dict[str, HistoryRanking]) -> None:
        if not rankings or not self.memory_entries:
            return
        with self._memory_lock:
            self._memory.update(rankings)
            overflow = len(self._memory) - self.memory_entries
            if overflow > 0:  # oldest first: dicts keep insertion order
                for key in list(itertools.islice(self._memory, overflow)):
                    del self._memory[key]

    def size(self, model_version: str) -> int:
        """Entries of one model version (SCAN, for reports; not for the hot path)."""
        pattern = f"{self.namespace(model_version)}:*"
        return sum(1 for _ in self.client.scan_iter(match=pattern, count=1000))


@dataclass
class CacheStats:
    """Per plan request: a hit is a request whose history was cached before its batch."""

    hits: int = 0
    misses: int = 0
    errors: int = 0
    rank_calls: int = 0
    histories_ranked: int = 0
    # Plans made from the cache alone while the planner failed or was late (plan_cached).
    planned_without_planner: int = 0

    @property
    def hit_rate(self) -> float | None:
        total = self.hits + self.misses
        return self.hits / total if total else None

    def as_dict(self) -> dict[str, Any]:
        rate = self.hit_rate
        return {
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": round(rate, 4) if rate is not None else None,
            "errors": self.errors,
            "rank_calls": self.rank_calls,
            "histories_ranked": self.histories_ranked,
            "planned_without_planner": self.planned_without_planner,
        }


class CachedPlanner:
    """A :class:`~plugin.core.planning.Planner` that looks rankings up before asking ``planner``."""

    def __init__(self, planner: RankingPlanner, cache: RankingCache, n: int) -> None:
        self.planner = planner
        self.cache = cache
        self.n = n
        self.stats = CacheStats()
        self._lock = threading.Lock()

    @property
    def model_version(self) -> str:
        return self.planner.model_version

    def rank(self, histories: Sequence[tuple[int, ...]]) -> list[HistoryRanking]:
        """Rankings for ``histories``: cached ones from Redis, the rest in one planner call."""
        return [ranking for ranking, _ in self._lookup(histories)]

    def selection(self, model_version: str) -> Selection:
        """The n and weight to select with from a ranking ``model_version`` made: the
        planner's for that version when it knows them, else the cache's own n (weight 1)."""
        if isinstance(self.planner, SelectingPlanner):
            return self.planner.selection(model_version)
        return Selection(n=self.n)

    def _select(
        self,
        request: PlanRequest,
        ranking: HistoryRanking,
        version: str,
        chosen: Selection | None = None,
    ) -> ExplorationPlan:
        chosen = chosen or self.selection(version)
        keep = self.cache.keep
        if (
            keep is not None
            and len(ranking.order) >= keep
            and chosen.n + len(request.excluded) > keep
        ):
            # A truncated ranking may not hold this plan's n candidates: a version chose an n
            # outside the grid the cache was sized for. Loud, never a silently worse plan.
            raise ValueError(
                f"plan cache keeps {keep} clusters per ranking, but version {version} plans "
                f"the best of {chosen.n} avoiding {len(request.excluded)} clusters: add "
                f"{chosen.n} to selection.candidates (or raise planner.candidates)"
            )
        return chosen.plan(request, ranking, version)

    def plan(self, requests: Sequence[PlanRequest]) -> list[ExplorationPlan]:
        found = self._lookup([request.history for request in requests])
        # One selection per version and call, not per plan: asking the planner (a runtime
        # Protocol check, then its manifest) per plan was 2-3 % of a batch (profile).
        chosen: dict[str, Selection] = {}
        plans = []
        for request, (ranking, version) in zip(requests, found, strict=True):
            selection = chosen.get(version)
            if selection is None:
                selection = chosen[version] = self.selection(version)
            plans.append(self._select(request, ranking, version, selection))
        return plans

    def plan_cached(self, requests: Sequence[PlanRequest]) -> list[ExplorationPlan]:
        """Plans for the requests whose history is cached, without asking the planner: what a
        batch still gets when the planner fails or misses its deadline (the others stay
        pending). Not counted as hits or misses: the failed call was the lookup."""
        version = self.planner.model_version
        unique = list(dict.fromkeys(request.history for request in requests))
        try:
            cached = self.cache.get_many(version, unique)
        except redis.RedisError as exc:
            log.warning("plan cache unavailable too: %s", exc)
            self._count(errors=1)
            return []
        found = {h: r for h, r in zip(unique, cached, strict=True) if r is not None}
        plans = [
            self._select(request, found[request.history], version)
            for request in requests
            if request.history in found
        ]
        self._count(planned_without_planner=len(plans))
        return plans

    def _lookup(self, histories: Sequence[tuple[int, ...]]) -> list[tuple[HistoryRanking, str]]:
        """Each history's ranking with the model version that made it."""
        unique = list(dict.fromkeys(histories))
        # A planner can switch versions between calls (a Triton publish), so the version is
        # read per call: before, for the lookup; after, for what the planner just served.
        version = self.planner.model_version
        try:
            cached = self.cache.get_many(version, unique)
        except redis.RedisError as exc:
            log.warning("plan cache unavailable, planning without it: %s", exc)
            cached = [None] * len(unique)
            self._count(errors=1)
        found = {h: (r, version) for h, r in zip(unique, cached, strict=True) if r is not None}
        missing = [h for h in unique if h not in found]
        if missing:
            fresh = self.planner.rank(missing)
            served = self.planner.model_version
            found.update((h, (r, served)) for h, r in zip(missing, fresh, strict=True))
            try:
                self.cache.put_many(served, fresh)
            except redis.RedisError as exc:
                log.warning("plan cache write failed: %s", exc)
                self._count(errors=1)
        hits = sum(1 for h in histories if h not in missing)
        self._count(
            hits=hits,
            misses=len(histories) - hits,
            rank_calls=int(bool(missing)),
            histories_ranked=len(missing),
        )
        return [found[h] for h in histories]

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self.stats, name, getattr(self.stats, name) + delta)


def all_histories(n_clusters: int, k: int) -> Iterator[tuple[int, ...]]:
    """Every planning history: ordered tuples of 1..K distinct clusters."""
    for length in range(1, k + 1):
        yield from itertools.permutations(range(n_clusters), length)


def count_all_histories(n_clusters: int, k: int) -> int:
    total, term = 0, 1
    for length in range(k):
        term *= n_clusters - length
        total += term
    return total


def seen_histories(
    events: Iterable[WatchEvent], catalog: ClusterCatalog, k: int, window: int
) -> list[tuple[int, ...]]:
    """Every planning history users reached in ``events`` (applied in time order), once each."""
    recent: dict[str, tuple[int, ...]] = {}
    seen: dict[tuple[int, ...], None] = {}
    for event in sorted(events, key=ORDER_KEY):
        cluster = catalog.cluster_of(event.item_id)
        if cluster is None:
            continue
        updated = push_cluster(recent.get(event.user_id, ()), cluster, window)
        recent[event.user_id] = updated
        seen[updated[:k]] = None
    return list(seen)


@dataclass
class PrecomputeReport:
    source: str
    histories: int = 0
    written: int = 0
    rank_calls: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "histories": self.histories,
            "written": self.written,
            "rank_calls": self.rank_calls,
            "seconds": round(self.seconds, 3),
            "histories_per_second": round(self.histories / self.seconds, 1)
            if self.seconds
            else None,
        }


def precompute(
    planner: RankingPlanner,
    cache: RankingCache,
    histories: Iterable[tuple[int, ...]],
    batch_size: int,
    source: str,
    total: int | None = None,
    progress: bool = False,
) -> PrecomputeReport:
    """Rank ``histories`` in chunks of ``batch_size`` and store every ranking; with
    ``progress``, a bar over ``total`` histories with its rate and ETA."""
    report = PrecomputeReport(source=source)
    started = time.perf_counter()
    iterator = iter(histories)
    with tqdm(total=total, desc="precompute", unit="history", disable=not progress) as bar:
        while chunk := list(itertools.islice(iterator, batch_size)):
            rankings = planner.rank(chunk)
            report.rank_calls += 1
            report.histories += len(chunk)
            report.written += cache.put_many(planner.model_version, rankings)
            bar.update(len(chunk))
    report.seconds = time.perf_counter() - started
    return report
