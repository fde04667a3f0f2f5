"""The transition-frequency planner: the baseline every learned planner must beat.

It counts, over the training events, how often a history of K unique clusters was followed by
each *novel* next cluster (one outside the user's novelty window at that time), and plans the
most frequent novel successor of the user's history. Histories never seen back off to shorter
suffixes of themselves (the most recent cluster alone), then to global novel-cluster
popularity, so every user gets a plan.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from plugin.core.catalog import ClusterCatalog
from plugin.core.events import WatchEvent
from plugin.core.moves import walk_novel_moves
from plugin.core.planning import ExplorationPlan, PlanningError, PlanRequest, best_of_n
from plugin.settings import SequenceSettings


class TransitionCounts:
    """history prefix -> Counter(next novel cluster), for every prefix length 1..K."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.by_history: dict[tuple[int, ...], Counter[int]] = defaultdict(Counter)
        self.popularity: Counter[int] = Counter()
        self.transitions = 0

    def add(self, recent: tuple[int, ...], next_cluster: int) -> None:
        """Count one novel transition from the user's recent clusters to ``next_cluster``."""
        for length in range(1, min(self.k, len(recent)) + 1):
            self.by_history[recent[:length]][next_cluster] += 1
        self.popularity[next_cluster] += 1
        self.transitions += 1

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for history in sorted(self.by_history):
            digest.update(repr((history, sorted(self.by_history[history].items()))).encode())
        return digest.hexdigest()[:12]


def count_novel_transitions(
    events: Iterable[WatchEvent], catalog: ClusterCatalog, k: int, window: int
) -> TransitionCounts:
    """Walk each user's events in order and count history -> next-novel-cluster transitions.

    A transition is novel when the next cluster is not among the user's W most recent unique
    clusters: exactly the clusters a plan for that user would be allowed to propose.
    """
    counts = TransitionCounts(k)
    for _, recent, cluster in walk_novel_moves(events, catalog, window):
        counts.add(recent, cluster)
    return counts


class TransitionFrequencyPlanner:
    """Plans the most frequent novel successor of the history, with back-off.

    Candidates are the top ``n`` novel clusters by count; their scores are the empirical
    probabilities of the longest matching history (popularity for the fallback).
    """

    def __init__(self, counts: TransitionCounts, catalog: ClusterCatalog, n: int = 16) -> None:
        self.counts = counts
        self.n = n
        self._all_clusters = range(len(catalog))
        self._version = f"frequency-{catalog.version[:8]}-{counts.fingerprint()}"

    @property
    def model_version(self) -> str:
        return self._version

    def plan(self, requests: Sequence[PlanRequest]) -> list[ExplorationPlan]:
        return [self._plan_one(request) for request in requests]

    def ranked(self, request: PlanRequest) -> list[tuple[int, float]]:
        """Novel clusters with scores, best first: longest history match, then popularity."""
        for length in range(min(self.counts.k, len(request.history)), 0, -1):
            counter = self.counts.by_history.get(request.history[:length])
            if counter:
                ranked = _novel_by_count(counter, request.excluded)
                if ranked:
                    return ranked
        ranked = _novel_by_count(self.counts.popularity, request.excluded)
        if ranked:
            return ranked
        # No training data at all for what is left: any novel cluster, lowest id first.
        return [(c, 0.0) for c in self._all_clusters if c not in request.excluded]

    def _plan_one(self, request: PlanRequest) -> ExplorationPlan:
        ranked = self.ranked(request)[: self.n]
        if not ranked:
            raise PlanningError(f"user {request.user_id}: every cluster is in the novelty window")
        return best_of_n(
            request,
            [cluster for cluster, _ in ranked],
            [score for _, score in ranked],
            self.model_version,
        )


def _novel_by_count(counter: Counter[int], excluded: frozenset[int]) -> list[tuple[int, float]]:
    novel = [(cluster, count) for cluster, count in counter.items() if cluster not in excluded]
    total = sum(count for _, count in novel)
    novel.sort(key=lambda entry: (-entry[1], entry[0]))
    return [(cluster, count / total) for cluster, count in novel]


def frequency_planner(
    events: Iterable[WatchEvent], catalog: ClusterCatalog, sequence: SequenceSettings, n: int
) -> TransitionFrequencyPlanner:
    """The transition-frequency baseline, counted on ``events`` (the training part only)."""
    counts = count_novel_transitions(
        events, catalog, k=sequence.history_length, window=sequence.novelty_window
    )
    return TransitionFrequencyPlanner(counts, catalog, n=n)
