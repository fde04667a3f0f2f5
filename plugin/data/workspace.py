"""The workspace: a dataset, its time split, and the cluster catalog fit on its training part."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

from plugin.core.catalog import ClusterCatalog
from plugin.data.clustering import BUILD_METHOD, build_catalog
from plugin.data.datasets import Dataset, load_dataset
from plugin.data.granularity_rule import choose_leaf_count
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
    """Catalogs are cached per (training data, cluster settings, build method): a change of any
    rebuilds (a new build method adds content, such as the readable summaries)."""
    params = json.dumps(
        {**settings.clusters.model_dump(), "method": BUILD_METHOD}, sort_keys=True
    ).encode()
    key = f"{train.name}-{train.fingerprint()}-{hashlib.sha256(params).hexdigest()[:8]}"
    return settings.var_dir / "catalogs" / f"{key}.json"


def open_workspace(settings: Settings, rebuild: bool = False, progress: bool = False) -> Workspace:
    """Load the dataset, split it by event time, and load or build its cluster catalog.

    With ``clusters.leaf_clusters`` None the granularity rule chooses the leaf count on the
    training part; what it measured and chose is in the catalog's ``build["granularity"]``.
    """
    dataset = load_dataset(settings.data)
    train, test = dataset.time_split(settings.data.split_quantile)
    path = catalog_path(settings, train)
    if path.exists() and not rebuild:
        catalog = ClusterCatalog.load(path)
    else:
        log.info("building the cluster catalog for %s", dataset.name)
        catalog = build_clusters(settings, train, progress)
        catalog.save(path)
    return Workspace(dataset=dataset, train=train, test=test, catalog=catalog)


def build_clusters(settings: Settings, train: Dataset, progress: bool = False) -> ClusterCatalog:
    """The catalog of ``train`` for ``settings.clusters``, its leaf count chosen by the
    granularity rule when ``leaf_clusters`` is None."""
    if settings.clusters.leaf_clusters is not None:
        return build_catalog(train, settings.clusters, progress=progress)
    choice, catalog = choose_leaf_count(
        train, settings.clusters, settings.sequence, settings.data, progress=progress
    )
    log.info(
        "granularity rule chose %d leaf clusters in %d parents",
        choice.leaf_clusters,
        choice.parent_clusters,
    )
    return replace(catalog, build={**catalog.build, "granularity": choice.as_dict()})
