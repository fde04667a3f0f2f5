"""Property-based tests of the processing core's invariants (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

from hypothesis import example, given, settings
from hypothesis import strategies as st

from plugin.core.catalog import ClusterCatalog, InterestCluster, ParentCluster
from plugin.core.events import WatchEvent
from plugin.core.planning import ExplorationPlan, PlanRequest
from plugin.core.sequence import UserClusterSequence, apply_batch, confirm_plans
from plugin.settings import DataSettings, SequenceSettings

T0 = datetime(2020, 1, 1, tzinfo=UTC)
CLUSTERS = 7
CATALOG = ClusterCatalog(
    clusters=tuple(InterestCluster(c, 0, (f"k{c}",), (f"i{c}",), 1) for c in range(CLUSTERS)),
    parents=(ParentCluster(0, ("all",), tuple(range(CLUSTERS))),),
    item_to_cluster={f"i{c}": c for c in range(CLUSTERS)},
)
RULES = SequenceSettings(history_length=2, novelty_window=4)
ENGAGEMENT = DataSettings()

raw_events = st.lists(
    st.tuples(
        st.sampled_from(["u1", "u2", "u3"]),
        st.integers(0, CLUSTERS),  # CLUSTERS itself is an item the catalog does not know
        st.integers(0, 50),  # minutes: ties are frequent on purpose
        st.floats(0, 5),
    ),
    max_size=60,
)


def to_events(raw: list[tuple[str, int, int, float]]) -> list[WatchEvent]:
    return [
        WatchEvent(
            event_id=f"e{n:03d}",
            user_id=user,
            item_id=f"i{cluster}",
            event_time=T0 + timedelta(minutes=minute),
            rating=rating,
        )
        for n, (user, cluster, minute, rating) in enumerate(raw)
    ]


def run(
    batches: list[list[WatchEvent]], states: dict[str, UserClusterSequence] | None = None
) -> dict[str, UserClusterSequence]:
    current = dict(states or {})
    for batch in batches:
        current.update(apply_batch(batch, current, CATALOG, RULES, ENGAGEMENT).states)
    return current


@settings(max_examples=150, deadline=None)
@given(raw_events, st.randoms(use_true_random=False))
def test_order_within_a_batch_never_matters(raw: list, rng: object) -> None:
    events = to_events(raw)
    shuffled = list(events)
    rng.shuffle(shuffled)  # type: ignore[attr-defined]
    assert run([events]) == run([shuffled])


@settings(max_examples=150, deadline=None)
@given(raw_events, st.lists(st.integers(1, 10), min_size=1, max_size=10))
def test_batch_boundaries_of_an_ordered_stream_never_matter(raw: list, sizes: list[int]) -> None:
    events = sorted(to_events(raw), key=lambda e: e.order_key)
    batches, start, index = [], 0, 0
    while start < len(events):
        size = sizes[index % len(sizes)]
        batches.append(events[start : start + size])
        start, index = start + size, index + 1
    assert run(batches) == run([events])


@settings(max_examples=150, deadline=None)
@given(raw_events, st.data())
def test_replaying_any_applied_events_changes_nothing(raw: list, data: st.DataObject) -> None:
    events = to_events(raw)
    state = run([events])
    replayed = data.draw(st.lists(st.sampled_from(events), max_size=20)) if events else []
    result = apply_batch(replayed, state, CATALOG, RULES, ENGAGEMENT)
    assert result.stats.applied == 0
    assert {**state, **result.states} == state


@settings(max_examples=150, deadline=None)
@given(raw_events)
def test_sequence_shape_invariants(raw: list) -> None:
    events = to_events(raw)
    for user, state in run([events]).items():
        recent = state.recent_clusters
        assert len(recent) == len(set(recent)) <= RULES.novelty_window
        assert state.history(RULES.history_length) == recent[: RULES.history_length]
        known = [e for e in events if e.user_id == user and e.item_id != f"i{CLUSTERS}"]
        distinct = {e.order_key for e in known}
        assert state.event_count == len(distinct)
        assert 0 <= state.positive_count <= state.event_count
        latest = max(known, key=lambda e: e.order_key)
        assert (state.last_event_time, state.last_event_id) == latest.order_key
        assert recent[0] == int(latest.item_id[1:])


@settings(max_examples=100, deadline=None)
@given(raw_events)
def test_replans_are_exactly_the_users_whose_planner_input_moved(raw: list) -> None:
    events = to_events(raw)
    result = apply_batch(events, {}, CATALOG, RULES, ENGAGEMENT)
    requested = {r.user_id for r in result.replans}
    moved = {
        user
        for user, state in result.states.items()
        if not state.plan_is_current(RULES.history_length)
    }
    assert requested == moved
    for request in result.replans:
        assert set(request.history) <= request.excluded


def nearest_novel(request: PlanRequest) -> ExplorationPlan:
    """A deterministic stand-in planner: the first cluster after the latest one not excluded."""
    latest = request.history[0]
    novel = [c for c in range(CLUSTERS) if c not in request.excluded]
    best = min(novel, key=lambda c: (c - latest) % CLUSTERS)
    return ExplorationPlan(
        request.user_id, request.history, best, (best,), (1.0,), "t", request.as_of
    )


@settings(max_examples=150, deadline=None)
@given(raw_events, st.lists(st.integers(0, 60), max_size=6))
# The user follows their plan (3), then returns to their planned history (2, 1) in one batch.
@example([("u1", c, minute, 5.0) for minute, c in enumerate((1, 2, 3, 1, 2))], [2])
def test_a_users_plan_is_the_plan_of_their_state_wherever_batches_split(
    raw: list, cuts: list[int]
) -> None:
    """Final plans never depend on batch boundaries, and never propose a watched cluster."""
    events = to_events(raw)
    bounds = [0, *sorted(cuts), len(events)]
    states: dict[str, UserClusterSequence] = {}
    plans: dict[str, ExplorationPlan] = {}
    for start, end in pairwise(bounds):
        result = apply_batch(events[start:end], states, CATALOG, RULES, ENGAGEMENT)
        made = [nearest_novel(request) for request in result.replans]
        plans.update({plan.user_id: plan for plan in made})
        states.update({**result.states, **confirm_plans(result.states, made)})
    for user, state in states.items():
        if not state.recent_clusters:
            continue
        plan = plans[user]
        assert plan.cluster_id not in state.recent_clusters
        fresh = PlanRequest(user, state.history(2), frozenset(state.recent_clusters), T0)
        assert plan.cluster_id == nearest_novel(fresh).cluster_id
