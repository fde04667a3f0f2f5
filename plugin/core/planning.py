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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
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


class PlanningError(RuntimeError):
    """A planner could not plan a request; the message says which and why."""


def best_of_n(
    request: PlanRequest,
    candidates: Sequence[int],
    scores: Sequence[float],
    model_version: str,
) -> ExplorationPlan:
    """Pick the highest-scoring candidate; ties go to the earlier candidate (stable sort).

    Candidates in ``request.excluded`` are dropped: a plan is novel by construction.
    """
    ranked = sorted(
        (
            (float(score), index, int(cluster))
            for index, (cluster, score) in enumerate(zip(candidates, scores, strict=True))
            if cluster not in request.excluded
        ),
        key=lambda entry: (-entry[0], entry[1]),
    )
    if not ranked:
        raise PlanningError(f"user {request.user_id}: no novel candidate to plan")
    return ExplorationPlan(
        user_id=request.user_id,
        history=request.history,
        cluster_id=ranked[0][2],
        candidates=tuple(cluster for _, _, cluster in ranked),
        scores=tuple(score for score, _, _ in ranked),
        model_version=model_version,
        as_of=request.as_of,
    )


def select(
    request: PlanRequest,
    ranking: HistoryRanking,
    n: int,
    model_version: str,
    bonus: Mapping[int, float] | None = None,
) -> ExplorationPlan:
    """The user's n candidates (the first n novel clusters of the ranking), best by alignment.

    ``bonus`` adds a per-cluster amount to the alignment scores (the fresh-transition boost);
    it re-orders what the novelty model proposed and never adds a cluster it did not propose.
    """
    candidates: list[int] = []
    scores: list[float] = []
    for cluster, score in zip(ranking.order, ranking.alignment_scores, strict=True):
        if cluster in request.excluded:
            continue
        candidates.append(cluster)
        scores.append(score + (bonus.get(cluster, 0.0) if bonus else 0.0))
        if len(candidates) == n:
            break
    return best_of_n(request, candidates, scores, model_version)
