"""Training data: novel moves, deduplicated balanced pairs, collective feedback labels."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from plugin.core.catalog import ClusterCatalog, InterestCluster, ParentCluster
from plugin.core.events import WatchEvent
from plugin.core.moves import NovelMove, novel_moves
from plugin.models.data import feedback_labels, novelty_data
from plugin.settings import DataSettings

T0 = datetime(1998, 1, 1, tzinfo=UTC)
CATALOG = ClusterCatalog(
    clusters=tuple(InterestCluster(c, 0, (f"k{c}",), (f"i{c}",), 1) for c in range(6)),
    parents=(ParentCluster(0, ("all",), tuple(range(6))),),
    item_to_cluster={f"i{c}": c for c in range(6)},
)


def watch(user: str, moves: list[tuple[int, float]]) -> list[WatchEvent]:
    return [
        WatchEvent(
            event_id=f"{user}-{n}",
            user_id=user,
            item_id=f"i{c}",
            event_time=T0 + timedelta(minutes=n),
            rating=r,
        )
        for n, (c, r) in enumerate(moves)
    ]


def test_novel_moves_carry_history_window_and_engagement() -> None:
    events = watch("a", [(0, 5), (0, 5), (1, 2), (0, 5), (2, 4)])
    moves = novel_moves(events, CATALOG, k=2, window=3, engagement=DataSettings())
    assert [(m.history, m.target, m.positive) for m in moves] == [
        ((0,), 1, False),
        ((0, 1), 2, True),  # the return to 0 is not novel, and only moves the history
    ]
    assert moves[1].recent == (0, 1)
    assert moves[1].at == T0 + timedelta(minutes=4)


def move(user: str, history: tuple[int, ...], target: int, positive: bool = True) -> NovelMove:
    return NovelMove(user, history, target, positive, history)


def test_novelty_pairs_are_deduplicated_per_user_capped_and_balanced() -> None:
    moves = (
        [move(f"u{i}", (0, 1), 2) for i in range(10)]  # popular: 10 users
        + [move("u0", (0, 1), 2)] * 5  # one user repeating counts once
        + [move("v", (0, 1), 3)]  # rare target
        + [move("w", (0, 1), 4, positive=False)]  # negative: not a novelty example
    )
    data = novelty_data(moves, k=2, cap=4)
    # One row per user and pair: u0..u9 into 2, v into 3; the repeats and the negative gone.
    assert data.targets.tolist() == [2] * 10 + [3]
    assert data.users.tolist() == [10] * 10 + [1]
    assert data.histories.tolist() == [[0, 1]] * 11
    assert data.windows.tolist() == [[0, 1]] * 11  # each row keeps its user's window
    # A pair's weight = min(users, cap) / sqrt(popularity): 4/sqrt(10) vs 1/sqrt(1), shared
    # equally by the pair's rows.
    pair = {t: data.weights[data.targets == t].sum() for t in (2, 3)}
    expected = np.array([4 / np.sqrt(10), 1.0])
    assert [pair[2], pair[3]] == pytest.approx(expected / expected.sum())


def test_feedback_labels_are_positive_shares_of_each_history() -> None:
    moves = (
        [move(f"a{i}", (0,), 1) for i in range(3)]
        + [move("b", (0,), 1, positive=False), move("c", (0,), 2)]
        + [move("d", (5,), 1)]  # history seen once: below min_count
    )
    labels = feedback_labels(moves, n_clusters=6, k=2, min_count=2)
    rows = {
        (tuple(h), int(c)): float(y)
        for h, c, y in zip(labels.histories.tolist(), labels.candidates, labels.labels, strict=True)
    }
    assert rows[((0, -1), 1)] == pytest.approx(3 / 5)
    assert rows[((0, -1), 2)] == pytest.approx(1 / 5)
    assert rows[((0, -1), 3)] == 0.0
    assert ((0, -1), 0) not in rows  # a history's own clusters are never candidates
    assert all(h != (5, -1) for h, _ in rows)
    better, worse = labels.pairs[:, 0], labels.pairs[:, 1]
    assert (labels.labels[better] > labels.labels[worse]).all()


def test_feedback_needs_enough_support() -> None:
    with pytest.raises(ValueError, match="at least 9"):
        feedback_labels([move("a", (0,), 1)], n_clusters=6, k=2, min_count=9)
