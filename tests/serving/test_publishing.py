"""Publishing on disk: the quality gate, the model.py shells, the pointer and its rollback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from plugin.models.repository import TEMPLATES, ModelRepository, PublishError
from plugin.serving.control import publish, rollback
from plugin.settings import load_settings
from tests.support.serving import CATALOG, CLUSTERS, write_version


def test_a_version_that_failed_its_gate_is_never_published(tmp_path: Path) -> None:
    write_version(tmp_path, seed=1, passed=False)
    repository = ModelRepository(tmp_path)
    with pytest.raises(PublishError, match=r"version 1 failed its quality gate \(recall@16"):
        publish(repository, None, 1)
    with pytest.raises(PublishError, match="not a complete trained version"):
        publish(repository, None, 7)
    assert repository.published() is None
    assert not (tmp_path / "planner").exists()


def test_prepare_serving_places_shells_configs_and_the_planner_manifest(tmp_path: Path) -> None:
    write_version(tmp_path, seed=1)
    ModelRepository(tmp_path).prepare_serving(1)
    for model in ("novelty", "alignment", "planner"):
        shell = (tmp_path / model / "1" / "model.py").read_text()
        assert shell == (TEMPLATES / model / "model.py").read_text()
        assert "TritonPythonModel" in shell
        config = (tmp_path / model / "config.pbtxt").read_text()
        assert config == (TEMPLATES / model / "config.pbtxt").read_text()
    manifest = json.loads((tmp_path / "planner" / "1" / "manifest.json").read_text())
    assert manifest["label"] == f"best-of-n-v1-{CATALOG[:8]}"
    assert (manifest["n_clusters"], manifest["history_length"]) == (CLUSTERS, 2)
    assert (manifest["novelty_version"], manifest["alignment_version"]) == (1, 1)


def test_the_pointer_keeps_earlier_versions_for_rollback(tmp_path: Path) -> None:
    for seed in (1, 2, 3):
        write_version(tmp_path, seed=seed)
    repository = ModelRepository(tmp_path)
    outcome = publish(repository, None)  # the newest by default
    assert outcome.report is None and "Triton is not running" in outcome.describe("published")
    assert (outcome.pointer.version, outcome.pointer.previous) == (3, ())
    publish(repository, None, 1)
    publish(repository, None, 2)
    publish(repository, None, 2)  # republishing changes nothing
    assert (repository.published().version, repository.published().previous) == (2, (1, 3))  # type: ignore[union-attr]
    assert rollback(repository, None).pointer.version == 1
    assert rollback(repository, None).pointer.version == 3
    with pytest.raises(PublishError, match="nothing to roll back to"):
        rollback(repository, None)
    pointer = repository.published()
    assert pointer is not None and pointer.version == 3
    assert [h["action"] for h in pointer.history] == ["publish"] * 4 + ["rollback"] * 2


def test_the_in_process_planner_serves_the_published_version(tmp_path: Path) -> None:
    from plugin.models.planner import best_of_n_planner

    root = tmp_path / "model_repository"
    write_version(root, seed=1)
    write_version(root, seed=2)
    settings = load_settings(var_dir=tmp_path / "var", models={"repository": root})

    class Catalog:
        version = CATALOG

    catalog: Any = Catalog()
    assert best_of_n_planner(settings, catalog).model_version.startswith("best-of-n-v2-")
    publish(ModelRepository(root), None, 1)
    assert best_of_n_planner(settings, catalog).model_version.startswith("best-of-n-v1-")
    assert best_of_n_planner(settings, catalog, 2).model_version.startswith("best-of-n-v2-")
    catalog.version = "another"
    with pytest.raises(ValueError, match="explore models publish"):
        best_of_n_planner(settings, catalog)
