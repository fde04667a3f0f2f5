"""Building the interest-cluster catalog."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from plugin.core.catalog import ClusterCatalog, InterestCluster, ParentCluster
from plugin.data.clustering import BUILD_METHOD, build_catalog, readable_title
from plugin.data.datasets import Dataset, load_files, load_movielens_100k
from plugin.evaluation.granularity import format_table, measure_granularity, sweep
from plugin.settings import ClusterSettings, DataSettings

GENRES = ("Western", "Horror", "Musical")
WORDS = {"Western": "Outlaw", "Horror": "Haunted", "Musical": "Melody"}


def synthetic(tmp_path: Path) -> Dataset:
    """Three planted tastes: 45 items in three genres, each user watches within one genre.

    The last item of each genre is never watched (a cold item). It goes through the two-file
    format so the loader is exercised too.
    """
    rng = np.random.default_rng(0)
    items = pd.DataFrame(
        {
            "item_id": [f"m{g}{i:02d}" for g in range(3) for i in range(15)],
            "title": [
                f"{WORDS[genre]} {word} ({1950 + 10 * g + i % 3})"
                for g, genre in enumerate(GENRES)
                for i, word in enumerate(
                    [
                        "Dawn",
                        "Road",
                        "Night",
                        "River",
                        "Town",
                        "Moon",
                        "Sky",
                        "Rain",
                        "Fire",
                        "Stone",
                        "Wind",
                        "Star",
                        "Bell",
                        "Door",
                        "Lake",
                    ]
                )
            ],
            "genres": [genre for genre in GENRES for _ in range(15)],
        }
    )
    rows = []
    for user in range(36):
        g = user % 3
        watched = rng.choice(14, size=8, replace=False)
        for step, i in enumerate(watched):
            rows.append(
                (
                    f"u{user}",
                    f"m{g}{i:02d}",
                    1_000_000 + 100 * user + step,
                    float(rng.integers(3, 6)),
                )
            )
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating"])
    inter_path, items_path = tmp_path / "inter.csv", tmp_path / "items.csv"
    frame.to_csv(inter_path, index=False)
    items.to_csv(items_path, index=False)
    return load_files(inter_path, items_path, name="synthetic")


@pytest.fixture(scope="module")
def movielens_train() -> Dataset:
    train, _ = load_movielens_100k().time_split(0.8)
    return train


@pytest.fixture(scope="module")
def catalog(movielens_train: Dataset) -> ClusterCatalog:
    return build_catalog(movielens_train, ClusterSettings(leaf_clusters=48))


def test_every_item_is_mapped_and_leaf_count_honoured(
    movielens_train: Dataset, catalog: ClusterCatalog
) -> None:
    settings = ClusterSettings(leaf_clusters=48)
    assert len(catalog) == settings.leaf_clusters
    assert len(catalog.parents) == settings.parent_clusters
    assert set(catalog.item_to_cluster) == set(movielens_train.items["item_id"])
    sizes = Counter(catalog.item_to_cluster.values())
    assert sorted(sizes) == list(range(settings.leaf_clusters))  # no empty leaf
    assert all(c.size == sizes[c.cluster_id] for c in catalog.clusters)
    assert [c.cluster_id for c in catalog.clusters] == list(range(len(catalog)))
    unwatched = set(movielens_train.items["item_id"]) - set(movielens_train.interactions["item_id"])
    assert unwatched and all(i in catalog.item_to_cluster for i in unwatched)


def test_hierarchy_is_consistent(catalog: ClusterCatalog) -> None:
    children = [c for parent in catalog.parents for c in parent.children]
    assert sorted(children) == list(range(len(catalog)))  # each leaf exactly once
    for parent in catalog.parents:
        assert parent.children
        assert all(catalog.clusters[c].parent_id == parent.parent_id for c in parent.children)
    assert [p.parent_id for p in catalog.parents] == list(range(len(catalog.parents)))
    # numbered by parent, so each parent's leaves are one contiguous run
    assert [c.parent_id for c in catalog.clusters] == sorted(c.parent_id for c in catalog.clusters)


def test_keywords_are_readable_and_unique(catalog: ClusterCatalog) -> None:
    settings = ClusterSettings(leaf_clusters=48)
    groups: list[InterestCluster | ParentCluster] = [*catalog.clusters, *catalog.parents]
    for group in groups:
        assert 1 <= len(group.keywords) <= settings.keywords
        assert len(set(group.keywords)) == len(group.keywords)
        for word in group.keywords:
            assert re.fullmatch(r"[a-z][a-z'\-]+|\d{4}s", word), word
            assert word not in {"the", "and", "of", "ii", "iii"}
    descriptions = [c.description for c in catalog.clusters]
    assert len(set(descriptions)) == len(descriptions)
    # genres and decades dominate the descriptions of a movie catalog
    assert sum("comedy" in c.keywords for c in catalog.clusters) >= 3
    assert any(k.endswith("0s") for c in catalog.clusters for k in c.keywords)
    first_parent = catalog.parents[catalog.clusters[0].parent_id]
    assert catalog.describe(0).startswith(first_parent.keywords[0])


def test_top_items_are_most_watched(movielens_train: Dataset, catalog: ClusterCatalog) -> None:
    views = movielens_train.interactions["item_id"].value_counts()
    for cluster in catalog.clusters:
        assert 1 <= len(cluster.top_items) <= ClusterSettings(leaf_clusters=48).top_items
        counts = [(-int(views.get(i, 0)), i) for i in cluster.top_items]
        assert counts == sorted(counts)
        members = [i for i, c in catalog.item_to_cluster.items() if c == cluster.cluster_id]
        best = max(int(views.get(i, 0)) for i in members)
        assert views.get(cluster.top_items[0], 0) == best
    assert catalog.title("50") == "Star Wars (1977)"
    assert len(catalog.item_titles) == len(movielens_train.items)


def test_build_info_records_the_inputs(movielens_train: Dataset, catalog: ClusterCatalog) -> None:
    assert catalog.build["method"] == BUILD_METHOD
    assert catalog.build["dataset_fingerprint"] == movielens_train.fingerprint()
    assert (
        catalog.build["settings"]["leaf_clusters"]
        == ClusterSettings(leaf_clusters=48).leaf_clusters
    )
    assert catalog.build["interactions"] == len(movielens_train.interactions)


def test_deterministic_and_survives_save_load(
    movielens_train: Dataset, catalog: ClusterCatalog, tmp_path: Path
) -> None:
    again = build_catalog(movielens_train, ClusterSettings(leaf_clusters=48))
    assert again.version == catalog.version
    assert again.item_to_cluster == catalog.item_to_cluster
    path = tmp_path / "catalog.json"
    assert catalog.save(path) == catalog.version
    loaded = ClusterCatalog.load(path)
    assert loaded.version == catalog.version
    assert loaded.clusters == catalog.clusters and loaded.parents == catalog.parents


def test_seed_and_settings_change_the_version(
    movielens_train: Dataset, catalog: ClusterCatalog
) -> None:
    other = build_catalog(movielens_train, ClusterSettings(leaf_clusters=16, parent_clusters=4))
    assert len(other) == 16 and len(other.parents) == 4
    assert other.version != catalog.version


def test_synthetic_two_file_dataset_recovers_planted_tastes(tmp_path: Path) -> None:
    data = synthetic(tmp_path)
    settings = ClusterSettings(leaf_clusters=6, parent_clusters=3, keywords=3, top_items=4)
    catalog = build_catalog(data, settings)
    assert len(catalog) == 6 and len(catalog.item_to_cluster) == 45
    genre_of = {i: g[0] for i, g in zip(data.items["item_id"], data.items["genres"], strict=True)}
    for parent in catalog.parents:
        members = {
            genre_of[i]
            for i, c in catalog.item_to_cluster.items()
            if catalog.clusters[c].parent_id == parent.parent_id
        }
        assert len(members) == 1  # each parent is one planted taste
        # genre, decade and title word are equally distinctive here: all three are named
        assert members.pop().lower() in parent.keywords
    for cluster in catalog.clusters:
        assert 1 <= len(cluster.keywords) <= 3
        assert 1 <= len(cluster.top_items) <= 4
    assert build_catalog(data, settings).version == catalog.version


def test_too_many_leaves_is_a_clear_error(tmp_path: Path) -> None:
    data = synthetic(tmp_path)
    with pytest.raises(ValueError, match=r"clusters\.leaf_clusters \(64\) exceeds"):
        build_catalog(data, ClusterSettings(leaf_clusters=64, parent_clusters=4))


def test_content_only_when_there_are_no_interactions(tmp_path: Path) -> None:
    data = synthetic(tmp_path).head(0)
    catalog = build_catalog(data, ClusterSettings(leaf_clusters=3, parent_clusters=1))
    assert len(catalog.item_to_cluster) == 45
    genre_sets: Counter[tuple[int, tuple[str, ...]]] = Counter()
    for item_id, genres in zip(data.items["item_id"], data.items["genres"], strict=True):
        genre_sets[(catalog.item_to_cluster[item_id], genres)] += 1
    assert len(genre_sets) == 3  # genre alone separates the three leaves


def test_sweep_measures_each_granularity(tmp_path: Path) -> None:
    data = synthetic(tmp_path)
    results = sweep(
        data,
        [3, 6],
        parent_clusters=2,
        seeds=(1,),
        base=ClusterSettings(leaf_clusters=48),
        data=DataSettings(split_quantile=0.7),
    )
    assert [r["leaf_clusters"] for r in results] == [3, 6]
    for row in results:
        assert row["size_min"] >= 1 and 0 <= row["size_gini"] < 1
        assert row["genre_purity"] == 1.0  # planted tastes are one genre each
        assert 0 <= row["hit_model@1"] <= row["hit_model@5"] <= 1
    table = format_table(results)
    assert table.count("\n") == 3 and "| leaves |" in table
    single = measure_granularity(data, ClusterSettings(leaf_clusters=3, parent_clusters=1))
    assert single["histories_possible"] == 6


def test_summaries_are_readable_sentences_with_titles(catalog: ClusterCatalog) -> None:
    groups: list[InterestCluster | ParentCluster] = [*catalog.clusters, *catalog.parents]
    for group in groups:
        assert group.summary and group.readable == group.summary
        assert ", such as " in group.summary  # named by what it is, then by examples
        assert not re.search(r"\(\d{4}\)", group.summary)  # titles without their year
    leaves = [c.summary for c in catalog.clusters]
    assert len(set(leaves)) == len(leaves)
    # the most watched title from a decade the summary names is among its examples, as people
    # write it ("1990s drama, such as" does not go on with a 1977 film)
    for cluster in catalog.clusters:
        head = cluster.summary.split(", such as ")[0]
        named = set(re.findall(r"\b(\d{3})0s\b", head))
        top = [catalog.title(item) for item in cluster.top_items]
        in_named = [t for t in top if (m := re.search(r"\((\d{3})\d\)", t)) and m[1] in named]
        expected = (in_named or top)[0]
        assert readable_title(expected) in cluster.summary, (cluster.summary, top)


def test_readable_title_drops_year_and_moves_the_article() -> None:
    assert readable_title("Rock, The (1996)") == "The Rock"
    assert readable_title("City of Lost Children, The (Cite des enfants, La) (1995)") == (
        "The City of Lost Children"
    )
    assert readable_title("Speed (1994)") == "Speed"


def test_summaries_change_the_catalog_version(catalog: ClusterCatalog) -> None:
    without = replace(
        catalog,
        clusters=tuple(replace(c, summary="") for c in catalog.clusters),
    )
    assert without.version != catalog.version
    assert without.clusters[0].readable == without.clusters[0].description
