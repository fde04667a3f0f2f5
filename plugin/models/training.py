"""Training of the novelty and alignment models, and the novelty model's quality gate."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from plugin.core.catalog import ClusterCatalog
from plugin.core.moves import NovelMove
from plugin.models.alignment import AlignmentConfig, AlignmentModel, Objective
from plugin.models.data import FeedbackLabels, NoveltyData
from plugin.models.descriptions import DescriptionFeatures
from plugin.models.novelty import (
    ClusterNovelty,
    NoveltyConfig,
    NoveltyModel,
    history_seed,
    perturbed_order,
)
from plugin.models.planner import histories_tensor
from plugin.models.threads import single_threaded
from plugin.settings import ModelSettings, NoveltyObjective


def seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.Generator().manual_seed(seed)


def novelty_config(catalog: ClusterCatalog, k: int, settings: ModelSettings) -> NoveltyConfig:
    return NoveltyConfig(
        n_clusters=len(catalog),
        n_parents=len(catalog.parents),
        parent_of=tuple(c.parent_id for c in catalog.clusters),
        history_length=k,
        d_model=settings.d_model,
        layers=settings.layers,
        heads=settings.heads,
    )


@dataclass
class TrainingRun:
    """A trained model with what it took to train it."""

    seconds: float
    final_loss: float
    steps: int
    losses: list[float] = field(default_factory=list)
    load_seconds: float = 0.0  # loading a pretrained base model, before the first step


def lr_schedule(
    optimizer: torch.optim.Optimizer, steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up over the first 5% of the steps, then cosine decay to zero."""
    warmup = max(1, steps // 20)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * step / steps)),
    )


@single_threaded()
def train_novelty(
    data: NoveltyData,
    config: NoveltyConfig,
    settings: ModelSettings,
    text_vectors: tuple[torch.Tensor, torch.Tensor] | None = None,
    progress: bool = False,
) -> tuple[NoveltyModel, TrainingRun]:
    """Next-token training on balanced (history, next) pairs; text-initialised if given.
    On one torch thread (:func:`single_threaded`): its ops are small, and on two shared
    cores two threads spent most of a step at their barriers."""
    generator = seed_everything(settings.seed)
    model = NoveltyModel(config)
    if text_vectors is not None:
        model.init_from_text(*text_vectors)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=0.01)
    schedule = lr_schedule(optimizer, settings.novelty_steps)
    run = TrainingRun(seconds=0.0, final_loss=float("nan"), steps=settings.novelty_steps)
    started = time.perf_counter()
    model.train()
    run.losses = sample_and_step(
        model, optimizer, schedule, data, settings.novelty_objective, settings.batch_size,
        settings.novelty_steps, generator, "novelty", progress,
    )  # fmt: skip
    model.eval()
    run.seconds = time.perf_counter() - started
    run.final_loss = float(np.mean(run.losses[-50:]))
    return model, run


@single_threaded()
def train_alignment(
    labels: FeedbackLabels,
    config: AlignmentConfig,
    settings: ModelSettings,
    progress: bool = False,
    descriptions: DescriptionFeatures | None = None,
) -> tuple[AlignmentModel, TrainingRun]:
    """Pointwise BCE on aggregated labels, or pairwise BPR on preferences (config.objective);
    an ``lm`` config needs the frozen ``descriptions`` it was made with. On one torch
    thread, like the novelty model's training."""
    generator = seed_everything(settings.seed)
    if config.features == "lm" and descriptions is None:
        raise ValueError("an alignment model on description features needs the descriptions")
    model = AlignmentModel(config, descriptions.matrix if descriptions is not None else None)
    histories = torch.from_numpy(labels.histories)
    candidates = torch.from_numpy(labels.candidates)
    targets = torch.from_numpy(labels.labels)
    pairs = torch.from_numpy(labels.pairs)
    if config.objective == "pairwise" and len(pairs) == 0:
        raise ValueError("pairwise training needs preferences; lower min_count")
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=1e-4)
    schedule = lr_schedule(optimizer, settings.alignment_steps)
    run = TrainingRun(seconds=0.0, final_loss=float("nan"), steps=settings.alignment_steps)
    started = time.perf_counter()
    model.train()
    for _ in tqdm(
        range(settings.alignment_steps),
        desc=f"alignment ({config.objective})",
        disable=not progress,
    ):
        if config.objective == "pointwise":
            index = torch.randint(len(targets), (settings.batch_size,), generator=generator)
            loss = model.pointwise_loss(histories[index], candidates[index], targets[index])
        else:
            index = torch.randint(len(pairs), (settings.batch_size,), generator=generator)
            better, worse = pairs[index, 0], pairs[index, 1]
            loss = model.pairwise_loss(histories[better], candidates[better], candidates[worse])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        run.losses.append(loss.item())
    model.eval()
    run.seconds = time.perf_counter() - started
    run.final_loss = float(np.mean(run.losses[-50:]))
    return model, run


@dataclass(frozen=True)
class GateResult:
    """The paper-style quality gate: a model that fails it is never published."""

    validity: float
    recall_at_n: float
    n: int
    min_validity: float
    min_recall: float
    heldout_moves: int

    @property
    def passed(self) -> bool:
        return self.validity >= self.min_validity and self.recall_at_n >= self.min_recall

    def reasons(self) -> list[str]:
        out = []
        if self.validity < self.min_validity:
            out.append(f"validity {self.validity:.3f} < {self.min_validity}")
        if self.recall_at_n < self.min_recall:
            out.append(f"recall@{self.n} {self.recall_at_n:.3f} < {self.min_recall}")
        return out

    def as_dict(self) -> dict[str, object]:
        return {
            "passed": self.passed,
            "validity": round(self.validity, 4),
            "recall_at_n": round(self.recall_at_n, 4),
            "n": self.n,
            "min_validity": self.min_validity,
            "min_recall": self.min_recall,
            "heldout_moves": self.heldout_moves,
            "reasons": self.reasons(),
        }


@torch.inference_mode()
def quality_gate(
    model: ClusterNovelty,
    heldout: Sequence[NovelMove],
    n: int,
    temperature: float,
    seed: int,
    settings: ModelSettings,
) -> GateResult:
    """Validity (unconstrained) and recall@n of sampled candidates on held-out positive moves."""
    positive = [m for m in heldout if m.positive]
    if not positive:
        raise ValueError("no held-out positive novel moves to gate the model on")
    k = model.config.history_length
    hits, validity = 0, 0.0
    for start in range(0, len(positive), 1024):
        chunk = positive[start : start + 1024]
        histories = histories_tensor([m.history for m in chunk], k)
        validity += float(model.validity(histories).sum())
        log_probs = model.cluster_log_probs(histories)
        seeds = [history_seed(seed, m.history) for m in chunk]
        order = perturbed_order(log_probs, temperature, seeds).tolist()
        for move, row in zip(chunk, order, strict=True):
            candidates = [c for c in row if c not in move.recent][:n]
            hits += move.target in candidates
    return GateResult(
        validity=validity / len(positive),
        recall_at_n=hits / len(positive),
        n=n,
        min_validity=settings.gate_min_validity,
        min_recall=settings.gate_min_recall,
        heldout_moves=len(positive),
    )


def alignment_config(
    n_clusters: int, k: int, objective: Objective, descriptions: DescriptionFeatures | None = None
) -> AlignmentConfig:
    """The alignment model's config: on id embeddings, or on ``descriptions`` when given."""
    if descriptions is None:
        return AlignmentConfig(n_clusters=n_clusters, history_length=k, objective=objective)
    return AlignmentConfig(
        n_clusters=n_clusters,
        history_length=k,
        objective=objective,
        features="lm",
        feature_width=descriptions.width,
        base=descriptions.base.as_dict(),
    )


def sample_and_step(
    model: Any,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    data: NoveltyData,
    objective: NoveltyObjective,
    batch_size: int,
    steps: int,
    generator: torch.Generator,
    desc: str,
    progress: bool,
) -> list[float]:
    """The novelty models' one training loop (the id transformer and the LLM): each step
    draws a batch of rows by their curation weights and takes one step on
    ``model.training_loss``, window-restricted when ``objective`` is ``window``; the per-step
    losses."""
    histories = torch.from_numpy(data.histories)
    targets = torch.from_numpy(data.targets)
    weights = torch.from_numpy(data.weights)
    windows = torch.from_numpy(data.windows) if objective == "window" else None
    losses: list[float] = []
    for _ in tqdm(range(steps), desc=desc, disable=not progress):
        index = torch.multinomial(weights, batch_size, replacement=True, generator=generator)
        window = windows[index] if windows is not None else None
        loss = model.training_loss(histories[index], targets[index], window)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return losses
