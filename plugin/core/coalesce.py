"""Background work done in batches of batches: what several batches left, handled at once.

The worker's feedback loop has work that must not hold up a batch and need not follow each one
within milliseconds: the log's Parquet parts (its journal keeps the records durable meanwhile)
and the online aggregates and fresh counts (best effort). Done per batch, each costs its
fixed price (a file and two fsyncs, or two Redis round trips) on every batch, and competes with
the next batch for the CPU and the GIL. A :class:`Coalescer` does it on a thread of its own, at
most once per interval, for everything added since the last time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

Item = TypeVar("Item")


class Coalescer(Generic[Item]):
    """Hands the items added to ``flush`` in order, on a thread named ``name``: everything
    added since the last flush at once, at most one flush per ``interval_s``. The thread starts
    with the first item and ends once nothing is left, so an idle coalescer holds no thread.

    ``flush`` handles its own errors (an exception is logged, and its items are dropped).
    """

    def __init__(self, flush: Callable[[list[Item]], None], interval_s: float, name: str) -> None:
        self.flush = flush
        self.interval_s = interval_s
        self.name = name
        self._items: list[Item] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._hurry = threading.Event()  # settle: flush what is there now
        self._last_flush = 0.0  # time.monotonic()

    def add(self, item: Item) -> None:
        with self._lock:
            self._items.append(item)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()

    def settle(self) -> None:
        """Flush what was added, now, and wait until it is done."""
        with self._lock:
            thread = self._thread
        if thread is not None:
            self._hurry.set()
            thread.join()
            self._hurry.clear()

    def _run(self) -> None:
        while True:
            self._hurry.wait(max(0.0, self._last_flush + self.interval_s - time.monotonic()))
            with self._lock:
                items, self._items = self._items, []
                if not items:
                    self._thread = None
                    return
            try:
                self.flush(items)
            except Exception:  # the thread must go on: later items still need flushing
                log.exception("%s: a flush failed; %d items dropped", self.name, len(items))
            self._last_flush = time.monotonic()
