"""The granularity rule: how many leaf clusters a dataset's catalog gets, measured on its
training data (``clusters.leaf_clusters`` None; ``docs/CLUSTERS.md``, "The granularity rule").

Candidate leaf counts come from a fixed ladder (8, 12, 16, 24, 32, 48, 64, 96, ...). For each,
in ascending order, the catalog is built on the training part and two things are measured:

* **history support**: for every training novel move (the core's walk, K and W from the
  settings), the number of training novel moves out of the same K-cluster history; the median
  over moves. The alignment labels and the novelty pairs are per-history statistics, and they
  need enough moves behind a typical history to be more than noise;
* **smallest leaf**: the item count of the smallest leaf, so no interest is a handful of items.

The rule takes the largest count on the ladder that passes both thresholds
(``rule_min_history_moves``, ``rule_min_leaf_items``), and stops at the first that fails:
more leaves only split the same moves over more histories. When even the smallest fails, the
smallest is used (and the report says it failed).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from plugin.core.catalog import ClusterCatalog
from plugin.core.moves import novel_moves
from plugin.data.clustering import build_catalog
from plugin.data.datasets import Dataset
from plugin.settings import ClusterSettings, DataSettings, SequenceSettings

BASE_LADDER = (8, 12)


def ladder(n_items: int, min_leaf_items: int) -> Iterator[int]:
    """8, 12, 16, 24, 32, 48, ... (powers of two and 1.5 times them), while a leaf can still
    hold ``min_leaf_items`` items on average."""
    size = BASE_LADDER[0]
    while size <= min(4096, n_items // max(min_leaf_items, 1)):
        yield size
        size = size * 3 // 2 if (size & (size - 1)) == 0 else size * 4 // 3


def parents_for(leaves: int, most: int) -> int:
    """About six leaves a parent (the default 48 leaves in 8 parents), at most ``most``."""
    return max(1, min(most, leaves // 2, max(2, round(leaves / 6))))


def history_support(
    train: Dataset, catalog: ClusterCatalog, sequence: SequenceSettings, data: DataSettings
) -> float:
    """Median, over training novel moves, of the novel moves out of the move's history."""
    moves = novel_moves(
        train.events(), catalog, sequence.history_length, sequence.novelty_window, data
    )
    if not moves:
        return 0.0
    out_of = Counter(m.history for m in moves)
    return float(np.median([out_of[m.history] for m in moves]))


@dataclass
class GranularityChoice:
    """What the rule measured at each leaf count, and what it chose."""

    leaf_clusters: int
    parent_clusters: int
    passed: bool
    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "leaf_clusters": self.leaf_clusters,
            "parent_clusters": self.parent_clusters,
            "passed": self.passed,
            "measured": self.rows,
            "seconds": round(self.seconds, 2),
        }


def choose_leaf_count(
    train: Dataset,
    clusters: ClusterSettings,
    sequence: SequenceSettings,
    data: DataSettings,
    progress: bool = False,
) -> tuple[GranularityChoice, ClusterCatalog]:
    """Run the rule on the training part; returns the choice and the chosen catalog."""
    started = time.perf_counter()
    chosen: tuple[int, ClusterCatalog] | None = None
    first: tuple[int, ClusterCatalog] | None = None
    rows: list[dict[str, Any]] = []
    counts = list(ladder(len(train.items), clusters.rule_min_leaf_items))
    if not counts:
        raise ValueError(
            f"dataset {train.name!r} has {len(train.items)} items: too few for "
            f"{BASE_LADDER[0]} leaves of {clusters.rule_min_leaf_items} items; "
            "set clusters.leaf_clusters"
        )
    for leaves in tqdm(counts, desc="granularity", disable=not progress, leave=False):
        settings = clusters.model_copy(
            update={
                "leaf_clusters": leaves,
                "parent_clusters": parents_for(leaves, clusters.parent_clusters),
            }
        )
        try:
            catalog = build_catalog(train, settings)
        except ValueError:  # fewer distinguishable items than leaves: the ladder ends here
            break
        support = history_support(train, catalog, sequence, data)
        smallest = min(c.size for c in catalog.clusters)
        passed = (
            support >= clusters.rule_min_history_moves and smallest >= clusters.rule_min_leaf_items
        )
        rows.append(
            {
                "leaf_clusters": leaves,
                "median_history_moves": support,
                "smallest_leaf": int(smallest),
                "passed": passed,
            }
        )
        first = first or (leaves, catalog)
        if not passed:
            break
        chosen = (leaves, catalog)
    if first is None:
        raise ValueError(f"no leaf count could be built for dataset {train.name!r}")
    leaves, catalog = chosen or first
    choice = GranularityChoice(
        leaf_clusters=leaves,
        parent_clusters=len(catalog.parents),
        passed=chosen is not None,
        rows=rows,
        seconds=time.perf_counter() - started,
    )
    return choice, catalog
