"""The granularity rule and the synthetic datasets of the robustness study."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from plugin.core.moves import novel_moves
from plugin.data.datasets import Dataset, load_files
from plugin.data.granularity_rule import choose_leaf_count, ladder, parents_for
from plugin.data.synthetic import SyntheticSpec, generate, write_synthetic
from plugin.data.workspace import open_workspace
from plugin.settings import ClusterSettings, DataSettings, SequenceSettings, load_settings

SMALL = SyntheticSpec(
    aligned=True, users=80, topics=12, items_per_topic=6, moves_per_user=16, successors=3
)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    interactions, items = write_synthetic(SMALL, tmp_path_factory.mktemp("synthetic"))
    return load_files(interactions, items)


def test_the_ladder_and_the_parents() -> None:
    assert list(ladder(1682, 5)) == [8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256]
    assert list(ladder(50, 5)) == [8]
    assert parents_for(48, 8) == 8
    assert parents_for(8, 8) == 2
    assert parents_for(256, 8) == 8


def test_the_rule_takes_the_largest_passing_count_and_stops_at_the_first_failure(
    small: Dataset,
) -> None:
    train, _ = small.time_split(0.8)
    clusters = ClusterSettings(rule_min_history_moves=6, rule_min_leaf_items=3)
    choice, catalog = choose_leaf_count(train, clusters, SequenceSettings(), DataSettings())
    rows = choice.rows
    assert len(catalog) == choice.leaf_clusters
    assert all(row["passed"] for row in rows[:-1])  # it stops at the first failure
    passing = [row["leaf_clusters"] for row in rows if row["passed"]]
    assert choice.passed and choice.leaf_clusters == max(passing)
    for row in rows:
        failed = row["median_history_moves"] < 6 or row["smallest_leaf"] < 3
        assert row["passed"] is not failed
    # A stricter threshold can only choose fewer leaves.
    strict = clusters.model_copy(update={"rule_min_history_moves": 10_000})
    fallback, _ = choose_leaf_count(train, strict, SequenceSettings(), DataSettings())
    assert not fallback.passed and fallback.leaf_clusters == 8


def test_the_workspace_records_what_the_rule_chose(tmp_path: Path) -> None:
    interactions, items = write_synthetic(SMALL, tmp_path / "data")
    settings = load_settings(
        var_dir=tmp_path / "var",
        data={"interactions": interactions, "items": items},
        clusters={"rule_min_history_moves": 6, "rule_min_leaf_items": 3},
    )
    workspace = open_workspace(settings)
    granularity = workspace.catalog.build["granularity"]
    assert granularity["leaf_clusters"] == len(workspace.catalog)
    assert workspace.catalog.build["settings"]["leaf_clusters"] == len(workspace.catalog)
    assert open_workspace(settings).catalog.version == workspace.catalog.version  # cached


def _positive_share_by_pair(aligned: bool) -> np.ndarray:
    """Positive share of each (previous topic, next topic) move in a generated dataset."""
    spec = SyntheticSpec(aligned=aligned, users=150, topics=8, moves_per_user=30, successors=3)
    interactions, _ = generate(spec)
    topics = interactions["item_id"].str.extract(r"t(\d+)i")[0].astype(int).to_numpy()
    liked = interactions["rating"].to_numpy() >= 4
    users = interactions["user_id"].to_numpy()
    counts = np.zeros((8, 8, 2))
    for i in range(1, len(topics)):
        if users[i] == users[i - 1] and topics[i] != topics[i - 1]:
            counts[topics[i - 1], topics[i], int(liked[i])] += 1
    seen = counts.sum(axis=2) >= 20
    return (counts[..., 1] / np.maximum(counts.sum(axis=2), 1))[seen]


def test_only_the_aligned_dataset_has_pairs_users_like_and_pairs_they_do_not() -> None:
    aligned = _positive_share_by_pair(True)
    null = _positive_share_by_pair(False)
    assert aligned.min() < 0.35 and aligned.max() > 0.65
    assert null.min() > 0.3 and null.max() < 0.7


def test_synthetic_data_loads_and_has_novel_moves(small: Dataset) -> None:
    train, _ = small.time_split(0.8)
    _, catalog = choose_leaf_count(
        train, ClusterSettings(rule_min_leaf_items=3), SequenceSettings(), DataSettings()
    )
    moves = novel_moves(small.events(), catalog, 2, 20, DataSettings())
    assert len(small.items) == SMALL.topics * SMALL.items_per_topic
    assert moves and any(m.positive for m in moves) and not all(m.positive for m in moves)
