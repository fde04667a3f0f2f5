"""The Gini coefficient the evaluation, the monitor and the granularity study share."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugin.core.stats import gini


def test_known_values() -> None:
    assert gini([]) == 0.0
    assert gini([0, 0, 0]) == 0.0
    assert gini([5, 5, 5, 5]) == 0.0
    # All mass in one of n bins: (n - 1) / n.
    assert gini([0, 0, 0, 8]) == pytest.approx(0.75)
    assert gini([1, 3]) == pytest.approx(0.25)


@given(st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=60))
def test_matches_the_cumulative_share_formula(counts: list[int]) -> None:
    # The formula the offline evaluation used before the three copies were merged.
    values = np.sort(np.asarray(counts, dtype=np.float64))
    if values.sum() == 0:
        expected = 0.0
    else:
        cumulative = np.cumsum(values)
        expected = float((len(values) + 1 - 2 * (cumulative / cumulative[-1]).sum()) / len(values))
    assert gini(counts) == pytest.approx(expected, abs=1e-9)
    assert gini(list(reversed(counts))) == pytest.approx(gini(counts))
