"""Best-of-n planning with the two models: novelty proposes n, alignment picks the best.

:func:`propose_and_score` is the tensor-level step shared by the in-process planner and the
Triton planner model, so both produce identical plans for the same inputs and seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from plugin.models.alignment import AlignmentModel
from plugin.models.novelty import NoveltyModel, history_seed, sample_candidates
from plugin.planning import ExplorationPlan, PlanRequest, best_of_n


@dataclass(frozen=True)
class Proposal:
    """Tensors of one planned batch: candidates [B, n] (-1 padded), their scores."""

    candidates: Tensor
    novelty_log_probs: Tensor
    alignment_scores: Tensor


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
def propose_and_score(
    novelty: NoveltyModel,
    alignment: AlignmentModel,
    histories: Tensor,
    allowed: Tensor,
    n: int,
    temperature: float,
    seeds: list[int],
) -> Proposal:
    """Sample n distinct novel candidates per history and score each with the alignment model."""
    log_probs = novelty.cluster_log_probs(histories)
    candidates, candidate_lp = sample_candidates(log_probs, allowed, n, temperature, seeds)
    scores = alignment(histories, candidates)
    return Proposal(candidates, candidate_lp, scores)


class BestOfNPlanner:
    """The paper's planner, in-process: one novelty pass and one alignment pass per batch."""

    def __init__(
        self,
        novelty: NoveltyModel,
        alignment: AlignmentModel,
        n: int,
        temperature: float,
        seed: int,
        model_version: str,
    ) -> None:
        self.novelty = novelty.eval()
        self.alignment = alignment.eval()
        self.n = n
        self.temperature = temperature
        self.seed = seed
        self._version = model_version

    @property
    def model_version(self) -> str:
        return self._version

    def propose(self, requests: Sequence[PlanRequest], n: int | None = None) -> Proposal:
        k = self.novelty.config.history_length
        return propose_and_score(
            self.novelty,
            self.alignment,
            histories_tensor([r.history for r in requests], k),
            allowed_mask([r.excluded for r in requests], self.novelty.config.n_clusters),
            self.n if n is None else n,
            self.temperature,
            [history_seed(self.seed, r.history) for r in requests],
        )

    def plan(self, requests: Sequence[PlanRequest]) -> list[ExplorationPlan]:
        if not requests:
            return []
        proposal = self.propose(requests)
        return plans_from(requests, proposal, self.model_version)


def plans_from(
    requests: Sequence[PlanRequest], proposal: Proposal, model_version: str
) -> list[ExplorationPlan]:
    """Turn a batch's tensors into plans: best alignment score first."""
    plans = []
    for row, request in enumerate(requests):
        candidates = proposal.candidates[row].tolist()
        scores = proposal.alignment_scores[row].tolist()
        kept = [(c, s) for c, s in zip(candidates, scores, strict=True) if c >= 0]
        plans.append(best_of_n(request, [c for c, _ in kept], [s for _, s in kept], model_version))
    return plans
