"""Building the interest-cluster catalog (``explore clusters``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from plugin.core.catalog import ClusterCatalog
from plugin.data.workspace import catalog_path
from plugin.jobs import prerequisites
from plugin.settings import Settings


@dataclass
class CatalogBuild:
    """The catalog built, and the file it was saved to."""

    catalog: ClusterCatalog
    path: Path


def build_clusters(settings: Settings, progress: bool = False) -> CatalogBuild:
    """Rebuild the catalog from the training part of the dataset and save it where the other
    jobs look for it (keyed by the training data and the cluster settings)."""
    workspace = prerequisites.workspace(settings, rebuild=True, progress=progress)
    return CatalogBuild(workspace.catalog, catalog_path(settings, workspace.train))
