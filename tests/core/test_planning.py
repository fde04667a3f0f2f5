"""Best-of-n: the highest score wins, ties keep the candidates' order, excluded never plan."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugin.core.planning import PlanningError, PlanRequest, best_of_n

AS_OF = datetime(2026, 12, 6, tzinfo=UTC)


def request(excluded: set[int]) -> PlanRequest:
    return PlanRequest(user_id="u", history=(1, 2), excluded=frozenset(excluded), as_of=AS_OF)


def test_highest_score_first_and_ties_in_candidate_order() -> None:
    plan = best_of_n(request({5}), [3, 5, 4, 7, 8], [0.5, 9.0, 0.5, -1.0, 0.7], "v")
    assert plan.cluster_id == 8
    assert plan.candidates == (8, 3, 4, 7)
    assert plan.scores == (0.7, 0.5, 0.5, -1.0)
    with pytest.raises(PlanningError, match="user u: no novel candidate"):
        best_of_n(request({5}), [5], [1.0], "v")


@given(
    st.lists(
        st.tuples(st.integers(0, 30), st.sampled_from([-1.0, -0.0, 0.0, 0.25, 0.5, 2.0])),
        min_size=1,
        max_size=24,
    ),
    st.sets(st.integers(0, 30), max_size=10),
)
def test_the_order_is_score_then_position(
    pairs: list[tuple[int, float]], excluded: set[int]
) -> None:
    # The reference: a sort by (negated score, position), ties on purpose (few scores).
    expected = sorted(
        (-score, position, cluster)
        for position, (cluster, score) in enumerate(pairs)
        if cluster not in excluded
    )
    candidates, scores = [c for c, _ in pairs], [s for _, s in pairs]
    if not expected:
        with pytest.raises(PlanningError):
            best_of_n(request(excluded), candidates, scores, "v")
        return
    plan = best_of_n(request(excluded), candidates, scores, "v")
    assert plan.candidates == tuple(cluster for _, _, cluster in expected)
    assert plan.scores == tuple(-negated for negated, _, _ in expected)
    assert plan.cluster_id == plan.candidates[0]
