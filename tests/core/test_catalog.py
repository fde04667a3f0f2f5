"""The catalog as data: ids, lookups, descriptions, the content hash and its JSON file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plugin.core.catalog import ClusterCatalog, InterestCluster, ParentCluster


def small_catalog(keyword: str = "comedy") -> ClusterCatalog:
    return ClusterCatalog(
        clusters=(
            InterestCluster(0, 0, (keyword, "1990s"), ("i1", "i2"), 2),
            InterestCluster(1, 0, ("drama", "1970s"), ("i3",), 1),
            InterestCluster(2, 1, ("sci-fi", "space"), ("i4",), 1),
        ),
        parents=(ParentCluster(0, ("classics",), (0, 1)), ParentCluster(1, ("genre",), (2,))),
        item_to_cluster={"i1": 0, "i2": 0, "i3": 1, "i4": 2},
        item_titles={"i4": "Star Wars (1977)"},
    )


def test_lookups_and_descriptions() -> None:
    catalog = small_catalog()
    assert len(catalog) == 3
    assert catalog.cluster_of("i3") == 1
    assert catalog.cluster_of("unknown") is None
    assert catalog.clusters[0].description == "comedy, 1990s"
    assert catalog.describe(2) == "genre / sci-fi, space"
    assert catalog.title("i4") == "Star Wars (1977)"
    assert catalog.title("i1") == "i1"  # no title known: the id itself


def test_cluster_ids_must_match_their_position() -> None:
    with pytest.raises(ValueError, match="index 0 has id 5"):
        ClusterCatalog(
            clusters=(InterestCluster(5, 0, ("x",), (), 0),),
            parents=(ParentCluster(0, ("p",), (5,)),),
            item_to_cluster={},
        )


def test_version_is_a_hash_of_the_content() -> None:
    assert small_catalog().version == small_catalog().version
    assert small_catalog("comedy").version != small_catalog("romance").version


def test_save_load_round_trip_keeps_the_version(tmp_path: Path) -> None:
    catalog = small_catalog()
    path = tmp_path / "catalog.json"
    assert catalog.save(path) == catalog.version
    loaded = ClusterCatalog.load(path)
    assert loaded == catalog
    assert not path.with_suffix(".json.tmp").exists()


def test_a_tampered_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    small_catalog().save(path)
    document = json.loads(path.read_text())
    document["clusters"][0]["keywords"] = ["edited"]
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match="does not match version"):
        ClusterCatalog.load(path)


def test_a_missing_file_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="explore clusters"):
        ClusterCatalog.load(tmp_path / "none.json")


def test_another_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    small_catalog().save(path)
    document = json.loads(path.read_text())
    document["format"] = 99
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match="catalog format 99"):
        ClusterCatalog.load(path)
