"""The granularity study: how good a catalog of a given leaf count is, measured on a time split.

``python -m plugin.evaluation.granularity`` builds the default catalog (its leaf count chosen
by the granularity rule, :mod:`plugin.data.granularity_rule`) on the MovieLens-100K training
part and prints it; ``--sweep`` measures candidate leaf counts (``docs/CLUSTERS.md``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from plugin.core.catalog import ClusterCatalog
from plugin.core.moves import walk_novel_moves
from plugin.core.stats import gini
from plugin.data.clustering import DEFAULT_RECIPE, FeatureRecipe, build_catalog
from plugin.data.datasets import Dataset, load_movielens_100k
from plugin.data.workspace import build_clusters
from plugin.settings import PROJECT_ROOT, ClusterSettings, DataSettings, Settings


def _genre_purity(catalog: ClusterCatalog, items: pd.DataFrame) -> float:
    """Size-weighted share of a leaf's items that carry the leaf's most common genre."""
    genres = dict(zip(items["item_id"], items["genres"], strict=True))
    members: dict[int, list[str]] = defaultdict(list)
    for item, cluster in catalog.item_to_cluster.items():
        members[cluster].append(item)
    hits = 0
    for ids in members.values():
        counts = Counter(g for i in ids for g in genres[i])
        hits += counts.most_common(1)[0][1] if counts else 0
    return hits / max(len(catalog.item_to_cluster), 1)


def _novel_transitions(
    dataset: Dataset, catalog: ClusterCatalog, data: DataSettings
) -> list[tuple[int, int, int, datetime]]:
    """``(a, b, target, event_time)``: after history ``(a, b)`` (the last two unique clusters of
    the user's positive watches, ``b`` the most recent) the user positively watched a new
    cluster. The core's novel-move walk over the positive events, with a window of two."""
    positive = (
        event
        for event in dataset.events()
        if event.is_positive(data.positive_rating, data.positive_watch_ratio)
    )
    return [
        (recent[1], recent[0], cluster, event.event_time)
        for event, recent, cluster in walk_novel_moves(positive, catalog, window=2)
        if len(recent) == 2
    ]


def _top(counter: Counter[int], exclude: tuple[int, int], k: int, into: list[int]) -> None:
    for cluster, _ in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(into) >= k:
            return
        if cluster not in exclude and cluster not in into:
            into.append(cluster)


def measure_granularity(
    dataset: Dataset,
    settings: ClusterSettings,
    data: DataSettings | None = None,
    recipe: FeatureRecipe = DEFAULT_RECIPE,
) -> dict[str, Any]:
    """Fit clusters on the training split and score them: size balance, genre purity, and
    how well a transition-count model predicts the next novel cluster on the test split."""
    data = data or DataSettings()
    train, test = dataset.time_split(data.split_quantile)
    started = time.perf_counter()
    catalog = build_catalog(train, settings, recipe=recipe)
    build_s = time.perf_counter() - started
    sizes = [c.size for c in catalog.clusters]
    boundary = next(test.events()).event_time
    transitions = _novel_transitions(dataset, catalog, data)
    fit = [(a, b, target) for a, b, target, at in transitions if at < boundary]
    held = [(a, b, target) for a, b, target, at in transitions if at >= boundary]

    by_history: dict[tuple[int, int], Counter[int]] = defaultdict(Counter)
    by_last: dict[int, Counter[int]] = defaultdict(Counter)
    popularity: Counter[int] = Counter()
    for a, b, target in fit:
        by_history[(a, b)][target] += 1
        by_last[b][target] += 1
        popularity[target] += 1
    hits = {"model@1": 0, "model@5": 0, "popular@1": 0, "popular@5": 0}
    seen = 0
    for a, b, target in held:
        history = (int(a), int(b))
        seen += history in by_history
        ranked: list[int] = []
        _top(by_history.get(history, Counter()), history, 5, ranked)
        _top(by_last.get(history[1], Counter()), history, 5, ranked)
        _top(popularity, history, 5, ranked)
        baseline: list[int] = []
        _top(popularity, history, 5, baseline)
        hits["model@1"] += target in ranked[:1]
        hits["model@5"] += target in ranked
        hits["popular@1"] += target in baseline[:1]
        hits["popular@5"] += target in baseline
    n_held = max(len(held), 1)
    leaves = len(catalog)
    return {
        "leaf_clusters": leaves,
        "parent_clusters": settings.parent_clusters,
        "size_min": int(min(sizes)),
        "size_median": float(np.median(sizes)),
        "size_max": int(max(sizes)),
        "size_gini": round(gini(sizes), 3),
        "small_leaves": sum(size < 5 for size in sizes),
        "genre_purity": round(_genre_purity(catalog, dataset.items), 3),
        "train_transitions": len(fit),
        "test_transitions": len(held),
        "histories_possible": leaves * (leaves - 1),
        "histories_seen": len(by_history),
        "transitions_per_history": round(len(fit) / max(len(by_history), 1), 2),
        "test_history_seen": round(seen / n_held, 3),
        **{f"hit_{k}": round(v / n_held, 3) for k, v in hits.items()},
        "hit_random@1": round(1 / max(leaves - 2, 1), 3),
        "lift_over_popular@1": round(hits["model@1"] / max(hits["popular@1"], 1), 2),
        "build_s": round(build_s, 2),
        "example_keywords": [c.description for c in catalog.clusters[:3]],
    }


def sweep(
    dataset: Dataset,
    leaf_counts: Sequence[int],
    parent_clusters: int | None = None,
    seeds: Sequence[int] = (7, 8, 9),
    base: ClusterSettings | None = None,
    data: DataSettings | None = None,
) -> list[dict[str, Any]]:
    """``measure_granularity`` for each leaf count, averaged over ``seeds`` (k-means restarts
    differ, so one seed alone overstates small differences). Parents: given, else leaves / 6.
    """
    base = base or ClusterSettings()
    results = []
    for leaves in leaf_counts:
        parents = parent_clusters or max(2, round(leaves / 6))
        runs = [
            measure_granularity(
                dataset,
                base.model_copy(
                    update={
                        "leaf_clusters": leaves,
                        "parent_clusters": min(parents, leaves),
                        "seed": seed,
                    }
                ),
                data,
            )
            for seed in seeds
        ]
        row: dict[str, Any] = {"seeds": list(seeds)}
        for key, value in runs[0].items():
            values = [run[key] for run in runs]
            if all(v == value for v in values):
                row[key] = value
            elif isinstance(value, int | float) and not isinstance(value, bool):
                row[key] = round(float(np.mean(values)), 3)
            else:
                row[key] = value
        row["hit_model@1_sd"] = round(float(np.std([r["hit_model@1"] for r in runs])), 3)
        row["runs"] = runs
        results.append(row)
    return results


_TABLE_COLUMNS = (
    ("leaf_clusters", "leaves"),
    ("parent_clusters", "parents"),
    ("size_min", "min"),
    ("size_median", "median"),
    ("size_max", "max"),
    ("size_gini", "gini"),
    ("small_leaves", "<5 items"),
    ("genre_purity", "purity"),
    ("transitions_per_history", "tr/hist"),
    ("test_history_seen", "hist seen"),
    ("hit_model@1", "hit@1"),
    ("hit_model@1_sd", "±sd"),
    ("hit_popular@1", "pop@1"),
    ("hit_random@1", "rand@1"),
    ("lift_over_popular@1", "lift"),
    ("hit_model@5", "hit@5"),
    ("hit_popular@5", "pop@5"),
    ("build_s", "build s"),
)


def format_table(results: Sequence[dict[str, Any]]) -> str:
    """The sweep as a Markdown table."""
    head = "| " + " | ".join(label for _, label in _TABLE_COLUMNS) + " |"
    rule = "|" + "|".join("---:" for _ in _TABLE_COLUMNS) + "|"
    lines = [head, rule]
    for row in results:
        cells = []
        for key, _ in _TABLE_COLUMNS:
            value = row[key]
            cells.append(f"{value:.3g}" if isinstance(value, float) else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m plugin.evaluation.granularity",
        description="Build the MovieLens-100K catalog, or sweep leaf-cluster counts.",
    )
    parser.add_argument("--sweep", action="store_true", help="measure several leaf counts")
    parser.add_argument(
        "--leaves", default="16,32,48,64,96,128", help="comma-separated leaf counts for --sweep"
    )
    parser.add_argument(
        "--parents", type=int, default=None, help="parent clusters (default: about leaves / 6)"
    )
    parser.add_argument("--seeds", default="7,8,9", help="k-means seeds to average over")
    parser.add_argument(
        "--out",
        type=Path,
        default=PROJECT_ROOT / "var" / "cluster_sweep.json",
        help="where --sweep writes its JSON",
    )
    args = parser.parse_args(argv)
    dataset = load_movielens_100k()
    if args.sweep:
        counts = [int(x) for x in args.leaves.split(",") if x.strip()]
        seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
        results = sweep(dataset, counts, args.parents, seeds)
        print(format_table(results))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
        print(f"wrote {args.out}")
        return 0
    train, _ = dataset.time_split(DataSettings().split_quantile)
    started = time.perf_counter()
    catalog = build_clusters(Settings(), train, progress=True)
    print(
        f"catalog {catalog.version}: {len(catalog)} leaves, {len(catalog.parents)} parents, "
        f"built in {time.perf_counter() - started:.2f} s"
    )
    for parent in catalog.parents:
        print(f"[{parent.parent_id}] {parent.description}")
        for c in parent.children:
            cluster = catalog.clusters[c]
            titles = "; ".join(catalog.title(i) for i in cluster.top_items[:3])
            print(f"   {c:3d} ({cluster.size:3d}) {cluster.description}  -- {titles}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
