"""Model selection: the mixed best-of-n score, the Beta-prior label rule, the validation split,
and the vectorised grid scorer against the planner it stands for."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import torch

from plugin.core.moves import NovelMove
from plugin.core.planning import (
    HistoryRanking,
    PlanRequest,
    Selection,
    WindowTransitions,
    select,
    selection_score,
)
from plugin.data.synthetic import SyntheticSpec, write_synthetic
from plugin.data.workspace import open_workspace
from plugin.models.alignment import AlignmentConfig, AlignmentModel
from plugin.models.data import feedback_labels, natural_novelty_data, novelty_data
from plugin.models.fit import training_data
from plugin.models.novelty import NoveltyConfig, NoveltyModel
from plugin.models.planner import BestOfNPlanner, histories_tensor
from plugin.models.repository import chosen_selection, manifest_transitions, version_selection
from plugin.models.selection import ValidationCases, fit_selected, score_grid, validation_split
from plugin.models.threads import single_threaded
from plugin.models.window import fit_window_model
from plugin.settings import load_settings

T0 = datetime(2020, 1, 1, tzinfo=UTC)
CLUSTERS = 12


def test_selection_score_ends_are_alignment_and_novelty_and_middle_mixes_them() -> None:
    assert selection_score(2.5, -3.0, 1.0) == 2.5
    assert selection_score(2.5, -3.0, 0.0) == -3.0
    half = selection_score(0.0, -2.0, 0.5)
    assert half == pytest.approx(0.5 * math.log(0.5) + 0.5 * -2.0)
    assert selection_score(-math.inf, -1.0, 0.5) == -math.inf
    assert selection_score(-800.0, -1.0, 0.5) == pytest.approx(0.5 * -800.0 - 0.5)  # no overflow


def test_select_with_weight_zero_follows_the_novelty_model() -> None:
    ranking = HistoryRanking(
        history=(0,),
        order=(1, 2, 3),
        novelty_log_probs=(-3.0, -0.5, -2.0),
        alignment_scores=(4.0, -1.0, 0.0),
    )
    request = PlanRequest("u", (0,), frozenset({0}), T0)
    assert select(request, ranking, 3, "v").cluster_id == 1  # alignment alone
    assert select(request, ranking, 3, "v", weight=0.0).cluster_id == 2  # novelty alone
    with pytest.raises(ValueError, match="weight"):
        Selection(n=4, temperature=1.0, weight=1.5)


def test_select_at_weight_one_equals_the_general_mixture_path() -> None:
    # Weight 1 takes a path without a score call per candidate; a bonus of zero for every
    # cluster forces the general loop, which must pick and order the same plan.
    rng = np.random.default_rng(15)
    for trial in range(200):
        order = tuple(int(c) for c in rng.permutation(40)[:30])
        # Ties on purpose: repeated scores must keep the earlier candidate first.
        aligned = tuple(float(x) for x in rng.integers(-3, 4, size=30) / 2)
        ranking = HistoryRanking(
            history=(order[0],),
            order=order,
            novelty_log_probs=tuple(float(x) for x in -rng.random(30)),
            alignment_scores=aligned,
        )
        excluded = frozenset(int(c) for c in rng.choice(order, size=trial % 12, replace=False))
        request = PlanRequest("u", (order[0],), excluded, T0)
        n = 1 + trial % 20
        zero = {cluster: 0.0 for cluster in order}
        assert select(request, ranking, n, "v") == select(request, ranking, n, "v", bonus=zero)


def test_version_selection_prefers_the_manifest_only_when_applied() -> None:
    fallback = Selection(16, 1.5, 1.0)
    manifest = {"selection": {"chosen": {"n": 8, "temperature": 3.0, "weight": 0.25}}}
    assert chosen_selection(manifest) == Selection(8, 3.0, 0.25)
    assert version_selection(manifest, fallback, apply=True) == Selection(8, 3.0, 0.25)
    assert version_selection(manifest, fallback, apply=False) == fallback
    assert version_selection({}, fallback, apply=True) == fallback


def move(
    user: str, history: tuple[int, ...], target: int, positive: bool, minute: int = 0
) -> NovelMove:
    return NovelMove(user, history, target, positive, history, T0 + timedelta(minutes=minute))


def test_beta_prior_keeps_thin_histories_and_shrinks_them_towards_the_candidate_rate() -> None:
    moves = [move(f"u{i}", (0, 1), 2, True) for i in range(6)]
    moves += [move(f"u{i}", (0, 1), 3, False) for i in range(6, 8)]
    moves.append(move("thin", (4, 5), 3, True))  # one move: dropped by the hard cut
    hard = feedback_labels(moves, 6, 2, min_count=5)
    assert {tuple(h) for h in hard.histories} == {(0, 1)}
    soft = feedback_labels(moves, 6, 2, min_count=5, prior_strength=4.0)
    rows = {
        (tuple(h), int(c)): float(v)
        for h, c, v in zip(soft.histories, soft.candidates, soft.labels, strict=True)
    }
    # prior mean of candidate 2: 6 positive moves into it out of 9 moves
    assert rows[((0, 1), 2)] == pytest.approx((6 + 4 * 6 / 9) / (8 + 4))
    assert rows[((4, 5), 3)] == pytest.approx((1 + 4 * 1 / 9) / (1 + 4))
    assert rows[((4, 5), 0)] == pytest.approx(0.0)  # no positive move into 0 anywhere
    # more evidence, less shrinkage: the thin history is pulled further from its raw share 1.0
    assert 1.0 - rows[((4, 5), 3)] > 6 / 8 - rows[((0, 1), 2)]


def test_natural_curation_keeps_every_move_at_its_frequency() -> None:
    moves = [move(f"u{i}", (0, 1), 2, True) for i in range(3)]
    moves += [move("u0", (0, 1), 2, True), move("u9", (0, 1), 3, False)]
    natural = natural_novelty_data(moves, 2)
    pairs: dict[int, tuple[float, int]] = {}
    for t, w, u in zip(natural.targets, natural.weights, natural.users, strict=True):
        total, _ = pairs.get(int(t), (0.0, 0))
        pairs[int(t)] = (total + float(w), int(u))
    assert len(natural) == len(moves)  # one row per move, each with its own window
    assert pairs == {2: (pytest.approx(0.8), 3), 3: (pytest.approx(0.2), 1)}
    balanced = novelty_data(moves, 2)
    assert set(balanced.targets) == {2}  # the paper's curation keeps positive moves only


def test_validation_split_is_the_last_part_by_time() -> None:
    moves = [move(f"u{i}", (0,), 1 + i % 3, i % 2 == 0, minute=i) for i in range(20)]
    fit, validation = validation_split(moves, 0.25)
    assert len(validation) == 5 and len(fit) == 15
    assert max(m.at for m in fit if m.at) < min(m.at for m in validation if m.at)


def models() -> tuple[NoveltyModel, AlignmentModel]:
    torch.manual_seed(3)
    novelty = NoveltyModel(
        NoveltyConfig(
            n_clusters=CLUSTERS, n_parents=3, parent_of=tuple(c % 3 for c in range(CLUSTERS))
        )
    )
    return novelty.eval(), AlignmentModel(AlignmentConfig(n_clusters=CLUSTERS)).eval()


@pytest.mark.parametrize(
    ("n", "temperature", "weight", "window_weight", "decay"),
    [
        (1, 1.0, 1.0, 0.0, 1.0),
        (3, 0.75, 0.5, 0.0, 1.0),
        (5, 2.0, 0.0, 0.0, 1.0),
        (5, 1.0, 0.5, 1.0, 1.0),
        (4, 1.5, 1.0, 2.0, 1.0),
        (5, 1.0, 0.5, 1.0, 0.5),  # a window weighed by recency
    ],
)
def test_grid_scorer_agrees_with_the_planner_it_stands_for(
    n: int, temperature: float, weight: float, window_weight: float, decay: float
) -> None:
    rng = np.random.default_rng(5)
    cases = []
    for i in range(60):
        a, b = (int(x) for x in rng.choice(CLUSTERS, 2, replace=False))
        window = tuple(dict.fromkeys((a, b, *(int(x) for x in rng.choice(CLUSTERS, 3)))))
        target = int(rng.choice([c for c in range(CLUSTERS) if c not in window]))
        cases.append(NovelMove(f"u{i}", (a, b), target, bool(i % 3), window, T0))
    novelty, alignment = models()
    # A skewed window model, so that the window term re-orders candidates.
    transitions = WindowTransitions.from_matrix(
        (rng.normal(0.0, 1.0, (CLUSTERS, CLUSTERS)) * rng.integers(0, 3, (CLUSTERS, 1))).tolist(),
        decay,
    )
    planner = BestOfNPlanner(
        novelty,
        alignment,
        n,
        temperature,
        seed=7,
        model_version="v",
        weight=weight,
        window_weight=window_weight,
        transitions=transitions,
    )
    # Windows most recent first, as every selecting path builds them.
    requests = [PlanRequest(m.user_id, m.history, frozenset(m.recent), T0, m.recent) for m in cases]
    plans = planner.plan(requests)
    expected = np.mean(
        [p.cluster_id == m.target and m.positive for p, m in zip(plans, cases, strict=True)]
    )
    expected_hit = np.mean([p.cluster_id == m.target for p, m in zip(plans, cases, strict=True)])
    if window_weight:  # the window term changes plans here, so the grid must follow it
        plain = BestOfNPlanner(novelty, alignment, n, temperature, 7, "v", weight=weight)
        assert [p.cluster_id for p in plans] != [p.cluster_id for p in plain.plan(requests)]
    if decay < 1.0:  # and the window's order changes them again
        uniform = WindowTransitions(transitions.scores_by_target)
        mean = BestOfNPlanner(
            novelty, alignment, n, temperature, 7, "v", weight, window_weight, uniform
        )
        assert [p.cluster_id for p in plans] != [p.cluster_id for p in mean.plan(requests)]

    # Two window models in the cases: the grid scores each under its own (L2, decay).
    other = WindowTransitions.from_matrix(np.zeros((CLUSTERS, CLUSTERS)).tolist())
    model, zero = (1e-4, decay), (1e-3, 1.0)
    grid_cases = ValidationCases.of(cases, CLUSTERS, {model: transitions, zero: other})
    with torch.inference_mode():
        histories = histories_tensor(grid_cases.histories, 2)
        log_probs = novelty.cluster_log_probs(histories).numpy()
        every = torch.arange(CLUSTERS).expand(len(histories), CLUSTERS)
        scores = alignment(histories, every).numpy()
    grid = score_grid(
        grid_cases, log_probs, scores, temperature, [7], [n], [weight], [window_weight]
    )
    positive, hit = grid[(n, weight, window_weight, model if window_weight else None)]
    assert hit == pytest.approx(expected_hit)
    assert positive == pytest.approx(expected)
    assert hit > 0  # the check compares something
    if window_weight:  # the all-zero model plans as no window term at all
        assert (
            grid[(n, weight, window_weight, zero)]
            == score_grid(grid_cases, log_probs, scores, temperature, [7], [n], [weight], [0.0])[
                (n, weight, 0.0, None)
            ]
        )


def test_fit_selected_chooses_the_best_validation_point_and_records_it(tmp_path: Path) -> None:
    spec = SyntheticSpec(
        aligned=True, users=80, topics=12, items_per_topic=6, moves_per_user=16, successors=3
    )
    interactions, items = write_synthetic(spec, tmp_path / "data")
    settings = load_settings(
        var_dir=tmp_path / "var",
        data={"interactions": interactions, "items": items},
        clusters={"leaf_clusters": 8, "parent_clusters": 2},
        # The id alignment: the LM features have their own tests (test_llm.py).
        models={
            "novelty_steps": 30,
            "alignment_steps": 30,
            "repository": tmp_path / "repo",
            "alignment_features": "id",
        },
        selection={
            "candidates": [1, 4, 64],  # 64 exceeds the 8 clusters: not scored
            "temperatures": [1.0, 2.0],
            "weights": [0.0, 1.0],
            "window_weights": [0.0, 1.0],
            "window_l2s": [1e-4, 1e-3],
            # The edge rule may add 1e-5 or 1e-2, no further.
            "window_l2_floor": 1e-5,
            "window_l2_ceiling": 1e-2,
            "prior_strengths": [0.0, 8.0],
            "seeds": 1,
        },
    )
    workspace = open_workspace(settings)
    # One torch thread: on two shared cores two threads measured 10-30x slower for this size.
    with single_threaded():
        fitted = fit_selected(workspace, settings)
    selection = fitted.manifest["selection"]
    chosen = selection["chosen"]
    # One window model per L2 of the grid and of the decades the edge rule added, each
    # stopped early on the validation log-loss.
    window_models = selection["validation"]["window_models"]
    tried = [m["l2"] for m in window_models if m["decay"] == 1.0]
    added = selection["grid"]["window_l2s_added"]
    assert tried == sorted([1e-4, 1e-3, *added]) and set(added) <= {1e-5, 1e-2}
    assert all(1 <= m["steps"] <= settings.selection.window_max_steps for m in window_models)
    # The edge rule: a chosen L2 has a tried neighbour each way, or sits at a bound.
    if chosen["window_l2"] is not None:
        assert chosen["window_l2"] > min(tried) or chosen["window_l2"] == 1e-5
        assert chosen["window_l2"] < max(tried) or chosen["window_l2"] == 1e-2
    # Then, at the chosen L2, one model per recency decay below 1 (none without the term).
    decayed = [(m["l2"], m["decay"]) for m in window_models if m["decay"] < 1.0]
    if chosen["window_l2"] is not None:
        assert decayed == [(chosen["window_l2"], d) for d in (0.9, 0.8, 0.7)]
    else:
        assert decayed == []
    # curations x priors x temperatures x n x weights x (no window term, or weight 1 with
    # each window model)
    assert selection["grid"]["points"] == 2 * 2 * 2 * 2 * 2 * (1 + len(window_models))
    top = selection["validation"]["top"]
    assert top[0] == chosen
    assert all(row["positive_hit_at_1"] <= chosen["positive_hit_at_1"] for row in top)
    assert set(selection["validation"]["best_by_n"]) == {1, 4}
    plain = selection["validation"]["best_without_window"]
    assert plain["window_weight"] == 0.0
    assert plain["positive_hit_at_1"] <= chosen["positive_hit_at_1"]
    assert fitted.gate.n == chosen["n"]  # refit and gated at the chosen values
    window_weight = chosen["window_weight"]
    assert chosen_selection(fitted.manifest) == Selection(
        chosen["n"],
        chosen["temperature"],
        chosen["weight"],
        window_weight,
        manifest_transitions(fitted.manifest) if window_weight else None,
    )
    # The version serves the chosen L2's model refit on the whole training period for the
    # step count validation chose (none without the term).
    record = fitted.manifest["window_transitions"]
    if window_weight:
        chosen_model = next(
            m
            for m in window_models
            if (m["l2"], m["decay"]) == (chosen["window_l2"], chosen["window_decay"])
        )
        assert (record["l2"], record["decay"], record["steps"]) == (
            chosen_model["l2"],
            chosen_model["decay"],
            chosen_model["steps"],
        )
        train_moves = training_data(workspace, settings).train_moves
        with single_threaded():
            refit = fit_window_model(
                train_moves, len(workspace.catalog), record["l2"], record["steps"], record["decay"]
            )
        np.testing.assert_allclose(
            manifest_transitions(fitted.manifest).scores_by_target,
            refit.transitions.scores_by_target,
            atol=2e-6,  # the manifest keeps 6 decimals
        )
    else:
        assert record is None and chosen["window_l2"] is None
    # A spent budget skips the label rules after the first.
    hurried = settings.model_copy(
        update={"selection": settings.selection.model_copy(update={"budget_s": 1e-6})}
    )
    with single_threaded():
        quick = fit_selected(workspace, hurried).manifest["selection"]
    assert quick["grid"]["skipped_novelty_curations"] == ["natural"]
    assert quick["grid"]["skipped_prior_strengths"] == [8.0]
    assert quick["chosen"]["label_rule"] == "min_count"
    assert quick["chosen"]["novelty_curation"] == "balanced"
