"""The novelty model: a small autoregressive transformer over hierarchical cluster tokens.

A cluster is two tokens, its parent then its leaf, as in the paper's hierarchical cluster ids.
A prompt is ``BOS (parent leaf) x K SEP`` with the history oldest first; the model then writes
the next cluster's parent token and leaf token. Decoding is constrained: the first step may
only emit a parent token, the second only a leaf of that parent, so every output is a valid
cluster. The quality gate measures the *unconstrained* validity, the probability mass the model
itself puts on valid (parent, leaf) pairs, which is what the paper's exact-match check guards.

Candidates are drawn by Gumbel-top-n over ``log p(c | h) / T``: n distinct clusters sampled
without replacement at temperature T. The noise is seeded by (seed, history), so a plan is a
function of the history and the excluded set, on any host and in any batch.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

PAD, BOS, SEP = 0, 1, 2
SPECIAL = 3


@dataclass(frozen=True)
class NoveltyConfig:
    n_clusters: int
    n_parents: int
    parent_of: tuple[int, ...]  # leaf cluster -> parent id
    history_length: int = 2
    d_model: int = 64
    layers: int = 2
    heads: int = 4

    @property
    def vocab(self) -> int:
        return SPECIAL + self.n_parents + self.n_clusters

    @property
    def prompt_length(self) -> int:
        return 2 + 2 * self.history_length

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "parent_of": list(self.parent_of)}


class NoveltyShape(Protocol):
    """The part of a novelty model's config that planning and serving read."""

    @property
    def history_length(self) -> int: ...

    @property
    def n_clusters(self) -> int: ...


class ClusterNovelty(Protocol):
    """The novelty contract every planner, gate and cache relies on: ``log p(cluster |
    history)`` over every valid cluster in one call, whatever the model inside (the id
    transformer here, or the language model of :mod:`plugin.models.llm`)."""

    @property
    def config(self) -> NoveltyShape: ...

    def cluster_log_probs(self, histories: Tensor) -> Tensor: ...

    def validity(self, histories: Tensor) -> Tensor: ...

    def checkpoint(self) -> dict[str, Any]: ...

    def eval(self) -> Any: ...


class NoveltyModel(nn.Module):
    """Causal transformer LM; ``cluster_log_probs`` is its constrained two-step decoder."""

    def __init__(self, config: NoveltyConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.tokens = nn.Embedding(config.vocab, d)
        self.positions = nn.Embedding(config.prompt_length + 1, d)
        layer = nn.TransformerEncoderLayer(
            d,
            config.heads,
            dim_feedforward=4 * d,
            dropout=0.0,
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        # Derived from the config, not learned: plain tensors, not saved in the state dict.
        self.parent_of = torch.tensor(config.parent_of, dtype=torch.long)
        # [P, C]: True where leaf c belongs to parent p.
        self.leaf_mask = torch.arange(config.n_parents)[:, None] == self.parent_of[None, :]
        size = config.prompt_length + 1
        self.causal = torch.triu(torch.ones(size, size), 1).bool()

    # -- token layout ----------------------------------------------------------------------

    def parent_token(self, parent: Tensor) -> Tensor:
        return SPECIAL + parent

    def leaf_token(self, cluster: Tensor) -> Tensor:
        return SPECIAL + self.config.n_parents + cluster

    def prompt(self, histories: Tensor) -> Tensor:
        """[B, K] most-recent-first, -1 padded -> [B, 2K+2] tokens, oldest first."""
        oldest_first = histories.flip(1)
        present = oldest_first >= 0
        safe = oldest_first.clamp(min=0)
        parents = torch.where(present, self.parent_token(self.parent_of[safe]), PAD)
        leaves = torch.where(present, self.leaf_token(safe), PAD)
        pairs = torch.stack([parents, leaves], dim=2).reshape(len(histories), -1)
        bos = torch.full((len(histories), 1), BOS, dtype=torch.long)
        sep = torch.full((len(histories), 1), SEP, dtype=torch.long)
        return torch.cat([bos, pairs, sep], dim=1)

    # -- the network -----------------------------------------------------------------------

    def forward(self, tokens: Tensor) -> Tensor:
        """Next-token logits over the whole vocabulary: [B, L] -> [B, L, V]."""
        length = tokens.shape[1]
        x = self.tokens(tokens) + self.positions(torch.arange(length))
        x = self.encoder(x, mask=self.causal[:length, :length], is_causal=True)
        return self.norm(x) @ self.tokens.weight.T  # tied output embedding

    def step_logits(self, histories: Tensor) -> tuple[Tensor, Tensor]:
        """Full-vocabulary logits for step 1 [B, V] and step 2 for every parent [B, P, V]."""
        prompt = self.prompt(histories)
        batch, parents = len(histories), self.config.n_parents
        # One pass over B x P sequences: the prompt followed by each possible parent token.
        expanded = prompt.repeat_interleave(parents, dim=0)
        parent_tokens = self.parent_token(torch.arange(parents)).repeat(batch)[:, None]
        logits = self(torch.cat([expanded, parent_tokens], dim=1))
        first = logits[::parents, -2, :]
        second = logits[:, -1, :].reshape(batch, parents, -1)
        return first, second

    def cluster_log_probs(self, histories: Tensor) -> Tensor:
        """Constrained decoding: log p(cluster | history) over valid clusters, [B, C]."""
        first, second = self.step_logits(histories)
        p0 = SPECIAL
        c0 = SPECIAL + self.config.n_parents
        parent_lp = first[:, p0:c0].log_softmax(dim=-1)  # [B, P]
        leaf_logits = second[:, :, c0:].masked_fill(~self.leaf_mask, float("-inf"))
        leaf_lp = leaf_logits.log_softmax(dim=-1)  # [B, P, C], -inf off-parent
        leaf_given_parent = leaf_lp.gather(
            1, self.parent_of[None, None, :].expand(len(histories), 1, -1)
        ).squeeze(1)
        return parent_lp[:, self.parent_of] + leaf_given_parent

    def validity(self, histories: Tensor) -> Tensor:
        """Unconstrained probability that free decoding yields a valid cluster, per history."""
        first, second = self.step_logits(histories)
        c0 = SPECIAL + self.config.n_parents
        parent_p = first.softmax(dim=-1)[:, SPECIAL:c0]  # mass on each parent token
        leaf_p = second.softmax(dim=-1)[:, :, c0:]  # [B, P, C]
        valid_leaf = (leaf_p * self.leaf_mask).sum(dim=-1)  # [B, P]
        return (parent_p * valid_leaf).sum(dim=-1)

    def training_loss(
        self, histories: Tensor, targets: Tensor, windows: Tensor | None = None
    ) -> Tensor:
        """Cross-entropy of both output tokens over the full vocabulary.

        With ``windows`` ([B, W] each row's novelty window, -1 padded) the softmax leaves out
        what a plan may not propose: the window's leaf tokens at the leaf step, and at the
        parent step the parents whose leaves all lie in the window. Every other token stays,
        so the model still learns to write valid clusters (the gate's validity)."""
        prompt = self.prompt(histories)
        target_parent = self.parent_token(self.parent_of[targets])
        tokens = torch.cat([prompt, target_parent[:, None]], dim=1)
        logits = self(tokens)
        first, second = logits[:, -2], logits[:, -1]
        if windows is not None:
            c0 = SPECIAL + self.config.n_parents
            excluded = padded_window_mask(windows, self.config.n_clusters)  # [B, C]
            open_parents = ((~excluded).float() @ self.leaf_mask.T.float()) > 0  # [B, P]
            first_out = torch.zeros_like(first, dtype=torch.bool)
            first_out[:, SPECIAL:c0] = ~open_parents
            second_out = torch.zeros_like(second, dtype=torch.bool)
            second_out[:, c0:] = excluded
            first = first.masked_fill(first_out, float("-inf"))
            second = second.masked_fill(second_out, float("-inf"))
        loss_parent = nn.functional.cross_entropy(first, target_parent)
        loss_leaf = nn.functional.cross_entropy(second, self.leaf_token(targets))
        return loss_parent + loss_leaf

    def checkpoint(self) -> dict[str, Any]:
        """What a version stores: the config and the state dict."""
        return {"config": self.config.as_dict(), "state_dict": self.state_dict()}

    def init_from_text(self, leaf_vectors: Tensor, parent_vectors: Tensor) -> None:
        """Initialise cluster token embeddings from text embeddings of their descriptions."""
        with torch.no_grad():
            c0 = SPECIAL + self.config.n_parents
            scale = self.tokens.weight.std()
            projected = project(torch.cat([parent_vectors, leaf_vectors]), self.config.d_model)
            projected = projected / projected.std() * scale
            self.tokens.weight[SPECIAL:c0] = projected[: self.config.n_parents]
            self.tokens.weight[c0:] = projected[self.config.n_parents :]


def padded_window_mask(windows: Tensor, n_clusters: int) -> Tensor:
    """``[B, W]`` cluster ids, -1 padded -> ``[B, n_clusters]``, True for the clusters in the
    row's window."""
    mask = torch.zeros(len(windows), n_clusters + 1, dtype=torch.bool, device=windows.device)
    mask.scatter_(1, windows.clamp(min=-1) + 1, True)  # padding lands in column 0, dropped
    return mask[:, 1:]


def project(vectors: Tensor, dim: int) -> Tensor:
    """Deterministic PCA projection of text embeddings down to the model width."""
    centred = vectors - vectors.mean(dim=0, keepdim=True)
    _, _, v = torch.linalg.svd(centred.double(), full_matrices=False)
    basis = v[:dim].T
    if basis.shape[1] < dim:  # fewer vectors than the width: pad with zeros
        basis = torch.cat([basis, torch.zeros(basis.shape[0], dim - basis.shape[1])], dim=1)
    # SVD signs are arbitrary; fix each component's sign so the result is reproducible.
    projected = centred.double() @ basis
    signs = torch.sign(projected.sum(dim=0))
    signs[signs == 0] = 1
    return (projected * signs).float()


def history_seed(seed: int, history: tuple[int, ...]) -> int:
    """The sampling seed of one history: stable across processes, hosts and batch layouts."""
    digest = hashlib.blake2b(f"{seed}:{','.join(map(str, history))}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") & 0x7FFF_FFFF_FFFF_FFFF


def perturbed_order(log_probs: Tensor, temperature: float, seeds: list[int]) -> Tensor:
    """Every cluster per row, ordered by ``log p / T + Gumbel noise``, best first: [B, C].

    The first n clusters of a row that a user may see are an exact sample of n distinct
    clusters without replacement at temperature T (Gumbel-top-n). Filtering the order for a
    user's novelty window keeps that property, which is why plans can be cached per history.
    """
    rows, clusters = log_probs.shape
    noise = torch.empty(rows, clusters)
    for row, seed in enumerate(seeds):
        generator = torch.Generator().manual_seed(seed)
        uniform = torch.rand(clusters, generator=generator).clamp(1e-12, 1 - 1e-12)
        noise[row] = -torch.log(-torch.log(uniform))
    return (log_probs / temperature + noise).argsort(dim=1, descending=True, stable=True)
