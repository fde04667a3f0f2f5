"""The bootstrap on synthetic per-case arrays whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from plugin.core.stats import gini
from plugin.evaluation.bootstrap import Bootstrap, CaseOutcomes, gini_rows, planned_counts


def outcomes(
    hit: np.ndarray, planned: np.ndarray, positive: np.ndarray | None = None
) -> CaseOutcomes:
    return CaseOutcomes(
        hit=hit,
        positive_hit=hit if positive is None else hit & positive,
        in_set=hit,
        novel=np.ones(len(hit), dtype=bool),
        planned=planned,
    )


def test_the_interval_covers_the_true_rate_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(0)
    bootstrap = Bootstrap(resamples=400, seed=1)
    true_rate, covered, trials = 0.3, 0, 200
    for _ in range(trials):
        mean, (lo, hi) = bootstrap.mean(rng.random(400) < true_rate)
        assert lo <= mean <= hi
        covered += lo <= true_rate <= hi
    # Binomial(200, 0.95) is inside [178, 199] with probability > 0.999.
    assert 178 <= covered <= 199


def test_a_constant_array_has_a_point_interval() -> None:
    mean, interval = Bootstrap(resamples=50).mean(np.ones(30))
    assert mean == 1.0
    assert interval == (1.0, 1.0)


def test_identical_methods_differ_by_exactly_zero() -> None:
    hits = np.random.default_rng(2).random(1000) < 0.1
    delta, interval = Bootstrap(resamples=300).paired_difference(hits, hits.copy())
    assert delta == 0.0
    assert interval == (0.0, 0.0)


def test_pairing_resamples_both_methods_at_the_same_cases() -> None:
    # ``better`` equals ``base`` except on 10 cases it wins: every per-case difference is >= 0,
    # so a paired interval cannot go below 0. An unpaired one on rates near 0.5 would.
    base = np.random.default_rng(3).random(1000) < 0.5
    better = base.copy()
    better[np.flatnonzero(~base)[:10]] = True
    bootstrap = Bootstrap(resamples=500, seed=4)
    delta, (lo, hi) = bootstrap.paired_difference(better, base)
    assert delta == pytest.approx(0.01)
    assert 0.0 <= lo <= delta <= hi <= 0.025
    # The same seed and case count give the same index stream for every method.
    first = np.concatenate(list(bootstrap.index_blocks(1000)))
    second = np.concatenate(list(bootstrap.index_blocks(1000)))
    assert first.shape == (500, 1000)
    np.testing.assert_array_equal(first, second)


def test_a_seed_makes_a_run_reproducible() -> None:
    rng = np.random.default_rng(5)
    case = outcomes(rng.random(500) < 0.2, rng.integers(0, 10, 500))
    same = Bootstrap(resamples=200, seed=9).intervals(case, 10)
    assert same == Bootstrap(resamples=200, seed=9).intervals(case, 10)
    assert same != Bootstrap(resamples=200, seed=10).intervals(case, 10)


def test_every_metric_is_recomputed_on_each_resample() -> None:
    rng = np.random.default_rng(6)
    n_clusters = 7
    case = outcomes(rng.random(300) < 0.4, rng.integers(0, n_clusters, 300))
    bootstrap = Bootstrap(resamples=20, seed=3, block=8)
    samples = bootstrap.metric_samples(case, n_clusters)
    indices = np.concatenate(list(bootstrap.index_blocks(300)))
    for row, index in enumerate(indices):
        assert samples["hit_at_1"][row] == pytest.approx(case.hit[index].mean())
        counts = np.bincount(case.planned[index], minlength=n_clusters)
        assert samples["coverage"][row] == pytest.approx((counts > 0).sum() / n_clusters)
        assert samples["gini"][row] == pytest.approx(gini(counts.tolist()))
    assert set(samples) == {
        "hit_at_1",
        "positive_hit_at_1",
        "hit_at_n",
        "novelty_rate",
        "coverage",
        "gini",
    }
    assert all(len(values) == 20 for values in samples.values())


def test_coverage_of_a_resample_never_exceeds_the_whole_set() -> None:
    # One cluster planned once: most resamples lose it (why the docs call coverage's interval
    # a lower range); a cluster planned by every case is never lost.
    planned = np.array([0] * 499 + [1])
    case = outcomes(np.zeros(500, dtype=bool), planned)
    samples = Bootstrap(resamples=300).metric_samples(case, 2)
    assert samples["coverage"].max() == 1.0
    assert samples["coverage"].min() == 0.5
    assert np.all(samples["coverage"] <= 1.0)


def test_gini_rows_match_the_core_gini() -> None:
    counts = np.random.default_rng(7).integers(0, 20, size=(50, 9))
    counts[0] = 0
    expected = [gini(row.tolist()) for row in counts]
    np.testing.assert_allclose(gini_rows(counts), expected)
    assert gini_rows(counts)[0] == 0.0


def test_planned_counts_count_each_resample_separately() -> None:
    counts = planned_counts(np.array([[0, 0, 2], [1, 1, 1]]), 3)
    np.testing.assert_array_equal(counts, [[2, 0, 1], [0, 3, 0]])


def test_bad_settings_and_empty_cases_are_refused() -> None:
    with pytest.raises(ValueError, match="resamples"):
        Bootstrap(resamples=0)
    with pytest.raises(ValueError, match="confidence"):
        Bootstrap(confidence=1.0)
    with pytest.raises(ValueError, match="empty"):
        Bootstrap().mean(np.array([]))
    with pytest.raises(ValueError, match="same length"):
        Bootstrap().paired_difference(np.ones(3), np.ones(4))
