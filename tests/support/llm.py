"""A tiny LLM novelty set-up on the real SmolLM2-135M weights: six readable clusters, small
training settings and planted moves (the LLM model tests and the LLM serving tests)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from torch import nn

from plugin.core.catalog import ClusterCatalog, InterestCluster, ParentCluster
from plugin.models.data import NoveltyData
from plugin.models.llm import (
    LlmNoveltyModel,
    base_reference,
    build_llm_novelty,
    load_language_model,
)
from plugin.models.llm_training import llm_novelty_config
from plugin.settings import LlmSettings, ModelSettings, load_settings

SUMMARIES = (
    "1990s action and thriller, such as Speed and The Rock",
    "1950s musical, such as Singin' in the Rain",
    "1990s children and animation, such as The Lion King",
    "1970s and 1980s horror, such as The Shining",
    "1940s film-noir and mystery, such as The Maltese Falcon",
    "1990s romance and comedy, such as Sleepless in Seattle",
)


def tiny_catalog() -> ClusterCatalog:
    clusters = tuple(
        InterestCluster(c, 0, (f"k{c}",), (f"i{c}",), 1, summary=text)
        for c, text in enumerate(SUMMARIES)
    )
    return ClusterCatalog(
        clusters=clusters,
        parents=(ParentCluster(0, ("films",), tuple(range(len(SUMMARIES)))),),
        item_to_cluster={f"i{c}": c for c in range(len(SUMMARIES))},
    )


def tiny_models(**llm: object) -> ModelSettings:
    settings = load_settings(
        models={
            "novelty": "llm",
            "llm": {
                "trainable_layers": 2,
                "steps": 20,
                "batch_size": 6,
                "learning_rate": 5e-3,
                "inference_batch": 16,
                "prompt_titles": 1,
                **llm,
            },
        }
    )
    return settings.models


def load_base() -> tuple[Any, nn.Module]:
    """The default base language model (SmolLM2-135M), pretrained; about 30 s on 2 CPUs."""
    llm = LlmSettings()
    return load_language_model(base_reference(llm.base, llm.gguf_file), True, 7)


def fresh(base: tuple[Any, nn.Module]) -> tuple[Any, nn.Module]:
    tokenizer, lm = base
    return tokenizer, copy.deepcopy(lm)


def wrap(base: tuple[Any, nn.Module], models: ModelSettings) -> LlmNoveltyModel:
    config = llm_novelty_config(tiny_catalog(), 2, models)
    return build_llm_novelty(config, inference_batch=16, loaded=fresh(base))


def planted_pairs() -> NoveltyData:
    """Each cluster's next novel interest is the following one, mod 6."""
    histories = [[c, (c + 3) % 6] for c in range(6)]
    targets = [(h[0] + 1) % 6 for h in histories]
    count = len(targets)
    return NoveltyData(
        histories=np.array(histories, dtype=np.int64),
        targets=np.array(targets, dtype=np.int64),
        weights=np.full(count, 1 / count),
        users=np.ones(count, dtype=np.int64),
        windows=np.array(histories, dtype=np.int64),
    )
