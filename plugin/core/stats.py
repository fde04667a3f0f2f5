"""Small statistics the evaluation, the monitor and the catalog study share."""

from __future__ import annotations

from collections.abc import Iterable


def gini(counts: Iterable[float]) -> float:
    """Gini coefficient of how counts spread over bins (0 = even, 1 = all in one bin)."""
    values = sorted(float(v) for v in counts)
    total = sum(values)
    if not values or total == 0:
        return 0.0
    n = len(values)
    weighted = sum((2 * rank - n - 1) * value for rank, value in enumerate(values, start=1))
    return weighted / (n * total)
