"""The language model's representation of the cluster descriptions, for the alignment model.

The paper trains its alignment model as a second language model reading the history's and
the candidate's descriptions. Here the language model reads each description once: every leaf
cluster's summary and every parent's summary go through the base language model
(``models.llm.*``, SmolLM2-135M by default), and the final hidden states are averaged over
the text's tokens. The matrix is then centred over the catalog's texts and each row scaled
to unit length, so a projection starts on the same scale whatever the base model's width and
its outlier dimensions. A leaf's feature row is its own vector beside its parent's.

The [C, 2 x width] matrix (221 KB at 48 leaves and width 576) is frozen: it is stored in the
alignment model's state, so serving never runs the language model. It is cached on disk by
the texts and the base model's content hash, because loading the base costs about 27 s on two
cores and a training run (the validation search, then the refit) asks for it several times.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from plugin.core.catalog import ClusterCatalog
from plugin.errors import MissingPrerequisite
from plugin.models.llm import BaseModelRef, base_reference, load_language_model, padded
from plugin.settings import LlmSettings

# Texts per forward pass: the summaries are about 20 tokens, so this stays small in memory.
BATCH = 32


@dataclass(frozen=True)
class DescriptionFeatures:
    """Per leaf cluster: its description's vector beside its parent's, and their source."""

    matrix: Tensor  # [C, 2 x width], frozen
    base: BaseModelRef

    @property
    def width(self) -> int:
        return int(self.matrix.shape[1])


@torch.no_grad()
def embed_descriptions(texts: Sequence[str], tokenizer: Any, lm: nn.Module) -> Tensor:
    """Mean final hidden state over each text's tokens, [len(texts), width], float32."""
    backbone: nn.Module = lm.get_decoder()  # type: ignore[operator]
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id or 0
    rows: list[Tensor] = []
    for start in range(0, len(texts), BATCH):
        encoded = [
            tokenizer(text, add_special_tokens=False)["input_ids"] or [pad]
            for text in texts[start : start + BATCH]
        ]
        device = next(backbone.parameters()).device
        ids, mask = padded(encoded, pad, device)
        hidden = backbone(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        weights = mask[..., None].float()
        rows.append(((hidden.float() * weights).sum(dim=1) / weights.sum(dim=1)).cpu())
    return torch.cat(rows)


def normalised(vectors: Tensor) -> Tensor:
    """Centred over the rows, then each row at unit length."""
    centred = vectors - vectors.mean(dim=0, keepdim=True)
    return centred / centred.norm(dim=1, keepdim=True).clamp(min=1e-6)


def description_features(
    catalog: ClusterCatalog,
    llm: LlmSettings,
    cache_dir: Path,
    loaded: tuple[Any, nn.Module] | None = None,
) -> DescriptionFeatures:
    """The frozen feature matrix of ``catalog``'s leaves (own and parent description) from the
    pretrained base language model; ``loaded`` is an already loaded tokenizer and model of the
    same base (tests), else it is loaded when the cache misses."""
    if not len(catalog):
        raise MissingPrerequisite("the catalog has no clusters to describe")
    base = base_reference(llm.base, llm.gguf_file)
    leaves = [c.readable for c in catalog.clusters]
    parents = [p.readable for p in catalog.parents]
    key = hashlib.sha256(json.dumps([base.sha256, leaves, parents]).encode()).hexdigest()[:16]
    path = cache_dir / f"lm-descriptions-{key}.pt"
    if path.exists():
        vectors: Tensor = torch.load(path, weights_only=True)
    else:
        tokenizer, lm = loaded or load_language_model(base, pretrained=True, seed=0)
        before = torch.get_num_threads()
        torch.set_num_threads(max(1, llm.threads))
        try:
            vectors = normalised(embed_descriptions(leaves + parents, tokenizer, lm))
        finally:
            torch.set_num_threads(before)
        cache_dir.mkdir(parents=True, exist_ok=True)
        torch.save(vectors, path)
    own, parent = vectors[: len(leaves)], vectors[len(leaves) :]
    parent_rows = torch.tensor([c.parent_id for c in catalog.clusters], dtype=torch.long)
    return DescriptionFeatures(torch.cat([own, parent[parent_rows]], dim=1), base)
