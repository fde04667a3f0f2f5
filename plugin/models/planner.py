"""Best-of-n planning with the two models: novelty proposes n, alignment picks the best.

The ranking and selection rules are the core's (:mod:`plugin.core.planning`); this module runs
the two torch models over a batch of histories to produce the rankings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import Tensor

from plugin.core.catalog import ClusterCatalog
from plugin.core.planning import (
    ExplorationPlan,
    HistoryRanking,
    PlanRequest,
    Selection,
    WindowTransitions,
)
from plugin.models.alignment import AlignmentModel
from plugin.models.novelty import ClusterNovelty, history_seed, perturbed_order
from plugin.models.repository import ModelRepository, check_catalog, version_selection
from plugin.models.threads import single_threaded
from plugin.settings import Settings


def histories_tensor(histories: Sequence[tuple[int, ...]], k: int) -> Tensor:
    rows = [list(h[:k]) + [-1] * (k - len(h[:k])) for h in histories]
    return torch.tensor(rows, dtype=torch.long).reshape(len(rows), k)


def allowed_mask(excluded: Sequence[frozenset[int]], n_clusters: int) -> Tensor:
    allowed = torch.ones(len(excluded), n_clusters, dtype=torch.bool)
    for row, clusters in enumerate(excluded):
        index = [c for c in clusters if 0 <= c < n_clusters]
        if index:
            allowed[row, index] = False
    return allowed


@torch.inference_mode()
def rank_histories(
    novelty: ClusterNovelty,
    alignment: AlignmentModel,
    histories: Tensor,
    temperature: float,
    seeds: list[int],
) -> tuple[Tensor, Tensor, Tensor]:
    """One novelty pass and one alignment pass for a batch of histories [B, K].

    Returns the sampling order [B, C], and the novelty log-probs and alignment scores of
    the clusters in that order [B, C].
    """
    log_probs = novelty.cluster_log_probs(histories)
    order = perturbed_order(log_probs, temperature, seeds)
    return order, log_probs.gather(1, order), alignment(histories, order)


def rankings_from(
    histories: Sequence[tuple[int, ...]], order: Tensor, log_probs: Tensor, scores: Tensor
) -> list[HistoryRanking]:
    return [
        HistoryRanking(tuple(h), tuple(o), tuple(lp), tuple(s))
        for h, o, lp, s in zip(
            histories, order.tolist(), log_probs.tolist(), scores.tolist(), strict=True
        )
    ]


class BestOfNPlanner:
    """The paper's planner, in-process: one novelty pass and one alignment pass per batch.

    The best of the n candidates is the one with the highest
    :func:`~plugin.core.planning.selection_score` at ``weight`` (1: alignment alone), plus
    ``window_weight`` times its window score from ``transitions`` (0: none)."""

    def __init__(
        self,
        novelty: ClusterNovelty,
        alignment: AlignmentModel,
        n: int,
        temperature: float,
        seed: int,
        model_version: str,
        weight: float = 1.0,
        window_weight: float = 0.0,
        transitions: WindowTransitions | None = None,
    ) -> None:
        self.novelty = novelty.eval()
        self.alignment = alignment.eval()
        self.n = n
        self.temperature = temperature
        self.seed = seed
        self.weight = weight
        self.window_weight = window_weight
        self.transitions = transitions
        self._version = model_version

    @property
    def model_version(self) -> str:
        return self._version

    def selection(self, model_version: str) -> Selection:
        """The n, temperature and weights this planner plans with (one version only)."""
        return Selection(
            self.n, self.temperature, self.weight, self.window_weight, self.transitions
        )

    def rank(self, histories: Sequence[tuple[int, ...]]) -> list[HistoryRanking]:
        """Rankings for distinct histories (duplicates are ranked once)."""
        unique = list(dict.fromkeys(histories))
        if not unique:
            return []
        k = self.novelty.config.history_length
        with single_threaded():
            order, log_probs, scores = rank_histories(
                self.novelty,
                self.alignment,
                histories_tensor(unique, k),
                self.temperature,
                [history_seed(self.seed, h) for h in unique],
            )
        by_history = dict(zip(unique, rankings_from(unique, order, log_probs, scores), strict=True))
        return [by_history[h] for h in histories]

    def plan(self, requests: Sequence[PlanRequest], n: int | None = None) -> list[ExplorationPlan]:
        rankings = self.rank([r.history for r in requests])
        chosen = self.selection(self.model_version)
        if n is not None:
            chosen = replace(chosen, n=n)
        return [
            chosen.plan(r, g, self.model_version) for r, g in zip(requests, rankings, strict=True)
        ]


def best_of_n_planner(
    settings: Settings, catalog: ClusterCatalog, version: int | None = None
) -> BestOfNPlanner:
    """The in-process best-of-n planner over a trained version.

    By default the published version (``explore models publish``), or the newest trained
    one while nothing has been published. It plans with the n, temperature and weight the
    version chose on its validation split (``selection.apply``), else the planner settings.
    """
    repository = ModelRepository(settings.models.repository)
    if version is None:
        version = repository.default_version()
    trained = repository.load(version)
    check_catalog(trained.version, trained.manifest, catalog)
    chosen = version_selection(
        trained.manifest, planner_selection(settings), settings.selection.apply
    )
    return BestOfNPlanner(
        trained.novelty,
        trained.alignment,
        n=chosen.n,
        temperature=chosen.temperature,
        seed=settings.planner.seed,
        model_version=trained.label,
        weight=chosen.weight,
        window_weight=chosen.window_weight,
        transitions=chosen.transitions,
    )


def planner_selection(settings: Settings) -> Selection:
    """The planner settings as a :class:`Selection` (alignment alone: weight 1)."""
    return Selection(settings.planner.candidates, settings.planner.temperature, 1.0)
