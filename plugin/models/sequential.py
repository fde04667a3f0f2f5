"""A SASRec-style next-cluster baseline: self-attention over the user's recent cluster sequence.

The sequential model a practitioner would try first (Kang and McAuley, "Self-Attentive
Sequential Recommendation", ICDM 2018), at the scale of a cluster vocabulary. Unlike the
novelty model, which reads only the K-cluster history, it reads the last ``max_length``
clusters of the user's consecutive-deduplicated sequence (revisits kept), through a causal
transformer with learned positional embeddings and output weights tied to the cluster
embeddings. The most recent cluster is always the last position (sequences are left-padded).

Training, as in SASRec, predicts the next cluster at every position of a window of the user's
sequence at once (:func:`training_windows`), on the training part only. The loss counts the
positions whose next cluster is a novel move, positive or not (like the transition-frequency
baseline, the whole watch log is the signal), and its softmax runs over the clusters outside
that position's novelty window: the same restriction every method obeys at prediction time,
so the model learns the next *novel* cluster instead of spending capacity on revisits it may
never propose. The budget is a fixed number of epochs, not tuned on the held-out part.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from tqdm import tqdm

from plugin.core.moves import SequenceStep
from plugin.models.training import TrainingRun, seed_everything


@dataclass(frozen=True)
class SequentialSettings:
    """The SASRec baseline's size and training budget (defaults from the SASRec paper's small
    setting: two blocks, dropout 0.2, Adam at 1e-3, sized to train in seconds on 2 CPUs)."""

    max_length: int = 50  # clusters of the sequence read, the most recent included
    d_model: int = 64
    layers: int = 2
    heads: int = 1  # SASRec uses one head
    dropout: float = 0.2
    epochs: int = 12  # passes over the training windows; each novel move is one target a pass
    batch_size: int = 64  # windows per step, each with up to max_length targets
    learning_rate: float = 1e-3
    seed: int = 7
    # Intra-op threads while training. Its matrices are small: on 2 shared cores one thread
    # measured 3-5x faster than two, which spend their time waiting on each other.
    threads: int = 1

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class SasRecModel(nn.Module):
    """Causal self-attention over a cluster sequence; scores every cluster as the next one."""

    def __init__(self, n_clusters: int, settings: SequentialSettings) -> None:
        super().__init__()
        self.n_clusters = n_clusters
        self.settings = settings
        d = settings.d_model
        self.pad = n_clusters  # one extra embedding row, kept at zero
        self.clusters = nn.Embedding(n_clusters + 1, d, padding_idx=self.pad)
        # Unit-norm rows: the input is scaled up by sqrt(d) and the tied output reads the
        # embeddings as they are, so N(0, 1) rows would start with logits in the tens.
        nn.init.normal_(self.clusters.weight, std=d**-0.5)
        with torch.no_grad():
            self.clusters.weight[self.pad].zero_()
        self.positions = nn.Embedding(settings.max_length, d)
        self.dropout = nn.Dropout(settings.dropout)
        layer = nn.TransformerEncoderLayer(
            d,
            settings.heads,
            dim_feedforward=d,  # SASRec's point-wise feed-forward keeps the width
            dropout=settings.dropout,
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, settings.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        length = settings.max_length
        self.causal = torch.triu(torch.ones(length, length, dtype=torch.bool), 1)

    def encode(self, sequences: Sequence[Sequence[int]]) -> Tensor:
        """``[B, max_length]`` cluster ids, oldest first and left-padded, from sequences given
        most recent first (``NovelMove.sequence``); the most recent cluster is always last."""
        length = self.settings.max_length
        rows = []
        for sequence in sequences:
            kept = list(sequence[:length])[::-1]
            rows.append([self.pad] * (length - len(kept)) + kept)
        return torch.tensor(rows, dtype=torch.long).reshape(len(rows), length)

    def forward(self, tokens: Tensor) -> Tensor:
        """``[B, L, n_clusters]`` next-cluster logits at every position of ``[B, L]`` tokens."""
        length = tokens.shape[1]
        padded = tokens == self.pad
        # A position sees itself and the real clusters before it. Seeing itself keeps a pad
        # position's attention row from being all masked (NaN) before the first real cluster.
        blocked = self.causal[None, :length, :length] | padded[:, None, :]
        blocked = blocked & ~torch.eye(length, dtype=torch.bool)[None]
        mask = blocked.repeat_interleave(self.settings.heads, dim=0)
        x = self.clusters(tokens) * math.sqrt(self.settings.d_model)
        x = self.dropout(x + self.positions(torch.arange(length))[None])
        hidden = self.norm(self.encoder(x, mask=mask))
        return hidden @ self.clusters.weight[: self.n_clusters].T

    def novel_scores(
        self, sequences: Sequence[Sequence[int]], excluded: Sequence[Iterable[int]]
    ) -> Tensor:
        """Logits with each row's excluded clusters (its novelty window) at -inf."""
        with torch.inference_mode():
            logits = self(self.encode(sequences))[:, -1]
        return logits.masked_fill(window_mask(excluded, self.n_clusters), float("-inf"))

    def top_novel(
        self, sequences: Sequence[Sequence[int]], excluded: Sequence[Iterable[int]], n: int
    ) -> list[list[int]]:
        """Per row, up to n clusters outside its excluded set, most likely first."""
        scores = self.novel_scores(sequences, excluded)
        order = scores.argsort(dim=1, descending=True, stable=True).tolist()
        rows = []
        for row, avoid in zip(order, excluded, strict=True):
            avoided = set(avoid)
            rows.append([c for c in row if c not in avoided][:n])
        return rows


def window_mask(excluded: Sequence[Iterable[int]], n_clusters: int) -> Tensor:
    """``[B, n_clusters]``: True for the clusters each row may not propose."""
    mask = torch.zeros(len(excluded), n_clusters, dtype=torch.bool)
    for row, clusters in enumerate(excluded):
        ids = [c for c in clusters if 0 <= c < n_clusters]
        if ids:
            mask[row, ids] = True
    return mask


@dataclass(frozen=True)
class TrainingWindows:
    """Windows of the users' sequences with a target and a novelty window at each position."""

    tokens: Tensor  # [M, L] cluster ids, oldest first, left-padded
    targets: Tensor  # [M, L] the next cluster where it is a novel move, else IGNORE
    windows: Tensor  # [M, L, n_clusters] True for clusters that position may not propose

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def targets_count(self) -> int:
        return int((self.targets != IGNORE).sum())


IGNORE = -100  # cross_entropy's ignore_index


def training_windows(
    sequences: Iterable[Sequence[SequenceStep]], n_clusters: int, length: int
) -> TrainingWindows:
    """Cut each user's sequence (oldest first) into windows of ``length`` input clusters.

    Windows end at the newest cluster and step back by half a window; each novel move is the
    target of exactly one window, the one where it has at least half a window of context
    before it (or all the context there is, near the user's start)."""
    stride = max(1, length // 2)
    tokens: list[list[int]] = []
    targets: list[list[int]] = []
    masks: list[tuple[int, int, tuple[int, ...]]] = []  # (window, position, excluded clusters)
    for steps in sequences:
        last = len(steps) - 1  # the index of the newest target
        while last >= 1:
            first_input = max(0, last - length)
            inputs = [step.cluster for step in steps[first_input:last]]
            pad = length - len(inputs)
            row_targets = [IGNORE] * length
            owned_from = 1 if first_input == 0 else last - stride + 1
            for t in range(owned_from, last + 1):
                if steps[t].novel:
                    position = pad + (t - 1 - first_input)
                    row_targets[position] = steps[t].cluster
                    masks.append((len(tokens), position, steps[t].window))
            if any(target != IGNORE for target in row_targets):
                tokens.append([n_clusters] * pad + inputs)
                targets.append(row_targets)
            if first_input == 0:
                break
            last -= stride
    windows = torch.zeros(len(tokens), length, n_clusters, dtype=torch.bool)
    for row, position, excluded in masks:
        windows[row, position, [c for c in excluded if 0 <= c < n_clusters]] = True
    return TrainingWindows(
        tokens=torch.tensor(tokens, dtype=torch.long).reshape(len(tokens), length),
        targets=torch.tensor(targets, dtype=torch.long).reshape(len(targets), length),
        windows=windows,
    )


def fit_sasrec(
    sequences: Iterable[Sequence[SequenceStep]],
    n_clusters: int,
    settings: SequentialSettings | None = None,
    progress: bool = False,
) -> tuple[SasRecModel, TrainingRun]:
    """Train the baseline on the users' training-part sequences
    (:func:`plugin.core.moves.cluster_sequences`), each oldest first."""
    settings = settings or SequentialSettings()
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        return _train(sequences, n_clusters, settings, progress)
    finally:
        torch.set_num_threads(threads)


def _train(
    sequences: Iterable[Sequence[SequenceStep]],
    n_clusters: int,
    settings: SequentialSettings,
    progress: bool,
) -> tuple[SasRecModel, TrainingRun]:
    started = time.perf_counter()
    data = training_windows(sequences, n_clusters, settings.max_length)
    if not len(data):
        raise ValueError("no novel moves in the sequences to train the SASRec baseline on")
    generator = seed_everything(settings.seed)
    model = SasRecModel(n_clusters, settings)
    per_epoch = math.ceil(len(data) / settings.batch_size)
    steps = max(1, settings.epochs * per_epoch)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=settings.learning_rate, total_steps=steps, pct_start=0.05
    )
    run = TrainingRun(seconds=0.0, final_loss=float("nan"), steps=steps)
    model.train()
    bar = tqdm(total=steps, desc="sasrec", disable=not progress)
    for _ in range(settings.epochs):
        order = torch.randperm(len(data), generator=generator)
        for start in range(0, len(data), settings.batch_size):
            index = order[start : start + settings.batch_size]
            logits = model(data.tokens[index]).masked_fill(data.windows[index], float("-inf"))
            loss = nn.functional.cross_entropy(
                logits.reshape(-1, n_clusters),
                data.targets[index].reshape(-1),
                ignore_index=IGNORE,
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            run.losses.append(loss.item())
            bar.update()
    bar.close()
    model.eval()
    run.seconds = time.perf_counter() - started
    tail = run.losses[-per_epoch:]
    run.final_loss = sum(tail) / len(tail)
    return model, run
