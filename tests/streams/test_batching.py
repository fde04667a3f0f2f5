"""The micro-batch rule (streams/batching.py): a batch grows while events are waiting, and closes
when none are, when it is full, or when its window has passed. Pure: a fake clock, no Faust."""

from __future__ import annotations

import pytest

from streams.batching import BatchGate


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def gate(max_events: int = 5, within_s: float = 0.02) -> tuple[BatchGate, Clock]:
    clock = Clock()
    return BatchGate(max_events, within_s, clock=clock), clock


def test_a_batch_closes_when_nothing_more_is_waiting() -> None:
    g, _ = gate()
    assert g.add([1, 2], waiting=0) == [[1, 2]]
    assert g.open_events == 0


def test_a_batch_grows_while_events_are_waiting() -> None:
    g, clock = gate()
    assert g.add([1], waiting=3) == []
    clock.now += 0.005
    assert g.add([2, 3], waiting=1) == []
    clock.now += 0.005
    assert g.add([4], waiting=0) == [[1, 2, 3, 4]]


def test_a_batch_closes_at_its_window_though_events_keep_coming() -> None:
    g, clock = gate(max_events=100, within_s=0.02)
    assert g.add([1], waiting=50) == []
    clock.now += 0.015
    assert g.add([2], waiting=50) == []
    clock.now += 0.005  # 0.02 after the batch opened
    assert g.add([3], waiting=50) == [[1, 2, 3]]
    # The next batch's window starts with its own first event.
    clock.now += 0.019
    assert g.add([4], waiting=50) == []
    clock.now += 0.019
    assert g.add([5], waiting=50) == []


def test_full_batches_are_split_in_order_and_the_rest_stays_open() -> None:
    g, _ = gate(max_events=3)
    assert g.add([1, 2, 3, 4, 5, 6, 7], waiting=9) == [[1, 2, 3], [4, 5, 6]]
    assert g.open_events == 1
    assert g.add([8], waiting=0) == [[7, 8]]


def test_a_full_batch_and_the_rest_both_close_when_nothing_waits() -> None:
    g, _ = gate(max_events=3)
    assert g.add([1, 2, 3, 4], waiting=0) == [[1, 2, 3], [4]]


def test_max_events_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_events"):
        BatchGate(0, 0.02)
