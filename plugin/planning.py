"""Plans and planners: the contract between the core and whatever proposes the next interest.

A planner turns a batch of :class:`PlanRequest` into :class:`ExplorationPlan` objects, one per
request, in request order. Every planner (transition frequency, in-process best-of-n, Triton)
implements the same :class:`Planner` protocol, so drivers never know which one they hold.
"""

from __future__ import annotations

from collections.abc import Sequence
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
