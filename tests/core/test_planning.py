"""Best-of-n: the highest score wins, ties keep the candidates' order, excluded never plan;
the window term re-orders a user's candidates by where users went from their window."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugin.core.planning import (
    HistoryRanking,
    PlanningError,
    PlanRequest,
    Selection,
    WindowTransitions,
    best_of_n,
    select,
)

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


def test_a_candidates_window_score_is_its_mean_over_the_windows_clusters() -> None:
    # matrix[from][to]: what being in `from` says about going to `to`.
    transitions = WindowTransitions.from_matrix(
        [[0.0, 2.0, -1.0], [0.5, 0.0, 3.0], [1.0, -2.0, 0.0]]
    )
    assert transitions.scores({0}, [1, 2]) == [2.0, -1.0]
    # The mean over the window's clusters; unknown clusters in the window are ignored.
    assert transitions.scores({0, 1, 99}, [2]) == [pytest.approx((-1.0 + 3.0) / 2)]
    assert transitions.scores(set(), [0, 1]) == [0.0, 0.0]
    assert transitions.scores({0}, [7]) == [0.0]  # an unknown candidate: no evidence


def test_a_decayed_window_weighs_its_clusters_by_recency() -> None:
    matrix = [[0.0, 2.0, -1.0], [0.5, 0.0, 3.0], [1.0, -2.0, 0.0]]
    recent = WindowTransitions.from_matrix(matrix, decay=0.5)
    # The window most recent first: 1 weighs 1, 0 weighs 0.5 (normalised: 2/3 and 1/3).
    assert recent.scores((1, 0), [2]) == [pytest.approx(2 / 3 * 3.0 + 1 / 3 * -1.0)]
    assert recent.scores((0, 1), [2]) == [pytest.approx(2 / 3 * -1.0 + 1 / 3 * 3.0)]
    # Unknown clusters drop out before the ages are counted, as in the training bags.
    assert recent.scores((99, 1, 0), [2]) == recent.scores((1, 0), [2])
    # Decay 1 is the uniform mean, whatever the order.
    uniform = WindowTransitions.from_matrix(matrix)
    assert uniform.scores((1, 0), [2]) == uniform.scores((0, 1), [2]) == [1.0]
    with pytest.raises(ValueError, match="window decay must be in"):
        WindowTransitions.from_matrix(matrix, decay=0.0)


def test_a_decayed_window_term_needs_the_requests_order() -> None:
    ranking = HistoryRanking((1, 2), (0, 3), (-1.0, -1.2), (0.3, 0.2))
    matrix = [[0.0] * 4 for _ in range(4)]
    matrix[1][3] = 3.0
    transitions = WindowTransitions.from_matrix(matrix, decay=0.5)
    ordered = PlanRequest("u", (1, 2), frozenset({1, 2}), AS_OF, window=(1, 2))
    # 1 is the most recent cluster: its pull towards 3 wins.
    assert (
        select(ordered, ranking, 2, "v", window_weight=1.0, transitions=transitions).cluster_id == 3
    )
    # The same window as a set only: the order is unknown, so the term refuses to guess.
    with pytest.raises(PlanningError, match="window decay < 1"):
        select(request({1, 2}), ranking, 2, "v", window_weight=1.0, transitions=transitions)


def test_a_window_matrix_must_be_square_and_finite() -> None:
    with pytest.raises(ValueError, match="must be square"):
        WindowTransitions.from_matrix([[0.0, 1.0], [1.0]])
    with pytest.raises(ValueError, match="must be finite"):
        WindowTransitions.from_matrix([[0.0, math.inf], [1.0, 0.0]])


def test_the_window_term_reorders_the_same_candidates_and_weight_zero_changes_nothing() -> None:
    ranking = HistoryRanking(
        history=(1, 2),
        order=(5, 3, 4, 6, 0),
        novelty_log_probs=(-1.0, -1.2, -1.5, -2.0, -2.5),
        alignment_scores=(0.3, 0.2, 0.1, 0.0, 5.0),
    )
    # Users who were in cluster 2 mostly went to 4.
    matrix = [[0.0] * 7 for _ in range(7)]
    matrix[2][4] = 3.0
    matrix[1][3] = 3.0
    transitions = WindowTransitions.from_matrix(matrix)
    user = request({1, 2, 3})  # the window: 3 is a candidate of the ranking, never planned
    plain = select(user, ranking, 3, "v", weight=1.0)
    assert plain.candidates == (5, 4, 6)
    same = select(user, ranking, 3, "v", weight=1.0, window_weight=0.0, transitions=transitions)
    assert same == plain
    windowed = select(user, ranking, 3, "v", weight=1.0, window_weight=1.0, transitions=transitions)
    assert windowed.cluster_id == 4
    assert set(windowed.candidates) == set(plain.candidates)  # 0 (6th novel) never enters
    terms = transitions.scores(user.excluded, [5, 4, 6])
    assert windowed.scores == tuple(
        sorted((a + t for a, t in zip((0.3, 0.1, 0.0), terms, strict=True)), reverse=True)
    )


def test_a_selection_with_a_window_weight_needs_its_transitions() -> None:
    with pytest.raises(ValueError, match="window_weight > 0 needs"):
        Selection(window_weight=0.5)
    with pytest.raises(ValueError, match="window_weight must be finite and >= 0"):
        Selection(window_weight=-1.0)
    transitions = WindowTransitions.from_matrix([[0.0, 1.0], [1.0, 0.0]])
    chosen = Selection(16, 1.0, 0.25, 0.5, transitions)
    assert chosen.scalars() == {"n": 16, "temperature": 1.0, "weight": 0.25, "window_weight": 0.5}
