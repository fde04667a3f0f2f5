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
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from itertools import islice
from operator import itemgetter, mul
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class PlanRequest:
    """Plan one user's next novel cluster from their history, avoiding ``excluded``.

    ``window`` is the same novelty window in recency order, most recent first: what a window
    term that weighs clusters by recency reads (:class:`WindowTransitions`). Empty means the
    order is unknown, which only a uniform window term accepts."""

    user_id: str
    history: tuple[int, ...]
    excluded: frozenset[int]
    as_of: datetime
    window: tuple[int, ...] = ()


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
class WindowTransitions:
    """How a user's whole novelty window bears on a candidate (docs/MODELS.md, "The window
    term").

    The plan table is keyed by the K=2 history; the window (the W recent clusters every
    request carries, as ``excluded`` and in recency order as ``window``) is the only per-user
    context at selection. A learned ``[from][to]`` matrix (:mod:`plugin.models.window`: a
    bag-of-window softmax over the novel clusters, fit on the training part's novel moves)
    gives each cluster of the window a score for every target; a candidate's window score is
    the weighted mean of its column over the window's clusters, the cluster of age a (0: the
    most recent) weighing ``decay ** a`` (:func:`recency_weights`; 1: the uniform mean).
    Selection compares candidates of one user, so only differences between targets matter;
    a cluster outside the matrix adds nothing.
    """

    scores_by_target: tuple[tuple[float, ...], ...]  # [to][from]
    decay: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.decay <= 1.0:
            raise ValueError(f"window decay must be in (0, 1], got {self.decay}")

    @classmethod
    def from_matrix(
        cls, matrix: Sequence[Sequence[float]], decay: float = 1.0
    ) -> WindowTransitions:
        """From a square ``matrix[from][to]`` (what the window model learns)."""
        size = len(matrix)
        if any(len(row) != size for row in matrix):
            raise ValueError("the window transition matrix must be square")
        if not all(math.isfinite(value) for row in matrix for value in row):
            raise ValueError("the window transition matrix must be finite")
        return cls(tuple(tuple(float(row[to]) for row in matrix) for to in range(size)), decay)

    @property
    def ordered(self) -> bool:
        """Whether the scores read the window's order (a decay below 1)."""
        return self.decay < 1.0

    def scores(self, window: Collection[int], clusters: Iterable[int]) -> list[float]:
        """Each cluster's weighted mean score over the window's known clusters (0 for an
        empty window or an unknown cluster). ``window`` is most recent first when the
        scores read its order; a set does only at decay 1."""
        size = len(self.scores_by_target)
        known = [w for w in window if 0 <= w < size]
        if not known:
            return [0.0 for _ in clusters]
        columns = self.scores_by_target
        # One C-level gather per candidate (select runs per replan: measured 3x faster than
        # a generator over the window).
        gather = itemgetter(*known) if len(known) > 1 else (lambda column: (column[known[0]],))
        if not self.ordered:
            share = 1.0 / len(known)
            return [sum(gather(columns[c])) * share if 0 <= c < size else 0.0 for c in clusters]
        weights = recency_weights(len(known), self.decay)
        return [
            sum(map(mul, gather(columns[c]), weights)) if 0 <= c < size else 0.0 for c in clusters
        ]


# Cached: select asks for them on every replan, and a version has one decay and a window
# length of at most W, so a handful of entries cover every call.
@lru_cache(maxsize=256)
def recency_weights(count: int, decay: float) -> tuple[float, ...]:
    """The window term's weights of ``count`` clusters, most recent first: ``decay ** age``,
    summing to 1 (the uniform mean at decay 1). The window model trains on the same
    weights it serves with."""
    raw = [decay**age for age in range(count)]
    total = sum(raw)
    return tuple(weight / total for weight in raw)


@dataclass(frozen=True)
class Selection:
    """How a version picks its plan: the n candidates it samples at ``temperature`` and the
    ``weight`` of the alignment score against the novelty log-probability (1: alignment
    alone, as in the paper; 0: the novelty model alone), plus ``window_weight`` times the
    candidate's :class:`WindowTransitions` score over the user's window (0: none).
    ``explore train`` chooses them on a validation split and records them in the version's
    manifest."""

    n: int = 16
    temperature: float = 1.5
    weight: float = 1.0
    window_weight: float = 0.0
    transitions: WindowTransitions | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be finite and > 0, got {self.temperature}")
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"weight must be in [0, 1], got {self.weight}")
        if not (math.isfinite(self.window_weight) and self.window_weight >= 0):
            raise ValueError(f"window_weight must be finite and >= 0, got {self.window_weight}")
        if self.window_weight > 0 and self.transitions is None:
            raise ValueError("window_weight > 0 needs the version's window transitions")

    def plan(
        self,
        request: PlanRequest,
        ranking: HistoryRanking,
        model_version: str,
        bonus: Mapping[int, float] | None = None,
    ) -> ExplorationPlan:
        """The plan :func:`select` makes from ``ranking`` with this selection: every path
        that selects (planner, plan cache, fresh boost) goes through here, so none can
        drop a term."""
        return select(
            request,
            ranking,
            self.n,
            model_version,
            bonus,
            self.weight,
            self.window_weight,
            self.transitions,
        )

    def scalars(self) -> dict[str, float]:
        """The chosen values alone (what a manifest records), without the transitions."""
        return {
            "n": self.n,
            "temperature": self.temperature,
            "weight": self.weight,
            "window_weight": self.window_weight,
        }


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


def window_scored(
    request: PlanRequest,
    candidates: Sequence[int],
    scores: Sequence[float],
    window_weight: float,
    transitions: WindowTransitions | None,
) -> list[float]:
    """``scores`` plus ``window_weight`` times each candidate's window score over the
    request's window; unchanged at weight 0 or without transitions. A term that reads the
    window's order needs the request's ordered ``window`` (a ``PlanningError`` if it has
    only the set)."""
    if window_weight <= 0.0 or transitions is None:
        return list(scores)
    window: Collection[int] = request.window or request.excluded
    if transitions.ordered and not request.window and len(request.excluded) > 1:
        raise PlanningError(
            f"user {request.user_id}: the version's window term weighs the window by recency "
            "(window decay < 1), but the request's window has no order: build it with "
            "PlanRequest.window (most recent first)"
        )
    terms = transitions.scores(window, candidates)
    return [score + window_weight * term for score, term in zip(scores, terms, strict=True)]


def select(
    request: PlanRequest,
    ranking: HistoryRanking,
    n: int,
    model_version: str,
    bonus: Mapping[int, float] | None = None,
    weight: float = 1.0,
    window_weight: float = 0.0,
    transitions: WindowTransitions | None = None,
) -> ExplorationPlan:
    """The user's n candidates (the first n novel clusters of the ranking), best by
    :func:`selection_score` (alignment alone at the default ``weight`` 1), plus
    ``window_weight`` times the candidate's window score (:class:`WindowTransitions`).

    ``bonus`` adds a per-cluster amount to the scores (the fresh-transition boost);
    it re-orders what the novelty model proposed and never adds a cluster it did not propose.
    The window term re-orders the same candidates too: a plan stays novel by construction.
    """
    excluded = request.excluded
    windowed = window_weight > 0.0 and transitions is not None
    if weight >= 1.0 and not bonus and not windowed:
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
        if cluster in excluded:
            continue
        candidates.append(cluster)
        scores.append(selection_score(score, log_prob, weight))
        if len(candidates) == n:
            break
    scores = window_scored(request, candidates, scores, window_weight, transitions)
    if bonus:
        scores = [s + bonus.get(c, 0.0) for c, s in zip(candidates, scores, strict=True)]
    return best_of_n(request, candidates, scores, model_version)
