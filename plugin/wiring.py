"""The composition root: builds the catalog, planners and store from one settings tree.

Commands, the Faust app and tests assemble components here, so there is one way to get each.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from plugin.catalog import ClusterCatalog
from plugin.clustering import build_catalog
from plugin.datasets import Dataset, load_dataset
from plugin.frequency import TransitionFrequencyPlanner, count_novel_transitions
from plugin.models.planner import BestOfNPlanner
from plugin.models.repository import ModelRepository
from plugin.planning import Planner
from plugin.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Workspace:
    """A dataset, its time split, and the catalog fit on the training part."""

    dataset: Dataset
    train: Dataset
    test: Dataset
    catalog: ClusterCatalog


def catalog_path(settings: Settings, train: Dataset) -> Path:
    """Catalogs are cached per (training data, cluster settings): a change of either rebuilds."""
    params = json.dumps(settings.clusters.model_dump(), sort_keys=True).encode()
    key = f"{train.name}-{train.fingerprint()}-{hashlib.sha256(params).hexdigest()[:8]}"
    return settings.var_dir / "catalogs" / f"{key}.json"


def open_workspace(settings: Settings, rebuild: bool = False, progress: bool = False) -> Workspace:
    """Load the dataset, split it by event time, and load or build its cluster catalog."""
    dataset = load_dataset(settings.data)
    train, test = dataset.time_split(settings.data.split_quantile)
    path = catalog_path(settings, train)
    if path.exists() and not rebuild:
        catalog = ClusterCatalog.load(path)
    else:
        log.info("building the cluster catalog for %s", dataset.name)
        catalog = build_catalog(train, settings.clusters, progress=progress)
        catalog.save(path)
    return Workspace(dataset=dataset, train=train, test=test, catalog=catalog)


def frequency_planner(workspace: Workspace, settings: Settings) -> TransitionFrequencyPlanner:
    """The transition-frequency baseline, counted on the training part only."""
    counts = count_novel_transitions(
        workspace.train.events(),
        workspace.catalog,
        k=settings.sequence.history_length,
        window=settings.sequence.novelty_window,
    )
    return TransitionFrequencyPlanner(counts, workspace.catalog, n=settings.planner.candidates)


def best_of_n_planner(
    settings: Settings, catalog: ClusterCatalog, version: int | None = None
) -> BestOfNPlanner:
    """The in-process best-of-n planner over a trained version (the newest by default)."""
    trained = ModelRepository(settings.models.repository).load(version)
    trained_on = trained.manifest.get("catalog_version")
    if trained_on != catalog.version:
        raise ValueError(
            f"model version {trained.version} was trained on catalog {trained_on}, but the "
            f"current catalog is {catalog.version}; run `explore train`"
        )
    return BestOfNPlanner(
        trained.novelty,
        trained.alignment,
        n=settings.planner.candidates,
        temperature=settings.planner.temperature,
        seed=settings.planner.seed,
        model_version=trained.label,
    )


def build_planner(settings: Settings, workspace: Workspace) -> Planner:
    """The planner named by ``settings.planner.kind``."""
    kind = settings.planner.kind
    if kind == "frequency":
        return frequency_planner(workspace, settings)
    if kind == "best-of-n":
        return best_of_n_planner(settings, workspace.catalog)
    raise ValueError(f"planner.kind {kind!r} is not available in this build")
