"""The pure feedback rules: which engagement answers which plan, what a refresh learns."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from plugin.core.catalog import ClusterCatalog
from plugin.core.feedback import (
    FeedbackAggregate,
    aggregate,
    aggregate_key,
    batch_feedback,
    dedupe,
    feedback_selection,
    merge_aggregates,
)
from plugin.core.moves import NovelMove, PlanOutcome
from plugin.core.sequence import UserClusterSequence, apply_batch
from plugin.models.data import feedback_labels
from plugin.settings import Settings
from tests.support.feedback import plan_for
from tests.support.feedback import record as feedback_record
from tests.support.streaming import CLUSTERS, T0, watch


def state_after(
    events: list[Any], catalog: ClusterCatalog, settings: Settings
) -> dict[str, UserClusterSequence]:
    return apply_batch(events, {}, catalog, settings.sequence, settings.data).states


def test_the_first_move_answers_the_plan(
    catalog: ClusterCatalog, feedback_settings: Settings
) -> None:
    w, s = watch, feedback_settings
    states = state_after([w(1, 1), w(2, 2)], catalog, s)  # history (2, 1)
    plans = {"u1": plan_for("u1", (2, 1), cluster=7, minute=2)}
    batch = [w(3, 2), w(4, 7, rating=1), w(5, 8)]  # a repeat, then the answer, then more
    found = batch_feedback(batch, states, plans, catalog, s.sequence, s.data)
    (answer,) = found.records  # a plan is answered once
    assert answer.event_id == "e0004" and answer.key == ("u1", "e0004")
    assert answer.history == [2, 1] and answer.planned_cluster == 7
    assert answer.engaged_cluster == 7 and answer.engaged_rank == 0
    assert answer.accepted and not answer.positive and not answer.accepted_positive
    assert answer.novel and answer.planned_novel
    assert answer.rating == 1 and answer.model_version == "t"
    assert answer.catalog_version == catalog.version
    # Both engagements outside the window are novel moves, whatever the plan.
    assert [(m.history, m.target, m.positive) for m in found.moves] == [
        ((2, 1), 7, False),
        ((7, 2), 8, True),
    ]


def test_a_move_inside_the_window_answers_without_being_novel(
    catalog: ClusterCatalog, feedback_settings: Settings
) -> None:
    w, s = watch, feedback_settings
    states = state_after([w(1, 3), w(2, 1), w(3, 2)], catalog, s)  # window (2, 1, 3)
    plans = {"u1": plan_for("u1", (2, 1), cluster=7, minute=3)}
    found = batch_feedback([w(4, 3)], states, plans, catalog, s.sequence, s.data)
    (answer,) = found.records
    assert answer.engaged_cluster == 3 and not answer.accepted and not answer.novel
    assert answer.engaged_rank is None
    assert not found.moves


def test_no_feedback_without_a_current_plan(
    catalog: ClusterCatalog, feedback_settings: Settings
) -> None:
    w, s = watch, feedback_settings
    states = state_after([w(1, 1), w(2, 2)], catalog, s)
    stale_plan = {"u1": plan_for("u1", (1,), cluster=7, minute=1)}  # history moved since
    assert not batch_feedback([w(3, 7)], states, stale_plan, catalog, s.sequence, s.data).records
    assert not batch_feedback([w(3, 7)], states, {}, catalog, s.sequence, s.data).records


def test_stale_and_unknown_events_teach_nothing(
    catalog: ClusterCatalog, feedback_settings: Settings
) -> None:
    w, s = watch, feedback_settings
    states = state_after([w(1, 1), w(2, 2), w(5, 2)], catalog, s)  # watermark at minute 5
    plans = {"u1": plan_for("u1", (2, 1), cluster=7, minute=5)}
    late = w(4, 7)  # older than the watermark: the core skips it
    unknown = w(6, 0).model_copy(update={"item_id": "nope"})
    found = batch_feedback([late, unknown], states, plans, catalog, s.sequence, s.data)
    assert not found.records and not found.moves


def test_batches_split_anywhere_give_the_same_records(
    catalog: ClusterCatalog, feedback_settings: Settings
) -> None:
    """With the plan unchanged in between, splitting a user's events changes nothing."""
    w, s = watch, feedback_settings
    states = state_after([w(1, 1), w(2, 2)], catalog, s)
    plans = {"u1": plan_for("u1", (2, 1), cluster=7, minute=2)}
    events = [w(3, 2), w(4, 2), w(5, 8), w(6, 7)]
    whole = batch_feedback(events, states, plans, catalog, s.sequence, s.data)
    first = batch_feedback(events[:2], states, plans, catalog, s.sequence, s.data)
    middle = apply_batch(events[:2], states, catalog, s.sequence, s.data).states
    second = batch_feedback(events[2:], {**states, **middle}, plans, catalog, s.sequence, s.data)
    assert whole.records == first.records + second.records
    assert whole.moves == first.moves + second.moves


def test_the_selection_keeps_what_is_new_and_of_this_catalog() -> None:
    r = feedback_record
    records = [
        r("u1", 10, (2, 1), 7, 7, positive=False),
        r("u1", 10, (2, 1), 7, 7, positive=False),  # a retried batch logged it twice
        r("u2", 11, (2, 1), 7, 3, positive=True, novel=False),  # plan ignored, inside window
        r("u3", 12, (2, 1), 7, 7, positive=True, catalog_version="old"),
        r("u4", 13, (2, 1), 7, 5, positive=True),  # an event of the dataset itself (replay)
        r("u5", 14, (4,), 6, 6, positive=True),
    ]
    selection = feedback_selection(records, "cat", {("u4", "e0013")}, weight=2.5)
    assert selection.as_dict() == {
        "records": 6,
        "unique": 5,
        "other_catalog": 1,
        "already_in_data": 1,
        "used": 3,
        "accepted_positive": 1,
        "novel_moves": 2,
    }
    assert selection.outcomes == [
        PlanOutcome((2, 1), 7, False, 2.5),
        PlanOutcome((2, 1), 7, False, 2.5),
        PlanOutcome((4,), 6, True, 2.5),
    ]
    assert [(m.user_id, m.history, m.target, m.positive) for m in selection.moves] == [
        ("u1", (2, 1), 7, False),
        ("u5", (4,), 6, True),
    ]
    assert dedupe(records) == [records[0], *records[2:]]


def test_answered_plans_move_only_their_own_pair() -> None:
    at = T0
    organic = [
        NovelMove(f"u{i}", (1,), 7 if i < 6 else 3, True, (1,), at + timedelta(minutes=i))
        for i in range(10)
    ]
    base = feedback_labels(organic, CLUSTERS, k=1, min_count=5)
    bad = [PlanOutcome((1,), 7, False, weight=2.0) for _ in range(5)]
    good = [PlanOutcome((1,), 4, True), PlanOutcome((1,), 4, False)]
    after = feedback_labels(organic, CLUSTERS, k=1, min_count=5, outcomes=bad + good)
    unseen = PlanOutcome((5, 6), 2, True)
    only_feedback = feedback_labels([], CLUSTERS, k=2, min_count=1, outcomes=[unseen])

    def label(labels: Any, cluster: int) -> float:
        return float(labels.labels[list(labels.candidates).index(cluster)])

    assert label(base, 7) == pytest.approx(0.6) and label(base, 3) == pytest.approx(0.4)
    assert label(after, 7) == pytest.approx(6 / 20)  # 10 moves + 5 plans x 2.0, no success
    assert label(after, 3) == pytest.approx(0.4)  # untouched: nobody was shown a plan of 3
    assert label(after, 4) == pytest.approx(1 / 12)
    assert label(after, 7) < label(after, 3)  # the plan of this history changes
    # A history known from feedback alone has rows for its planned candidates only.
    assert list(only_feedback.candidates) == [2] and list(only_feedback.labels) == [1.0]
    # Without outcomes the labels are exactly the dataset's.
    same = feedback_labels(organic, CLUSTERS, k=1, min_count=5, outcomes=[])
    assert (same.labels == base.labels).all() and (same.support == base.support).all()


def test_aggregates_count_per_history_and_candidate_with_newer_stamps() -> None:
    r = feedback_record
    first = aggregate([r("u1", 10, (2, 1), 7, 7, True), r("u2", 11, (2, 1), 7, 3, True)])
    key = aggregate_key((2, 1), 7)
    assert key == "2,1>7"
    row = first[key]
    assert (row.answered, row.engaged, row.engaged_positive, row.novel) == (2, 1, 1, 2)
    assert row.positive_rate == 0.5
    # A later batch with an older event time still gets a newer stamp than the stored row.
    second = aggregate([r("u3", 5, (2, 1), 7, 7, False)])
    (merged,) = merge_aggregates(first, second)
    assert (merged.answered, merged.engaged, merged.engaged_positive) == (3, 2, 1)
    assert merged.revision_us == row.revision_us + 1
    fresh_key = merge_aggregates({}, {"x": FeedbackAggregate("x", answered=1, revision_us=9)})
    assert fresh_key[0].revision_us == 9


def test_a_batch_aggregate_is_its_records_added_one_by_one() -> None:
    """Many records per key, out of time order, some without a model version: the counts are
    the sum of one-record aggregates, the stamp the newest event time, the version the last."""
    r = feedback_record
    records = [
        r(f"u{i}", 50 - 7 * (i % 5), (i % 3, 9), 7 if i % 2 else 4, 7, i % 3 == 0, novel=i % 4 > 0)
        for i in range(30)
    ]
    records = [
        x.model_copy(update={"model_version": ("", "v1", "v2")[i % 3]})
        for i, x in enumerate(records)
    ]
    expected: dict[str, FeedbackAggregate] = {}
    for record in records:
        (one,) = aggregate([record]).values()
        if one.key in expected:
            newest = max(expected[one.key].revision_us, one.revision_us)
            one = replace(expected[one.key].plus(one), revision_us=newest)
        expected[one.key] = one
    assert aggregate(records) == expected
    assert sum(row.answered for row in expected.values()) == 30 and len(expected) == 6
