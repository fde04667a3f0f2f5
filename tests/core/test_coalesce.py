"""The coalescer: background work for several batches at once, in order, none lost."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from plugin.core.coalesce import Coalescer


def wait_for(condition: Callable[[], object], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)


def test_items_within_the_interval_are_flushed_together_in_order() -> None:
    flushed: list[list[int]] = []
    coalescer = Coalescer(flushed.append, interval_s=60.0, name="test-coalescer")
    coalescer.add(1)
    wait_for(lambda: flushed)  # the first flush goes at once
    for item in (2, 3, 4):
        coalescer.add(item)
    time.sleep(0.05)
    assert flushed == [[1]]  # the others wait for the interval...
    coalescer.settle()  # ...or for settle
    assert flushed == [[1], [2, 3, 4]]
    assert "test-coalescer" not in {t.name for t in threading.enumerate()}  # idle: no thread


def test_a_failed_flush_is_logged_and_later_items_still_flushed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    flushed: list[list[str]] = []

    def flush(items: list[str]) -> None:
        if "bad" in items:
            raise OSError("disk gone")
        flushed.append(items)

    coalescer = Coalescer(flush, interval_s=0.0, name="test-failing")
    coalescer.add("bad")
    coalescer.settle()
    coalescer.add("good")
    coalescer.settle()
    assert flushed == [["good"]]
    assert "test-failing: a flush failed; 1 items dropped" in caplog.text
