"""The alignment model: scores (history, candidate) by what users collectively engaged with.

It is trained apart from the novelty model (the paper found that folding feedback into one
model by RLHF reward-hacked and broke the output format). Two objectives:

* ``pointwise``: binary cross-entropy against the aggregated positive share of each pair;
* ``pairwise``: BPR on preferences between candidates of the same history.

Two ways to represent a cluster (``features``, the setting ``models.alignment_features``):

* ``id``: a learned embedding per cluster id;
* ``lm``: a learned linear projection of the language model's frozen representation of the
  cluster's description and its parent's (:mod:`plugin.models.descriptions`), instead of the
  id embedding. The frozen matrix is a buffer of the model, so it is saved with the version
  and serving never runs the language model. With fewer clusters than feature dimensions the
  projection can still give every cluster any vector an id embedding could; what changes is
  where training starts and what it finds easy: clusters with similar descriptions start
  close, so a rare history borrows from the histories whose clusters read alike.

Either way the call is the same, histories [B, K] and candidates [B, n] to scores [B, n].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

Objective = Literal["pointwise", "pairwise"]
Features = Literal["id", "lm"]


@dataclass(frozen=True)
class AlignmentConfig:
    n_clusters: int
    history_length: int = 2
    d_model: int = 32
    hidden: int = 128
    objective: Objective = "pointwise"
    features: Features = "id"
    # ``lm`` only: the width of a cluster's frozen feature row, and the base language model
    # (``BaseModelRef.as_dict()``) it came from, checked when a version is loaded.
    feature_width: int = 0
    base: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class AlignmentModel(nn.Module):
    """MLP over the history's cluster vectors, the candidate's, and their interactions."""

    def __init__(self, config: AlignmentConfig, descriptions: Tensor | None = None) -> None:
        """``descriptions``: the frozen [n_clusters, feature_width] matrix of an ``lm`` model
        (None when loading one: the saved state fills it)."""
        super().__init__()
        self.config = config
        d, k = config.d_model, config.history_length
        self.descriptions: Tensor | None
        if config.features == "lm":
            shape = (config.n_clusters, config.feature_width)
            if config.feature_width < 1:
                raise ValueError("alignment features 'lm' need feature_width >= 1")
            if descriptions is not None and tuple(descriptions.shape) != shape:
                raise ValueError(
                    f"description features of shape {tuple(descriptions.shape)}, expected "
                    f"{shape} (clusters x feature_width)"
                )
            frozen = torch.zeros(shape) if descriptions is None else descriptions.float()
            self.register_buffer("descriptions", frozen.clone())
            self.describe = nn.Linear(config.feature_width, d)
            # Weights of std 1 / (rms row length) start every cluster's vector at about the
            # scale of an id embedding (N(0, 1) per dimension): both variants start alike.
            length = float(frozen.norm(dim=1).pow(2).mean().sqrt()) if len(frozen) else 0.0
            nn.init.normal_(self.describe.weight, std=1.0 / length if length > 0 else 1.0)
            nn.init.zeros_(self.describe.bias)
            self.no_cluster = nn.Parameter(torch.randn(d))
        else:
            self.descriptions = None
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

    def cluster_vectors(self, clusters: Tensor) -> Tensor:
        """[..., d] for cluster ids [...]; -1 is "no cluster"."""
        missing = clusters < 0
        if self.descriptions is None:
            return self.clusters(clusters.masked_fill(missing, self.config.n_clusters))
        # Project the C rows once, then look up: the same vectors as projecting each looked-up
        # row, without a [B, n, feature_width] gather (measured 2.9x slower scoring).
        described = self.describe(self.descriptions)[clusters.clamp(min=0)]
        return torch.where(missing[..., None], self.no_cluster, described)

    def forward(self, histories: Tensor, candidates: Tensor) -> Tensor:
        """Scores [B, n] for histories [B, K] (-1 padded) and candidates [B, n] (-1 = none).

        Missing candidates score -inf, so they never win best-of-n.
        """
        batch, n = candidates.shape
        hist = self.cluster_vectors(histories)  # [B, K, d]
        cand = self.cluster_vectors(candidates.clamp(min=0))  # [B, n, d]
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
