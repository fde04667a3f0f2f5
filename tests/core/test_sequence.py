"""The processing core's rules: order, idempotence, late events, the window, the replan decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from plugin.core.catalog import ClusterCatalog, InterestCluster, ParentCluster
from plugin.core.events import WatchEvent
from plugin.core.planning import ExplorationPlan
from plugin.core.sequence import (
    UserClusterSequence,
    apply_batch,
    confirm_plans,
    push_cluster,
)
from plugin.settings import DataSettings, SequenceSettings

T0 = datetime(1998, 1, 1, tzinfo=UTC)
# Item "i<c>" lives in cluster c, for c in 0..9.
CATALOG = ClusterCatalog(
    clusters=tuple(InterestCluster(c, 0, (f"k{c}",), (f"i{c}",), 1) for c in range(10)),
    parents=(ParentCluster(0, ("all",), tuple(range(10))),),
    item_to_cluster={f"i{c}": c for c in range(10)},
)
ENGAGEMENT = DataSettings()
RULES = SequenceSettings(history_length=2, novelty_window=4)


def event(
    n: int, cluster: int, user: str = "u1", minutes: int | None = None, rating: float = 5
) -> WatchEvent:
    return WatchEvent(
        event_id=f"e{n:04d}",
        user_id=user,
        item_id=f"i{cluster}",
        event_time=T0 + timedelta(minutes=n if minutes is None else minutes),
        rating=rating,
    )


def run(
    events: list[WatchEvent],
    states: dict[str, UserClusterSequence] | None = None,
    rules: SequenceSettings = RULES,
) -> tuple[dict[str, UserClusterSequence], list[str]]:
    result = apply_batch(events, states or {}, CATALOG, rules, ENGAGEMENT)
    merged = {**(states or {}), **result.states}
    return merged, [r.user_id for r in result.replans]


def test_push_cluster_keeps_recent_unique_clusters_bounded() -> None:
    assert push_cluster((), 3, 4) == (3,)
    assert push_cluster((3, 2, 1), 1, 4) == (1, 3, 2)
    assert push_cluster((3, 2, 1, 0), 9, 4) == (9, 3, 2, 1)
    assert push_cluster((3, 2), 3, 4) == (3, 2)


def test_sequence_is_recent_unique_clusters_most_recent_first() -> None:
    states, _ = run([event(1, 1), event(2, 2), event(3, 2), event(4, 3), event(5, 1)])
    state = states["u1"]
    assert state.recent_clusters == (1, 3, 2)
    assert state.history(2) == (1, 3)
    assert state.event_count == 5
    assert state.positive_count == 5
    assert state.last_event_id == "e0005"


def test_a_replan_request_carries_the_window_most_recent_first() -> None:
    events = [event(1, 1), event(2, 2), event(3, 2), event(4, 3), event(5, 1)]
    (request,) = apply_batch(events, {}, CATALOG, RULES, ENGAGEMENT).replans
    # The order a recency-weighted window term reads, and the set every plan avoids.
    assert request.window == (1, 3, 2)
    assert request.excluded == frozenset(request.window)
    assert request.history == request.window[:2]


def test_novelty_window_bounds_the_sequence() -> None:
    states, _ = run([event(n, n) for n in range(8)])
    assert states["u1"].recent_clusters == (7, 6, 5, 4)


def test_order_inside_a_batch_does_not_matter() -> None:
    events = [event(n, n % 5, user=f"u{n % 3}") for n in range(30)]
    forward, _ = run(events)
    backward, _ = run(list(reversed(events)))
    assert forward == backward


def test_replayed_batch_changes_nothing() -> None:
    events = [event(n, n % 4) for n in range(10)]
    states, _ = run(events)
    result = apply_batch(events, states, CATALOG, RULES, ENGAGEMENT)
    assert result.stats.applied == 0
    assert result.stats.stale == 10
    # Nothing changed; the user's replan is still pending because no plan was confirmed.
    assert result.states == {"u1": states["u1"]}
    assert [r.user_id for r in result.replans] == ["u1"]


def test_duplicates_across_batches_are_idempotent() -> None:
    events = [event(n, n % 4) for n in range(10)]
    once, _ = run(events)
    twice, _ = run(events[3:7] + events[8:], once)
    assert twice == once


def test_late_events_are_skipped_and_counted() -> None:
    states, _ = run([event(5, 1), event(6, 2)])
    result = apply_batch([event(3, 7)], states, CATALOG, RULES, ENGAGEMENT)
    assert result.stats.stale == 1
    assert result.stats.applied == 0
    assert 7 not in {**states, **result.states}["u1"].recent_clusters


def test_ties_on_time_are_ordered_by_event_id() -> None:
    same_time = [event(2, 2, minutes=1), event(1, 1, minutes=1)]
    states, _ = run(same_time)
    assert states["u1"].recent_clusters == (2, 1)
    assert states["u1"].last_event_id == "e0002"


def test_unknown_items_are_skipped() -> None:
    unknown = WatchEvent(event_id="x", user_id="u1", item_id="nope", event_time=T0, rating=5)
    result = apply_batch([unknown], {}, CATALOG, RULES, ENGAGEMENT)
    assert result.stats.unknown_items == 1
    assert result.states == {}


def test_negative_engagement_updates_sequence_but_not_positive_count() -> None:
    states, _ = run([event(1, 1, rating=1), event(2, 2, rating=5)])
    assert states["u1"].recent_clusters == (2, 1)
    assert states["u1"].positive_count == 1


def plan_for(state: UserClusterSequence) -> ExplorationPlan:
    assert state.last_event_time is not None
    return ExplorationPlan(
        user_id=state.user_id,
        history=state.history(2),
        cluster_id=9,
        candidates=(9,),
        scores=(1.0,),
        model_version="test",
        as_of=state.last_event_time,
    )


def test_replan_when_history_changes_and_not_when_it_does_not() -> None:
    states, replans = run([event(1, 1), event(2, 2)])
    assert replans == ["u1"]
    states.update(confirm_plans(states, [plan_for(states["u1"])]))
    # Same cluster again: history unchanged, no replan.
    states, replans = run([event(3, 2)], states)
    assert replans == []
    # A cluster already in the history moves to the front: history (1, 2) differs from (2, 1).
    states, replans = run([event(4, 1)], states)
    assert replans == ["u1"]


def test_pending_replan_survives_a_crash_before_the_plan_was_written() -> None:
    states, replans = run([event(1, 1), event(2, 2)])
    assert replans == ["u1"]
    # The driver wrote the state but crashed before confirming a plan; the events come again.
    result = apply_batch([event(1, 1), event(2, 2)], states, CATALOG, RULES, ENGAGEMENT)
    assert result.stats.applied == 0
    assert [r.user_id for r in result.replans] == ["u1"]


def test_debounce_holds_replans_until_enough_event_time_passed() -> None:
    rules = SequenceSettings(history_length=2, novelty_window=4, replan_debounce_s=600)
    states, replans = run([event(1, 1), event(2, 2)], rules=rules)
    assert replans == ["u1"]  # never planned: no debounce
    states.update(confirm_plans(states, [plan_for(states["u1"])]))
    result = apply_batch([event(3, 3)], states, CATALOG, rules, ENGAGEMENT)
    assert result.replans == [] and result.stats.debounced == 1
    states.update(result.states)
    states, replans = run([event(20, 4)], states, rules=rules)  # 18 minutes after the plan
    assert replans == ["u1"]


def test_replan_request_excludes_the_novelty_window() -> None:
    result = apply_batch([event(n, n) for n in range(6)], {}, CATALOG, RULES, ENGAGEMENT)
    (request,) = result.replans
    assert request.history == (5, 4)
    assert request.excluded == frozenset({5, 4, 3, 2})
    assert request.as_of == T0 + timedelta(minutes=5)


def test_revisions_strictly_increase_even_within_one_second() -> None:
    same_time = [event(n, n, minutes=1) for n in range(1, 4)]
    states, _ = run(same_time[:1])
    first = states["u1"].revision_us
    states, _ = run(same_time[1:2], states)
    second = states["u1"].revision_us
    confirmed = confirm_plans(states, [plan_for(states["u1"])])["u1"].revision_us
    assert first < second < confirmed
    assert first == int((T0 + timedelta(minutes=1)).timestamp() * 1_000_000)
