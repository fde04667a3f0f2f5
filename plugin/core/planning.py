"""Plans and planners: the contract between the core and whatever proposes the next interest.

A planner turns a batch of :class:`PlanRequest` into :class:`ExplorationPlan` objects, one per
request, in request order. Every planner (transition frequency, in-process best-of-n, Triton)
implements the same :class:`Planner` protocol, so drivers never know which one they hold.

Learned planners go through a per-history :class:`HistoryRanking`: every cluster in Gumbel
order (the novelty model's sample without replacement at temperature T) with its alignment
score. A user's n candidates are the first n clusters of that order outside their novelty
window, and the plan is the best of those (:func:`select`). The ranking depends on the history
alone, so the in-process planner, the Triton planner model and the plan cache give identical
plans, and the cache can store rankings per history and still honour each user's own window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from operator import itemgetter
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class PlanRequest:
    """Plan one user's next novel cluster from their history, avoiding ``excluded``."""

    user_id: str
    history: tuple[int, ...]
    excluded: frozenset[int]
    as_of: datetime


@dataclass(frozen=True)
class ExplorationPlan:
    """The best-of-n plan for one user, with every candidate and its score.

    ``candidates`` and ``scores`` are parallel and sorted best first, so
    ``candidates[0] == cluster_id``. ``as_of`` is the event time of the state the plan was
    made from (never a wall-clock time, so replays give identical plans).
    """

    user_id: str
    history: tuple[int, ...]
    cluster_id: int
    candidates: tuple[int, ...]
    scores: tuple[float, ...]
    model_version: str
    as_of: datetime

    def __post_init__(self) -> None:
        if len(self.candidates) != len(self.scores):
            raise ValueError("candidates and scores must have the same length")
        if not self.candidates or self.candidates[0] != self.cluster_id:
            raise ValueError("the planned cluster must be the first candidate")


@runtime_checkable
class Planner(Protocol):
    """Anything that plans a batch of requests. One call per batch, never per user."""

    @property
    def model_version(self) -> str: ...

    def plan(self, requests: Sequence[PlanRequest]) -> list[ExplorationPlan]: ...


@dataclass(frozen=True)
class HistoryRanking:
    """All clusters for one history, in sampling order, with their two models' scores."""

    history: tuple[int, ...]
    order: tuple[int, ...]
    novelty_log_probs: tuple[float, ...]
    alignment_scores: tuple[float, ...]


@runtime_checkable
class RankingPlanner(Protocol):
    """A planner whose plans come from per-history rankings (so it can sit behind the cache)."""

    @property
    def model_version(self) -> str: ...

    def rank(self, histories: Sequence[tuple[int, ...]]) -> list[HistoryRanking]: ...


@dataclass(frozen=True)
class Selection:
    """How a version picks its plan: the n candidates it samples at ``temperature`` and the
    ``weight`` of the alignment score against the novelty log-probability (1: alignment
    alone, as in the paper; 0: the novelty model alone). ``explore train`` chooses all three
    on a validation split and records them in the version's manifest."""

    n: int = 16
    temperature: float = 1.5
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be finite and > 0, got {self.temperature}")
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"weight must be in [0, 1], got {self.weight}")


@runtime_checkable
class SelectingPlanner(Protocol):
    """A ranking planner that knows each served version's :class:`Selection` (the plan cache
    selects from cached rankings with the n and weight of the version that made them)."""

    def selection(self, model_version: str) -> Selection: ...


def log_sigmoid(x: float) -> float:
    """``log(1 / (1 + exp(-x)))`` without overflow; -inf stays -inf."""
    if x >= 0:
        return -math.log1p(math.exp(-x))
    if x == -math.inf:
        return -math.inf
    return x - math.log1p(math.exp(x))


def selection_score(alignment: float, novelty_log_prob: float, weight: float) -> float:
    """The score best-of-n maximises: ``w log sigmoid(a) + (1 - w) log p(c | h)``.

    The pointwise alignment model is a logistic model of the positive share, so
    ``log sigmoid(a)`` is its log-probability and the mixture is a weighted product of the two
    models' probabilities. At w=1 the raw alignment score is returned: the same order as its
    log-sigmoid (the paper's rule), and the score plans always carried.
    """
    if weight >= 1.0:
        return alignment
    if weight <= 0.0:
        return novelty_log_prob
    return weight * log_sigmoid(alignment) + (1.0 - weight) * novelty_log_prob


class PlanningError(RuntimeError):
    """A planner could not plan a request; the message says which and why."""


_SCORE = itemgetter(1)


def best_of_n(
    request: PlanRequest,
    candidates: Sequence[int],
    scores: Sequence[float],
    model_version: str,
) -> ExplorationPlan:
    """Pick the highest-scoring candidate; ties go to the earlier candidate (stable sort).

    Candidates in ``request.excluded`` are dropped: a plan is novel by construction.
    """
    excluded = request.excluded
    ranked = [
        (int(cluster), float(score))
        for cluster, score in zip(candidates, scores, strict=True)
        if cluster not in excluded
    ]
    if not ranked:
        raise PlanningError(f"user {request.user_id}: no novel candidate to plan")
    # Highest score first; a reversed sort is still stable, so ties keep the candidates'
    # order. One list sorted in place by a C key, then split by zip: no generator frame
    # per candidate (the plan table's select runs this for every replan).
    ranked.sort(key=_SCORE, reverse=True)
    clusters, ordered = zip(*ranked, strict=True)
    return ExplorationPlan(
        user_id=request.user_id,
        history=request.history,
        cluster_id=clusters[0],
        candidates=clusters,
        scores=ordered,
        model_version=model_version,
        as_of=request.as_of,
    )


def select(
    request: PlanRequest,
    ranking: HistoryRanking,
    n: int,
    model_version: str,
    bonus: Mapping[int, float] | None = None,
    weight: float = 1.0,
) -> ExplorationPlan:
    """The user's n candidates (the first n novel clusters of the ranking), best by
    :func:`selection_score` (alignment alone at the default ``weight`` 1).

    ``bonus`` adds a per-cluster amount to the scores (the fresh-transition boost);
    it re-orders what the novelty model proposed and never adds a cluster it did not propose.
    """
    excluded = request.excluded
    if weight >= 1.0 and not bonus:
        # The default: alignment alone (selection_score returns it), no call per candidate.
        novel = islice(
            (
                (cluster, score)
                for cluster, score in zip(ranking.order, ranking.alignment_scores, strict=True)
                if cluster not in excluded
            ),
            n,
        )
        picked = list(novel)
        return best_of_n(request, [c for c, _ in picked], [s for _, s in picked], model_version)
    candidates: list[int] = []
    scores: list[float] = []
    for cluster, log_prob, score in zip(
        ranking.order, ranking.novelty_log_probs, ranking.alignment_scores, strict=True
    ):
        if cluster in request.excluded:
            continue
        candidates.append(cluster)
        mixed = selection_score(score, log_prob, weight)
        scores.append(mixed + (bonus.get(cluster, 0.0) if bonus else 0.0))
        if len(candidates) == n:
            break
    return best_of_n(request, candidates, scores, model_version)
