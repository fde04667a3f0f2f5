"""The alignment model: scores (history, candidate) by what users collectively engaged with.

It is trained apart from the novelty model (the paper found that folding feedback into one
model by RLHF reward-hacked and broke the output format). Two objectives:

* ``pointwise``: binary cross-entropy against the aggregated positive share of each pair;
* ``pairwise``: BPR on preferences between candidates of the same history.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import Tensor, nn

Objective = Literal["pointwise", "pairwise"]


@dataclass(frozen=True)
class AlignmentConfig:
    n_clusters: int
    history_length: int = 2
    d_model: int = 32
    hidden: int = 128
    objective: Objective = "pointwise"

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class AlignmentModel(nn.Module):
    """MLP over the history's cluster embeddings, the candidate's, and their interactions."""

    def __init__(self, config: AlignmentConfig) -> None:
        super().__init__()
        self.config = config
        d, k = config.d_model, config.history_length
        # Index n_clusters stands for "no cluster" in a short history.
        self.clusters = nn.Embedding(config.n_clusters + 1, d)
        self.candidate_bias = nn.Embedding(config.n_clusters, 1)
        self.mlp = nn.Sequential(
            nn.Linear(d * (2 * k + 1), config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, config.hidden // 2),
            nn.ReLU(),
            nn.Linear(config.hidden // 2, 1),
        )

    def forward(self, histories: Tensor, candidates: Tensor) -> Tensor:
        """Scores [B, n] for histories [B, K] (-1 padded) and candidates [B, n] (-1 = none).

        Missing candidates score -inf, so they never win best-of-n.
        """
        batch, n = candidates.shape
        missing = histories < 0
        hist = self.clusters(histories.masked_fill(missing, self.config.n_clusters))  # [B, K, d]
        cand = self.clusters(candidates.clamp(min=0))  # [B, n, d]
        hist_n = hist[:, None, :, :].expand(batch, n, -1, -1)  # [B, n, K, d]
        interactions = hist_n * cand[:, :, None, :]
        features = torch.cat(
            [hist_n.flatten(2), interactions.flatten(2), cand], dim=2
        )  # [B, n, d(2K+1)]
        scores = (
            self.mlp(features).squeeze(-1) + self.candidate_bias(candidates.clamp(min=0))[..., 0]
        )
        return scores.masked_fill(candidates < 0, float("-inf"))

    def pointwise_loss(self, histories: Tensor, candidates: Tensor, labels: Tensor) -> Tensor:
        logits = self(histories, candidates[:, None])[:, 0]
        return nn.functional.binary_cross_entropy_with_logits(logits, labels)

    def pairwise_loss(self, histories: Tensor, better: Tensor, worse: Tensor) -> Tensor:
        scores = self(histories, torch.stack([better, worse], dim=1))
        return -nn.functional.logsigmoid(scores[:, 0] - scores[:, 1]).mean()
