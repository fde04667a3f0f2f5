"""The window model: learned from novel moves over the clusters outside each window, stopped
early on validation, and refit to the same matrix for the step count it chose."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
import torch

from plugin.core.moves import NovelMove
from plugin.models.threads import single_threaded
from plugin.models.window import (
    WindowMoves,
    early_stopped_window_models,
    fit_window_model,
    next_window_l2,
)

T0 = datetime(2020, 1, 1, tzinfo=UTC)
CLUSTERS = 6


def move(window: tuple[int, ...], target: int, user: str = "u") -> NovelMove:
    return NovelMove(user, window[:2], target, True, window, T0)


def patterned(users: int) -> list[NovelMove]:
    """Users who were in 0 go to 4 and users who were in 1 go to 5, whatever else their
    window holds (2 or 3); a few go anywhere else, so no score runs off to infinity."""
    moves = []
    for i in range(users):
        other = 2 + i % 2
        moves.append(move((0, other), 4 if i % 5 else 5, f"a{i}"))
        moves.append(move((1, other), 5 if i % 5 else 4, f"b{i}"))
    return moves


def test_the_model_learns_where_users_go_from_their_whole_window() -> None:
    with single_threaded():
        (fit,) = early_stopped_window_models(
            patterned(40), patterned(10), CLUSTERS, [1e-4], max_steps=400
        )
    transitions = fit.transitions
    # The cluster users were in, not the one they shared, decides where they go.
    from_0 = transitions.scores({0, 2}, [4, 5])
    from_1 = transitions.scores({1, 2}, [4, 5])
    assert from_0[0] > from_0[1] and from_1[1] > from_1[0]
    assert fit.validation_log_loss is not None and fit.validation_log_loss < 1.0
    assert 1 <= fit.steps <= 400


def test_the_loss_leaves_the_window_out_and_skips_moves_into_it() -> None:
    moves = WindowMoves.of([move((0, 1), 2), move((0, 1), 0), move((3,), 9)], CLUSTERS)
    assert len(moves) == 1  # a target inside the window, or unknown, is no novel move
    assert moves.bag.tolist()[0][:2] == [0.5, 0.5]
    zero = torch.zeros(CLUSTERS, CLUSTERS)
    # Uniform over the 4 clusters outside the window, not over all 6.
    assert float(moves.log_loss(zero, torch.zeros(CLUSTERS))) == pytest.approx(
        torch.log(torch.tensor(4.0)).item()
    )


def test_a_decayed_bag_weighs_the_window_as_the_served_term_does() -> None:
    moves = [move((1, 0), 2), move((0, 1), 2)]
    bag = WindowMoves.of(moves, CLUSTERS, decay=0.5).bag.tolist()
    # Most recent first: 2/3 on the latest cluster, 1/3 on the one before.
    assert bag[0][:2] == pytest.approx([1 / 3, 2 / 3])
    assert bag[1][:2] == pytest.approx([2 / 3, 1 / 3])
    # The fitted model's transitions carry the decay they were trained with.
    with single_threaded():
        (fit,) = early_stopped_window_models(
            patterned(10), patterned(4), CLUSTERS, [1e-3], 20, decay=0.5
        )
        refit = fit_window_model(patterned(10), CLUSTERS, 1e-3, fit.steps, decay=0.5)
    assert fit.transitions.decay == refit.transitions.decay == 0.5
    assert fit.key == (1e-3, 0.5) and fit.as_dict()["decay"] == 0.5


def test_early_stopping_stops_where_validation_stops_improving() -> None:
    train = patterned(40)
    # Validation that disagrees with training: more steps only hurt it.
    contrary = [move(m.recent, 9 - m.target, m.user_id) for m in patterned(10)]
    with single_threaded():
        weak, strong = early_stopped_window_models(
            train, contrary, CLUSTERS, [1e-1, 1e-5], max_steps=300
        )
        agreeing = early_stopped_window_models(train, patterned(10), CLUSTERS, [1e-5], 300)[0]
    assert (weak.l2, strong.l2) == (1e-5, 1e-1)  # one model per L2, weakest first
    # Against contrary validation the weak L2 stops after the few steps that learn the shared
    # popularity of 4 and 5; against agreeing validation it runs on.
    assert weak.steps <= 20 and agreeing.steps >= 200


def test_the_refit_for_the_chosen_steps_is_the_early_stopped_model() -> None:
    train = patterned(30)
    with single_threaded():
        (chosen,) = early_stopped_window_models(train, patterned(8), CLUSTERS, [1e-3], 300)
        refit = fit_window_model(train, CLUSTERS, chosen.l2, chosen.steps)
    assert refit.steps == chosen.steps and refit.validation_log_loss is None
    np.testing.assert_allclose(
        refit.transitions.scores_by_target, chosen.transitions.scores_by_target, atol=1e-6
    )


def test_the_window_model_needs_moves_on_both_sides() -> None:
    with pytest.raises(ValueError, match="both the fitting part and validation"):
        early_stopped_window_models(patterned(4), [], CLUSTERS, [1e-4], 10)
    with pytest.raises(ValueError, match="needs novel moves to fit"):
        fit_window_model([], CLUSTERS, 1e-4, 10)


def test_the_grid_extends_a_decade_past_the_edge_the_search_chose() -> None:
    grid = [1e-5, 1e-4, 1e-3]
    assert next_window_l2(1e-5, grid, 1e-8, 1.0) == 1e-6  # not 1.0000000000000002e-06
    assert next_window_l2(1e-3, grid, 1e-8, 1.0) == 1e-2
    assert next_window_l2(1e-4, grid, 1e-8, 1.0) is None  # bracketed: the rule stops
    assert next_window_l2(None, grid, 1e-8, 1.0) is None  # no window term chosen
    # The bounds stop it, each way.
    assert next_window_l2(1e-8, [1e-8, 1e-7], 1e-8, 1.0) is None
    assert next_window_l2(1.0, [0.1, 1.0], 1e-8, 1.0) is None
    # A one-L2 grid goes weaker first, then stronger once the weaker decade is tried.
    assert next_window_l2(1e-4, [1e-4], 1e-8, 1.0) == 1e-5
    assert next_window_l2(1e-4, [1e-5, 1e-4], 1e-8, 1.0) == 1e-3
    # L2 0 has no weaker decade.
    assert next_window_l2(0.0, [0.0, 1e-4], 1e-8, 1.0) is None
