"""The offline evaluation's intervals, paired differences and SASRec baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from plugin.core.moves import NovelMove
from plugin.data.workspace import open_workspace
from plugin.evaluation.bootstrap import Bootstrap
from plugin.evaluation.offline import (
    METRICS,
    MethodOutput,
    case_outcomes,
    run_evaluation,
    sasrec_method,
    score,
    with_intervals,
)
from plugin.models.sequential import SasRecModel, SequentialSettings
from plugin.settings import load_settings
from tests.support.untrained import write_untrained_version

RATES = ("hit_at_1", "positive_hit_at_1", "hit_at_n", "novelty_rate")


def synthetic_cases(count: int, n_clusters: int, seed: int) -> list[NovelMove]:
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(count):
        recent = tuple(int(c) for c in rng.choice(n_clusters, size=3, replace=False))
        target = int(rng.choice([c for c in range(n_clusters) if c not in recent]))
        sequence = (*recent, *(int(c) for c in rng.integers(n_clusters, size=4)))
        cases.append(NovelMove(f"u{i}", recent[:2], target, bool(i % 3), recent, None, sequence))
    return cases


def test_case_outcomes_are_the_arrays_behind_score() -> None:
    cases = synthetic_cases(200, 8, seed=1)
    rng = np.random.default_rng(2)
    candidates = [[int(c) for c in rng.permutation(8)[:3]] for _ in cases]
    output = MethodOutput([row[0] for row in candidates], candidates)
    metrics = score(cases, output, 8)
    outcomes = case_outcomes(cases, output)
    assert metrics["hit_at_1"] == pytest.approx(outcomes.hit.mean())
    assert metrics["positive_hit_at_1"] == pytest.approx(outcomes.positive_hit.mean())
    assert metrics["hit_at_n"] == pytest.approx(outcomes.in_set.mean())
    assert metrics["novelty_rate"] == pytest.approx(outcomes.novel.mean())
    assert metrics["coverage"] == len(set(outcomes.planned)) / 8
    merged = with_intervals(metrics, Bootstrap(resamples=100).intervals(outcomes, 8))
    assert list(merged) == [key for m in METRICS for key in (m, f"{m}_ci")]


def test_the_sasrec_method_plans_outside_each_window() -> None:
    cases = synthetic_cases(50, 10, seed=3)
    model = SasRecModel(10, SequentialSettings(max_length=8, d_model=16)).eval()
    output = sasrec_method(model, 4)(cases)
    for planned, row, case in zip(output.planned, output.candidates, cases, strict=True):
        assert planned == row[0] and len(row) == 4
        assert not set(row) & set(case.recent)


@pytest.mark.slow
def test_every_metric_has_an_interval_that_brackets_it(tmp_path: Path) -> None:
    # 48 leaves given: the granularity rule (which chooses 48 here) has its own tests.
    settings = load_settings(
        var_dir=tmp_path,
        models={"repository": tmp_path / "models"},
        clusters={"leaf_clusters": 48},
    )
    workspace = open_workspace(settings)
    version = write_untrained_version(
        settings,
        workspace,
        seed=3,
        publish=False,
        manifest={"objective": "pointwise", "text_init": False, "seconds": {}},
    )
    report = run_evaluation(
        workspace,
        settings,
        version=version,
        sequential=SequentialSettings(epochs=1),
        bootstrap=Bootstrap(resamples=200, seed=5),
    )
    assert set(report) == {"methods", "n_scaling", "paired", "dataset", "seed"}
    methods = report["methods"]
    assert "sasrec" in methods and len(methods) == 7
    for name, metrics in methods.items():
        assert set(metrics) == {key for m in METRICS for key in (m, f"{m}_ci")}, name
        for metric in METRICS:
            lo, hi = metrics[f"{metric}_ci"]
            assert 0.0 <= lo <= hi <= 1.0, (name, metric)
        for metric in RATES:
            lo, hi = metrics[f"{metric}_ci"]
            assert lo <= metrics[metric] <= hi, (name, metric)
        # a resample can only lose planned clusters (docs/MODELS.md)
        assert metrics["coverage_ci"][1] <= metrics["coverage"]
        assert metrics["novelty_rate"] == 1.0
    assert set(report["paired"]) == {
        f"best_of_n - {name}" for name in methods if name != "best_of_n"
    }
    for pair, row in report["paired"].items():
        other = methods[pair.removeprefix("best_of_n - ")]
        delta = methods["best_of_n"]["positive_hit_at_1"] - other["positive_hit_at_1"]
        assert row["positive_hit_at_1"] == pytest.approx(delta)
        lo, hi = row["ci"]
        assert lo <= row["positive_hit_at_1"] <= hi
    for row in report["n_scaling"]:
        lo, hi = row["positive_hit_at_1_ci"]
        assert lo <= row["positive_hit_at_1"] <= hi
    assert report["dataset"]["bootstrap"]["resamples"] == 200
    assert report["dataset"]["baselines"]["sasrec"]["epochs"] == 1
