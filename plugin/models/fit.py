"""Fit both models on a workspace's training part and gate them on its held-out part."""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from plugin.core.moves import NovelMove, PlanOutcome, novel_moves
from plugin.data.workspace import Workspace
from plugin.models.alignment import AlignmentModel, Objective
from plugin.models.data import (
    FeedbackLabels,
    NoveltyData,
    feedback_labels,
    moves_fingerprint,
    novelty_data,
)
from plugin.models.descriptions import DescriptionFeatures, description_features
from plugin.models.llm import LlmNoveltyModel
from plugin.models.llm_training import train_llm_novelty
from plugin.models.novelty import ClusterNovelty
from plugin.models.repository import ModelRepository
from plugin.models.text import embed_texts
from plugin.models.training import (
    GateResult,
    TrainingRun,
    alignment_config,
    novelty_config,
    quality_gate,
    train_alignment,
    train_novelty,
)
from plugin.settings import Settings


@dataclass(frozen=True)
class TrainingData:
    train_moves: list[NovelMove]
    heldout_moves: list[NovelMove]
    novelty: NoveltyData
    feedback: FeedbackLabels


@dataclass(frozen=True)
class FittedModels:
    novelty: ClusterNovelty
    alignment: AlignmentModel
    gate: GateResult
    novelty_run: TrainingRun
    alignment_run: TrainingRun
    manifest: dict[str, Any]


def training_data(workspace: Workspace, settings: Settings) -> TrainingData:
    """Novel moves of the training and held-out parts, and the two models' training sets."""
    k, window = settings.sequence.history_length, settings.sequence.novelty_window
    all_moves = novel_moves(workspace.dataset.events(), workspace.catalog, k, window, settings.data)
    # Held-out moves keep the state users had built up in the training part.
    split = workspace.test.interactions["event_time"].min()
    train_moves = [m for m in all_moves if m.at is not None and m.at < split]
    heldout = [m for m in all_moves if m.at is not None and m.at >= split]
    return TrainingData(
        train_moves=train_moves,
        heldout_moves=heldout,
        novelty=novelty_data(train_moves, k, cap=settings.models.repeat_cap),
        feedback=feedback_labels(
            train_moves, len(workspace.catalog), k, settings.models.min_count, settings.models.seed
        ),
    )


def cluster_text_vectors(workspace: Workspace, settings: Settings) -> tuple[torch.Tensor, ...]:
    catalog = workspace.catalog
    leaves = [catalog.describe(c.cluster_id) for c in catalog.clusters]
    parents = [p.description for p in catalog.parents]
    vectors = embed_texts(leaves + parents, settings.var_dir / "cache")
    return vectors[: len(leaves)], vectors[len(leaves) :]


def alignment_descriptions(workspace: Workspace, settings: Settings) -> DescriptionFeatures | None:
    """The frozen description features when ``models.alignment_features`` is ``lm``."""
    if settings.models.alignment_features != "lm":
        return None
    return description_features(workspace.catalog, settings.models.llm, settings.var_dir / "cache")


def fit_models(
    workspace: Workspace,
    settings: Settings,
    data: TrainingData | None = None,
    objective: Objective | None = None,
    text_init: bool | None = None,
    progress: bool = False,
) -> FittedModels:
    """Train novelty and alignment, run the gate, and assemble the version manifest."""
    data = data or training_data(workspace, settings)
    models = settings.models
    k = settings.sequence.history_length
    objective = objective or models.objective
    text_init = models.text_init if text_init is None else text_init
    started = time.perf_counter()
    vectors = cluster_text_vectors(workspace, settings) if text_init else None
    text_seconds = time.perf_counter() - started
    novelty: ClusterNovelty
    if models.novelty == "llm":
        llm_model, novelty_run = train_llm_novelty(
            data.novelty, workspace.catalog, k, models, progress
        )
        novelty = llm_model
    else:
        novelty, novelty_run = train_novelty(
            data.novelty,
            novelty_config(workspace.catalog, k, models),
            models,
            (vectors[0], vectors[1]) if vectors else None,
            progress,
        )
    started = time.perf_counter()
    descriptions = alignment_descriptions(workspace, settings)
    description_seconds = time.perf_counter() - started
    alignment, alignment_run = train_alignment(
        data.feedback,
        alignment_config(len(workspace.catalog), k, objective, descriptions),
        models,
        progress,
        descriptions,
    )
    gate_started = time.perf_counter()
    gate = quality_gate(
        novelty,
        data.heldout_moves,
        settings.planner.candidates,
        settings.planner.temperature,
        settings.planner.seed,
        models,
    )
    gate_seconds = time.perf_counter() - gate_started
    if models.novelty == "llm":
        llm_model.forget_lower()  # the gate was their last user; they are big
    manifest = {
        "dataset": workspace.dataset.name,
        "data_hash": workspace.train.fingerprint(),
        "moves_hash": moves_fingerprint(data.train_moves),
        "catalog_version": workspace.catalog.version,
        "history_length": k,
        "novelty_window": settings.sequence.novelty_window,
        "objective": objective,
        "text_init": text_init,
        "novelty": models.novelty,
        "novelty_objective": models.novelty_objective,
        "alignment_features": models.alignment_features,
        **({"llm": _llm_facts(llm_model)} if models.novelty == "llm" else {}),
        "training_pairs": len(data.novelty),  # rows: one per user and pair, or per move
        "feedback_rows": len(data.feedback),
        "feedback_pairs": len(data.feedback.pairs),
        "seconds": {
            "text_embeddings": round(text_seconds, 2),
            "novelty": round(novelty_run.seconds, 2),
            "novelty_load": round(novelty_run.load_seconds, 2),
            "alignment": round(alignment_run.seconds, 2),
            "alignment_descriptions": round(description_seconds, 2),
            "gate": round(gate_seconds, 2),
        },
        "final_loss": {
            "novelty": round(novelty_run.final_loss, 4),
            "alignment": round(alignment_run.final_loss, 4),
        },
        "gate": gate.as_dict(),
        "settings": models.model_dump(mode="json"),
        "machine": {"platform": platform.platform(), "threads": torch.get_num_threads()},
        "torch": torch.__version__,
    }
    return FittedModels(novelty, alignment, gate, novelty_run, alignment_run, manifest)


def _llm_facts(model: LlmNoveltyModel) -> dict[str, Any]:
    """What a manifest says about an LLM novelty model: its base and how it was tuned."""
    config = model.config.as_dict()
    return {
        **{key: value for key, value in config.items() if key != "summaries"},
        "device": str(model.device),
        "trained_parameters": sum(t.numel() for t in model.trained_state().values()),
        "prompt_example": model.prompt_text(list(model.config.summaries[:2])),
    }


def train_version(
    workspace: Workspace, settings: Settings, progress: bool = False
) -> tuple[int, FittedModels]:
    """Fit both models and write them as the next numbered version."""
    fitted = fit_models(workspace, settings, progress=progress)
    version = ModelRepository(settings.models.repository).write(
        fitted.novelty, fitted.alignment, fitted.manifest
    )
    return version, fitted


def matching_version(workspace: Workspace, settings: Settings) -> int | None:
    """The newest trained version made from this workspace's catalog and training data."""
    repository = ModelRepository(settings.models.repository)
    for version in reversed(repository.versions()):
        manifest = repository.manifest(version)
        if (
            manifest.get("catalog_version") == workspace.catalog.version
            and manifest.get("data_hash") == workspace.train.fingerprint()
            and manifest.get("gate", {}).get("passed")
        ):
            return version
    return None


def with_feedback(
    data: TrainingData,
    outcomes: Sequence[PlanOutcome],
    moves: Sequence[NovelMove],
    n_clusters: int,
    settings: Settings,
) -> TrainingData:
    """``data`` plus the feedback log (``plugin.core.feedback.feedback_selection``): the answered
    plans join the alignment labels as trials of their (history, candidate) pairs, and the
    novel answers join the novelty pairs. The held-out moves, and so the gates, stay the
    dataset's own."""
    k, models = settings.sequence.history_length, settings.models
    novelty_moves = [*data.train_moves, *moves]
    return TrainingData(
        train_moves=novelty_moves,
        heldout_moves=data.heldout_moves,
        novelty=novelty_data(novelty_moves, k, cap=models.repeat_cap),
        feedback=feedback_labels(
            data.train_moves, n_clusters, k, models.min_count, models.seed, outcomes=outcomes
        ),
    )
