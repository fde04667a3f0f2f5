"""Fitting on a real dataset, the quality gate, and the evaluation report's shape and rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from plugin.data.workspace import Workspace, open_workspace
from plugin.evaluation.offline import N_SCALING, gini, plot, run_evaluation
from plugin.models.fit import matching_version, train_version
from plugin.models.planner import best_of_n_planner
from plugin.models.sequential import SequentialSettings
from plugin.settings import Settings, load_settings


def quick_settings(tmp_path: Path, **models: object) -> Settings:
    return load_settings(
        var_dir=tmp_path,
        # 48 leaves given: the granularity rule (which chooses 48 here) has its own tests.
        clusters={"leaf_clusters": 48},
        # A small grid: the evaluation runs the search as `explore train` does, and the
        # search itself is under test in tests/models/test_selection.py.
        selection={
            "candidates": [1, 4],
            "temperatures": [1.5],
            "weights": [0.0, 1.0],
            "prior_strengths": [0.0],
            "seeds": 1,
            "natural_curation": False,
            # One window model, briefly fit: the early-stopped fits of three L2s were about
            # 22 s of this module's evaluation (tests/models/test_window.py tests the rule).
            "window_l2s": [1e-4],
            "window_max_steps": 100,
            # No decade added past it and no recency decay: each would be one more fit
            # (the edge rule and the decays are under test in test_selection.py).
            "window_l2_floor": 1e-4,
            "window_l2_ceiling": 1e-4,
            "window_decays": [1.0],
        },
        models={
            "repository": tmp_path / "model_repository",
            "novelty_steps": 120,
            "alignment_steps": 120,
            "text_init": False,
            # The id alignment: the LM features have their own tests (test_llm.py), and
            # loading the base language model here would cost about 30 s.
            "alignment_features": "id",
            **models,
        },
    )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return open_workspace(quick_settings(tmp_path_factory.mktemp("ws")))


def test_gini_of_plan_spread() -> None:
    assert gini([5, 5, 5, 5]) == pytest.approx(0.0)
    assert gini([0, 0, 0, 20]) == pytest.approx(0.75)
    assert gini([0, 0]) == 0.0


@pytest.mark.slow
def test_train_writes_a_gated_version_that_plans(workspace: Workspace, tmp_path: Path) -> None:
    settings = quick_settings(tmp_path)
    version, fitted = train_version(workspace, settings)
    assert version == 1
    manifest = fitted.manifest
    assert manifest["catalog_version"] == workspace.catalog.version
    assert manifest["data_hash"] == workspace.train.fingerprint()
    assert set(manifest["gate"]) >= {"passed", "validity", "recall_at_n"}
    assert 0.0 <= manifest["gate"]["validity"] <= 1.0
    assert (settings.models.repository / "novelty" / "1" / "weights.pt").exists()
    assert (settings.models.repository / "alignment" / "1" / "manifest.json").exists()
    if fitted.gate.passed:
        assert matching_version(workspace, settings) == 1
    planner = best_of_n_planner(settings, workspace.catalog, version)
    assert planner.model_version.startswith("best-of-n-v1-")


@pytest.mark.slow
def test_an_impossible_gate_fails_with_reasons(workspace: Workspace, tmp_path: Path) -> None:
    settings = quick_settings(tmp_path, gate_min_validity=1.0, gate_min_recall=1.0)
    _, fitted = train_version(workspace, settings)
    assert not fitted.gate.passed
    assert any("recall@" in reason for reason in fitted.gate.reasons())
    assert matching_version(workspace, settings) is None


@pytest.mark.slow
def test_evaluation_report_has_the_agreed_shape(workspace: Workspace, tmp_path: Path) -> None:
    settings = quick_settings(tmp_path, objective="pairwise")
    report = run_evaluation(workspace, settings, sequential=SequentialSettings(epochs=2))
    assert set(report) == {"methods", "n_scaling", "paired", "dataset", "seed"}
    assert set(report["methods"]) == {
        "best_of_n",
        "novelty_greedy",
        "novelty_sample",
        "transition_frequency",
        "popularity",
        "random",
        "sasrec",
    }
    for metrics in report["methods"].values():
        assert metrics["novelty_rate"] == 1.0  # every method plans outside the window
        assert 0.0 <= metrics["positive_hit_at_1"] <= metrics["hit_at_1"] <= metrics["hit_at_n"]
        lo, hi = metrics["positive_hit_at_1_ci"]
        assert lo <= metrics["positive_hit_at_1"] <= hi
    assert set(report["paired"]) == {
        f"best_of_n - {name}" for name in report["methods"] if name != "best_of_n"
    }
    assert [row["n"] for row in report["n_scaling"]] == list(N_SCALING)
    # best-of-n at n=1 is exactly one novelty sample
    assert report["n_scaling"][0]["hit_at_1"] == pytest.approx(
        report["methods"]["novelty_sample"]["hit_at_1"]
    )
    assert report["dataset"]["cases"] > 1000
    assert report["dataset"]["models"]["objective"] == "pairwise"
    plot(report, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 10_000
