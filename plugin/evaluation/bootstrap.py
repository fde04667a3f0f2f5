"""Percentile-bootstrap confidence intervals over the held-out cases of an offline evaluation.

A case is one held-out novel engagement. Each resample draws as many cases as there are, with
replacement, and every metric is recomputed on it, coverage and gini included (they need the
planned cluster of each case, not only its hit). The interval is the central ``confidence``
share of the resampled values (the percentile bootstrap).

Every method is resampled with the *same* case indices: the index stream depends only on the
seed and the number of cases. That makes differences between methods paired, and a method
compared with itself differs by exactly 0 in every resample.

Coverage counts distinct planned clusters. A resample holds only about 63% distinct cases, so
its coverage can only be lower than or equal to the full set's; its interval therefore sits at
or below the point estimate and is best read as a lower range. The rate metrics have no such
bias.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

RATE_METRICS = ("hit_at_1", "positive_hit_at_1", "hit_at_n", "novelty_rate")
SPREAD_METRICS = ("coverage", "gini")


@dataclass(frozen=True)
class CaseOutcomes:
    """One method's per-case results: every metric of the evaluation is a function of these."""

    hit: np.ndarray  # [N] bool: the plan is the cluster the user moved to
    positive_hit: np.ndarray  # [N] bool: ... and the user engaged positively
    in_set: np.ndarray  # [N] bool: the target is among the n candidates
    novel: np.ndarray  # [N] bool: the plan is outside the user's novelty window
    planned: np.ndarray  # [N] int: the planned cluster id

    def __len__(self) -> int:
        return len(self.planned)


@dataclass(frozen=True)
class Bootstrap:
    """How to resample: the number of resamples, the interval's confidence, and the seed."""

    resamples: int = 1000
    confidence: float = 0.95
    seed: int = 7
    # Resamples drawn at a time: bounds memory at ``block x cases`` indices.
    block: int = 100

    def __post_init__(self) -> None:
        if self.resamples < 1:
            raise ValueError("resamples must be at least 1")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError("confidence must be between 0 and 1")

    def index_blocks(self, cases: int) -> Iterator[np.ndarray]:
        """The resampled case indices, ``[<= block, cases]`` at a time; the same stream on every
        call with the same seed and number of cases, which is what pairs the methods."""
        if cases < 1:
            raise ValueError("cannot resample an empty set of cases")
        rng = np.random.default_rng(self.seed)
        for start in range(0, self.resamples, self.block):
            size = min(self.block, self.resamples - start)
            yield rng.integers(0, cases, size=(size, cases), dtype=np.int64)

    def interval(self, samples: np.ndarray) -> tuple[float, float]:
        """The percentile interval of resampled values."""
        tail = (1.0 - self.confidence) / 2.0
        lo, hi = np.quantile(samples, [tail, 1.0 - tail])
        return float(lo), float(hi)

    def metric_samples(self, outcomes: CaseOutcomes, n_clusters: int) -> dict[str, np.ndarray]:
        """Every metric recomputed on each resample: ``{metric: [resamples]}``."""
        columns = {
            metric: np.asarray(values, dtype=np.float64)
            for metric, values in zip(
                RATE_METRICS,
                (outcomes.hit, outcomes.positive_hit, outcomes.in_set, outcomes.novel),
                strict=True,
            )
        }
        planned = np.asarray(outcomes.planned, dtype=np.int64)
        parts: dict[str, list[np.ndarray]] = {m: [] for m in (*RATE_METRICS, *SPREAD_METRICS)}
        for indices in self.index_blocks(len(outcomes)):
            for metric, values in columns.items():
                parts[metric].append(values[indices].mean(axis=1))
            counts = planned_counts(planned[indices], n_clusters)
            parts["coverage"].append((counts > 0).sum(axis=1) / n_clusters)
            parts["gini"].append(gini_rows(counts))
        return {metric: np.concatenate(values) for metric, values in parts.items()}

    def intervals(self, outcomes: CaseOutcomes, n_clusters: int) -> dict[str, tuple[float, float]]:
        """The interval of every metric: ``{metric: (lo, hi)}``."""
        return {
            metric: self.interval(samples)
            for metric, samples in self.metric_samples(outcomes, n_clusters).items()
        }

    def mean(self, values: np.ndarray) -> tuple[float, tuple[float, float]]:
        """The mean of a per-case array and its interval."""
        column = np.asarray(values, dtype=np.float64)
        if column.ndim != 1:
            raise ValueError("expected one value per case")
        samples = np.concatenate(
            [column[idx].mean(axis=1) for idx in self.index_blocks(len(column))]
        )
        return float(column.mean()), self.interval(samples)

    def paired_difference(
        self, first: np.ndarray, second: np.ndarray
    ) -> tuple[float, tuple[float, float]]:
        """``mean(first) - mean(second)`` of two per-case arrays over the same cases, and its
        interval with both resampled at the same case indices."""
        a = np.asarray(first, dtype=np.float64)
        b = np.asarray(second, dtype=np.float64)
        if a.shape != b.shape:
            raise ValueError("a paired difference needs two per-case arrays of the same length")
        # Resampling the per-case difference is resampling both methods at the same cases.
        return self.mean(a - b)


def planned_counts(planned: np.ndarray, n_clusters: int) -> np.ndarray:
    """``[resamples, n_clusters]`` counts of each planned cluster per resample, from the
    ``[resamples, cases]`` planned cluster ids, in one bincount."""
    rows = planned.shape[0]
    offsets = planned + n_clusters * np.arange(rows, dtype=np.int64)[:, None]
    return np.bincount(offsets.ravel(), minlength=rows * n_clusters).reshape(rows, n_clusters)


def gini_rows(counts: np.ndarray) -> np.ndarray:
    """:func:`plugin.core.stats.gini` of each row of ``[rows, bins]`` counts."""
    values = np.sort(np.asarray(counts, dtype=np.float64), axis=1)
    bins = values.shape[1]
    ranks = np.arange(1, bins + 1, dtype=np.float64)
    weighted = ((2 * ranks - bins - 1) * values).sum(axis=1)
    totals = values.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        result = weighted / (bins * totals)
    return np.where(totals > 0, result, 0.0)
