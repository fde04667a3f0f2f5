"""Fresh transitions: recent counts of novel moves per history, and a planner that uses them.

The paper's plans depend on the K-cluster history only, and its lookup table is refreshed
with the models; between refreshes it cannot notice that users started moving somewhere new.
The same group later kept it fresh with frequency-based retrieval of recent transitions
(arXiv 2510.20260). Here the streaming worker keeps **recency-windowed transition counts**:

* time is cut into buckets of ``bucket_s`` seconds of *event* time (a week by default); a novel
  move ``h -> c`` at time t adds 1 to bucket ``floor(t / bucket_s)`` for ``h`` and for each
  shorter suffix of ``h`` (the most recent cluster alone), like the frequency baseline;
* the count of ``h -> c`` at time t is the sum over the last ``buckets`` buckets, each
  weighted ``0.5 ** (age / half_life_buckets)``: recent moves count most, and old ones drop out;
* the counts back off from the full history to its most recent cluster when the full history
  has fewer than ``min_support`` weighted moves.

:class:`FreshTransitions` is the in-memory table (evaluation, tests); the worker's table lives
in Redis (:mod:`plugin.adapters.fresh_transitions`) with the same keys and arithmetic.

Two ways to plan with it are measured on the time split (docs/FEEDBACK.md): the frequency
planner over fresh counts instead of the training counts, and a best-of-n variant whose
candidates get ``weight * log(1 + count)`` added to their alignment scores.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from plugin.core.moves import NovelMove
from plugin.core.planning import (
    ExplorationPlan,
    HistoryRanking,
    PlanRequest,
    RankingPlanner,
    SelectingPlanner,
    Selection,
)
from plugin.core.sequence import to_micros

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FreshWindow:
    """The counting window: bucket length, how many buckets count, and their decay."""

    bucket_s: int = 604_800  # a week
    buckets: int = 52
    half_life_buckets: float = 26.0
    min_support: float = 3.0

    def bucket(self, moment: datetime) -> int:
        return to_micros(moment) // (self.bucket_s * 1_000_000)

    def weights(self, moment: datetime) -> list[tuple[int, float]]:
        """(bucket, weight) for the buckets that count at ``moment``, newest first."""
        now = self.bucket(moment)
        return [(now - age, 0.5 ** (age / self.half_life_buckets)) for age in range(self.buckets)]


def suffixes(history: Sequence[int]) -> list[tuple[int, ...]]:
    """The history and its shorter prefixes by recency: (c1, c2) -> [(c1, c2), (c1,)]."""
    return [tuple(history[:length]) for length in range(len(history), 0, -1)]


def combine(
    per_bucket: Mapping[int, Mapping[int, float]], weights: Sequence[tuple[int, float]]
) -> dict[int, float]:
    """Decay-weighted sum of one history's per-bucket counts."""
    total: dict[int, float] = defaultdict(float)
    for bucket, weight in weights:
        for cluster, count in per_bucket.get(bucket, {}).items():
            total[cluster] += weight * count
    return dict(total)


def back_off(by_suffix: Sequence[Mapping[int, float]], min_support: float) -> dict[int, float]:
    """The counts of the longest suffix with at least ``min_support`` moves (else the last)."""
    for counts in by_suffix:
        if sum(counts.values()) >= min_support:
            return dict(counts)
    return dict(by_suffix[-1]) if by_suffix else {}


class FreshTransitions:
    """In-memory recency-windowed counts of novel moves (see the module docstring)."""

    def __init__(self, window: FreshWindow, k: int, positive_only: bool = True) -> None:
        self.window = window
        self.k = k
        self.positive_only = positive_only
        # history suffix -> bucket -> Counter(next cluster)
        self.counts: dict[tuple[int, ...], dict[int, Counter[int]]] = defaultdict(
            lambda: defaultdict(Counter)
        )

    def record(self, moves: Iterable[NovelMove]) -> int:
        """Count the moves (positive ones only when ``positive_only``); the number counted."""
        counted = 0
        for move in moves:
            if move.at is None or (self.positive_only and not move.positive):
                continue
            bucket = self.window.bucket(move.at)
            for suffix in suffixes(move.history[: self.k]):
                self.counts[suffix][bucket][move.target] += 1
            counted += 1
        return counted

    def lookup(self, history: Sequence[int], at: datetime) -> dict[int, float]:
        """Decayed counts of the next novel cluster after ``history`` at time ``at``."""
        weights = self.window.weights(at)
        found = [
            combine(self.counts[s], weights) if s in self.counts else {}
            for s in suffixes(history[: self.k])
        ]
        return back_off(found, self.window.min_support)

    def lookup_many(
        self, queries: Sequence[tuple[tuple[int, ...], datetime]]
    ) -> list[dict[int, float]]:
        return [self.lookup(history, at) for history, at in queries]


def boosted_plan(
    request: PlanRequest,
    ranking: HistoryRanking,
    fresh: Mapping[int, float],
    fresh_weight: float,
    model_version: str,
    selection: Selection,
) -> ExplorationPlan:
    """Best of the user's n candidates by the version's selection score (its weight and
    window term, :meth:`Selection.plan`) plus ``fresh_weight * log(1 + fresh count)``.

    The candidates are the ranking's (the novelty model's sample), so freshness re-orders
    what the novelty model proposed and never adds clusters it did not propose.
    """
    bonus = {cluster: fresh_weight * math.log1p(count) for cluster, count in fresh.items()}
    return selection.plan(request, ranking, model_version, bonus)


def ranked_by_count(fresh: Mapping[int, float], excluded: frozenset[int]) -> list[int]:
    """Novel clusters by fresh count, best first (ties: lower id)."""
    return [c for c, _ in sorted(fresh.items(), key=lambda e: (-e[1], e[0])) if c not in excluded]


class FreshLookup(Protocol):
    """A fresh-transition table that answers a batch of (history, time) lookups at once."""

    def lookup_many(
        self, queries: Sequence[tuple[tuple[int, ...], datetime]]
    ) -> list[dict[int, float]]: ...


class FreshBoostPlanner:
    """A :class:`~plugin.core.planning.Planner`: best-of-n over the inner planner's rankings (cached
    or not), with fresh counts added by :func:`boosted_plan`. One rank call and one table
    lookup per batch. When the table fails, plans are made without the boost."""

    def __init__(self, planner: RankingPlanner, table: FreshLookup, n: int, weight: float) -> None:
        self.planner = planner
        self.table = table
        self.n = n
        self.weight = weight

    @property
    def model_version(self) -> str:
        return f"{self.planner.model_version}+fresh"

    def plan(self, requests: Sequence[PlanRequest]) -> list[ExplorationPlan]:
        if not requests:
            return []
        rankings = self.planner.rank([r.history for r in requests])
        try:
            fresh = self.table.lookup_many([(r.history, r.as_of) for r in requests])
        except Exception as exc:
            log.warning("fresh transitions unavailable, planning without them: %s", exc)
            fresh = [{} for _ in requests]
        version = self.model_version
        # The version's own selection (n, weight, window term), as the plan cache selects:
        # the boost only adds its bonus. A planner that does not know one selects by
        # alignment alone among this planner's n.
        inner = self.planner
        chosen = (
            inner.selection(inner.model_version)
            if isinstance(inner, SelectingPlanner)
            else Selection(n=self.n)
        )
        return [
            boosted_plan(request, ranking, counts, self.weight, version, chosen)
            for request, ranking, counts in zip(requests, rankings, fresh, strict=True)
        ]
