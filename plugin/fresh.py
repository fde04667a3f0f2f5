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
from typing import Any, Protocol

from plugin.models.data import NovelMove
from plugin.models.planner import HistoryRanking
from plugin.planning import ExplorationPlan, PlanRequest, best_of_n
from plugin.sequence import to_micros

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
    n: int,
    weight: float,
    model_version: str,
) -> ExplorationPlan:
    """Best of the user's n candidates by ``alignment + weight * log(1 + fresh count)``.

    The candidates are the ranking's (the novelty model's sample), so freshness re-orders
    what the novelty model proposed and never adds clusters it did not propose.
    """
    candidates: list[int] = []
    scores: list[float] = []
    for cluster, score in zip(ranking.order, ranking.alignment_scores, strict=True):
        if cluster in request.excluded:
            continue
        candidates.append(cluster)
        scores.append(score + weight * math.log1p(fresh.get(cluster, 0.0)))
        if len(candidates) == n:
            break
    return best_of_n(request, candidates, scores, model_version)


def ranked_by_count(fresh: Mapping[int, float], excluded: frozenset[int]) -> list[int]:
    """Novel clusters by fresh count, best first (ties: lower id)."""
    return [c for c, _ in sorted(fresh.items(), key=lambda e: (-e[1], e[0])) if c not in excluded]


class FreshLookup(Protocol):
    """A fresh-transition table that answers a batch of (history, time) lookups at once."""

    def lookup_many(
        self, queries: Sequence[tuple[tuple[int, ...], datetime]]
    ) -> list[dict[int, float]]: ...


class _RankingPlanner(Protocol):
    @property
    def model_version(self) -> str: ...

    def rank(self, histories: Sequence[tuple[int, ...]]) -> list[HistoryRanking]: ...


class FreshBoostPlanner:
    """A :class:`~plugin.planning.Planner`: best-of-n over the inner planner's rankings (cached
    or not), with fresh counts added by :func:`boosted_plan`. One rank call and one table
    lookup per batch. When the table fails, plans are made without the boost."""

    def __init__(self, planner: _RankingPlanner, table: FreshLookup, n: int, weight: float) -> None:
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
        return [
            boosted_plan(request, ranking, counts, self.n, self.weight, version)
            for request, ranking, counts in zip(requests, rankings, fresh, strict=True)
        ]


def evaluate_fresh(
    workspace: Any, settings: Any, version: int | None = None, weights: Sequence[float] = (0.5, 1.0)
) -> dict[str, Any]:
    """Measure fresh transitions on the time split (``explore feedback fresh-eval``).

    The held-out novel engagements are planned in time order. The *streamed* table starts
    with the training part's positive moves and counts each held-out move once it has been
    planned, as the worker would; the *static* control keeps the training counts with no
    window or decay. Both are used as a frequency planner (backing off to the training
    frequency planner's order) and as a boost on best-of-n's candidates; every row is scored
    with the offline evaluation's :func:`~plugin.evaluation.score`.
    """
    from plugin.evaluation import MethodOutput, in_chunks, requests_for, score
    from plugin.evaluation import best_of_n_method as best_of_n_rows
    from plugin.evaluation import frequency_method as frequency_rows
    from plugin.models.fit import training_data
    from plugin.wiring import best_of_n_planner, frequency_planner

    data = training_data(workspace, settings)
    cases = data.heldout_moves
    if not cases:
        raise ValueError("the held-out part has no novel engagements to evaluate on")
    planner = best_of_n_planner(settings, workspace.catalog, version)
    baseline = frequency_planner(workspace, settings)
    n, clusters, k = (
        settings.planner.candidates,
        len(workspace.catalog),
        planner.novelty.config.history_length,
    )
    config = settings.feedback
    streamed_window = FreshWindow(
        config.fresh_bucket_s, config.fresh_buckets, config.fresh_half_life_buckets
    )
    # One bucket of about 31 years, no decay: every training move counts, forever.
    static_window = FreshWindow(10**9, 1, float("inf"))
    rankings: list[HistoryRanking] = []
    for start in range(0, len(cases), 1024):
        rankings += planner.rank([m.history for m in cases[start : start + 1024]])
    requests = requests_for(cases)
    methods: dict[str, dict[str, float]] = {
        "best_of_n": score(cases, in_chunks(cases, best_of_n_rows(planner, n)), clusters),
        "transition_frequency": score(
            cases, in_chunks(cases, frequency_rows(baseline, n)), clusters
        ),
    }
    for name, window, stream in (
        ("fresh", streamed_window, True),
        ("train_counts", static_window, False),
    ):
        table = FreshTransitions(window, k)
        table.record(data.train_moves)
        boosted: dict[float, tuple[list[int], list[list[int]]]] = {w: ([], []) for w in weights}
        frequency: tuple[list[int], list[list[int]]] = ([], [])
        for move, request, ranking in zip(cases, requests, rankings, strict=True):
            counts = table.lookup(move.history, move.at or request.as_of)
            for weight in weights:
                plan = boosted_plan(request, ranking, counts, n, weight, "fresh")
                boosted[weight][0].append(plan.cluster_id)
                boosted[weight][1].append(list(plan.candidates))
            order = ranked_by_count(counts, request.excluded)
            order += [c for c, _ in baseline.ranked(request) if c not in order]
            frequency[0].append(order[0])
            frequency[1].append(order[:n])
            if stream:
                table.record([move])
        methods[f"{name}_frequency"] = score(cases, MethodOutput(*frequency), clusters)
        for weight in weights:
            methods[f"best_of_n+{name}_boost_{weight:g}"] = score(
                cases, MethodOutput(*boosted[weight]), clusters
            )
    return {
        "methods": methods,
        "window": {
            "bucket_s": streamed_window.bucket_s,
            "buckets": streamed_window.buckets,
            "half_life_buckets": streamed_window.half_life_buckets,
            "min_support": streamed_window.min_support,
        },
        "cases": len(cases),
        "positive_cases": sum(m.positive for m in cases),
        "model_version": planner.model_version,
    }
