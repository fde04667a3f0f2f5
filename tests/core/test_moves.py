"""The one novel-move walk that the frequency baseline, the training data and the granularity
study all count from."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from plugin.core.catalog import ClusterCatalog, InterestCluster, ParentCluster
from plugin.core.events import WatchEvent
from plugin.core.frequency import count_novel_transitions
from plugin.core.moves import novel_moves, walk_novel_moves
from plugin.settings import DataSettings

T0 = datetime(1998, 1, 1, tzinfo=UTC)
CATALOG = ClusterCatalog(
    clusters=tuple(InterestCluster(c, 0, (f"k{c}",), (f"i{c}",), 1) for c in range(6)),
    parents=(ParentCluster(0, ("all",), tuple(range(6))),),
    item_to_cluster={f"i{c}": c for c in range(6)},
)


def watch(user: str, clusters: list[int], rating: float = 5) -> list[WatchEvent]:
    return [
        WatchEvent(
            event_id=f"{user}-{n}",
            user_id=user,
            item_id=f"i{c}" if c >= 0 else "unknown",
            event_time=T0 + timedelta(minutes=n),
            rating=rating,
        )
        for n, c in enumerate(clusters)
    ]


def test_a_move_is_novel_only_outside_the_window() -> None:
    # Window 2: after 0, 1 the user's recent clusters are (1, 0); 0 again is not novel,
    # 2 is, and then 0 is novel again because it left the window.
    moves = list(walk_novel_moves(watch("u", [0, 1, 0, 2, 1, 0]), CATALOG, window=2))
    assert [(recent, cluster) for _, recent, cluster in moves] == [
        ((0,), 1),
        ((0, 1), 2),
        ((2, 0), 1),
        ((1, 2), 0),
    ]


def test_unknown_items_are_skipped_and_users_are_apart() -> None:
    events = watch("a", [0, -1, 1]) + watch("b", [1, 0])
    moves = [(e.user_id, recent, c) for e, recent, c in walk_novel_moves(events, CATALOG, 5)]
    assert sorted(moves) == [("a", (0,), 1), ("b", (1,), 0)]


def test_novel_moves_carry_history_window_and_engagement() -> None:
    moves = novel_moves(watch("u", [0, 1, 2], rating=2), CATALOG, 1, 20, DataSettings())
    assert [(m.history, m.recent, m.target, m.positive) for m in moves] == [
        ((0,), (0,), 1, False),
        ((1,), (1, 0), 2, False),
    ]
    assert moves[-1].at == T0 + timedelta(minutes=2)


@given(
    st.lists(st.lists(st.integers(min_value=0, max_value=5), max_size=12), max_size=6),
    st.integers(min_value=1, max_value=6),
)
def test_the_baseline_counts_exactly_the_moves_of_the_walk(
    sequences: list[list[int]], window: int
) -> None:
    events = [e for user, clusters in enumerate(sequences) for e in watch(f"u{user}", clusters)]
    counts = count_novel_transitions(events, CATALOG, k=2, window=window)
    moves = novel_moves(events, CATALOG, 2, window, DataSettings())
    assert counts.transitions == len(moves)
    assert sum(counts.popularity.values()) == len(moves)
