"""Fine-tuning the LLM novelty model on the same curated, balanced pairs as the id model.

The batches are drawn exactly as for the id model (``min(users, cap) / sqrt(popularity)``
weights, :mod:`plugin.models.data`); the loss is the cross-entropy of the next cluster's
token over the whole, unconstrained output, so that the gate's validity measures what the
model learned, not what a mask hides.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from plugin.core.catalog import ClusterCatalog
from plugin.models.data import NoveltyData
from plugin.models.llm import (
    LlmNoveltyConfig,
    LlmNoveltyModel,
    base_reference,
    build_llm_novelty,
    catalog_summaries,
    pick_device,
)
from plugin.models.training import TrainingRun, lr_schedule, sample_and_step, seed_everything
from plugin.settings import ModelSettings


def llm_novelty_config(catalog: ClusterCatalog, k: int, models: ModelSettings) -> LlmNoveltyConfig:
    """The LLM novelty model's config from the settings and the catalog's texts."""
    llm = models.llm
    return LlmNoveltyConfig(
        base=base_reference(llm.base, llm.gguf_file),
        n_clusters=len(catalog),
        history_length=k,
        summaries=catalog_summaries(catalog, llm.prompt_titles),
        method=llm.method,
        trainable_layers=llm.trainable_layers,
        lora_rank=llm.lora_rank,
        pretrained=llm.pretrained,
        seed=models.seed,
    )


def train_llm_novelty(
    data: NoveltyData,
    catalog: ClusterCatalog,
    k: int,
    models: ModelSettings,
    progress: bool = False,
    model: LlmNoveltyModel | None = None,
) -> tuple[LlmNoveltyModel, TrainingRun]:
    """Load the base model (unless ``model`` is an untrained one already built), then
    ``models.llm.steps`` AdamW steps on its open parameters.

    The model comes back in eval mode and still remembers the lower blocks' outputs it
    computed (``forget_lower`` drops them), so the gate that follows reuses them."""
    llm = models.llm
    generator = seed_everything(models.seed)
    started = time.perf_counter()
    if model is None:
        model = build_llm_novelty(
            llm_novelty_config(catalog, k, models),
            pick_device(llm.device),
            llm.inference_batch,
            llm.threads,
        )
    loaded = time.perf_counter()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=llm.learning_rate, weight_decay=0.0)
    schedule = lr_schedule(optimizer, llm.steps)
    run = TrainingRun(seconds=0.0, final_loss=float("nan"), steps=llm.steps)
    model.remember_lower = True
    model.train()
    with model.compute_threads():
        run.losses = sample_and_step(
            model, optimizer, schedule, data, models.novelty_objective, llm.batch_size,
            llm.steps, generator, "llm novelty", progress,
        )  # fmt: skip
    model.eval()
    run.seconds = time.perf_counter() - loaded
    run.load_seconds = loaded - started
    run.final_loss = float(np.mean(run.losses[-20:]))
    return model, run
