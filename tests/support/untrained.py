"""An untrained (seeded) model version at a workspace catalog's real shapes.

The integration tests (streaming, faults, benchmarks) test the path, not model quality, and
training would cost a minute of a 2-CPU budget; one small seeded version does.
"""

from __future__ import annotations

from typing import Any

import torch

from plugin.data.workspace import Workspace
from plugin.models.alignment import AlignmentConfig, AlignmentModel
from plugin.models.novelty import NoveltyConfig, NoveltyModel
from plugin.models.repository import ModelRepository
from plugin.settings import Settings


def write_untrained_version(
    settings: Settings,
    workspace: Workspace,
    seed: int,
    *,
    publish: bool = True,
    manifest: dict[str, Any] | None = None,
) -> int:
    """Write one gate-passed version to ``settings.models.repository``; published (ready to
    serve and recorded as the published version) unless ``publish`` is False. ``manifest``
    adds fields to the one written."""
    catalog = workspace.catalog
    torch.manual_seed(seed)
    novelty = NoveltyModel(
        NoveltyConfig(
            n_clusters=len(catalog),
            n_parents=len(catalog.parents),
            parent_of=tuple(c.parent_id for c in catalog.clusters),
            history_length=settings.sequence.history_length,
            d_model=32,
            layers=1,
        )
    )
    alignment = AlignmentModel(AlignmentConfig(n_clusters=len(catalog)))
    repository = ModelRepository(settings.models.repository)
    written = {
        "catalog_version": catalog.version,
        "gate": {"passed": True, "reasons": []},
        **(manifest or {}),
    }
    version = repository.write(novelty.eval(), alignment.eval(), written)
    if publish:
        repository.prepare_serving(version)
        repository.record_published(version)
    return version
