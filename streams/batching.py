"""Micro-batches that close as soon as the delivered events run out.

Faust's ``noack_take(max, within)`` hands over its buffer on a fixed tick of ``within``. At a
paced rate an event then waits for the tick after the fetch that brought it: about half the
window on average and the whole window at the tail, on top of the fetch wait. A short tick
alone cuts that, but under a backlog it also cuts the batches (Faust moves events from its
channel into the buffer at a bounded rate), and the worker's fixed cost per batch lowered what
it sustained (docs/STREAMING.md, "The batch window").

So the take ticks every ``poll_s`` and the agent decides what a tick's events are:

* more events are already waiting in the stream's channel (a backlog): the batch stays open
  and grows, up to ``max_events`` or until ``within_s`` after it opened;
* nothing is waiting (a paced rate, the fetch's events all moved): the batch closes now.

:class:`BatchGate` is that rule alone, so it is tested without Faust; :func:`micro_batches`
applies it to a Faust stream. The events stay unacked here: the agent acks them after their
batch's output is delivered, and events still open when the stream stops are consumed again
after a restart.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class BatchGate:
    """Gathers a take's pieces into micro-batches of at most ``max_events``; a batch closes
    when nothing more is waiting, or ``within_s`` after it opened."""

    max_events: int
    within_s: float
    clock: Callable[[], float] = time.monotonic
    _open: list[Any] = field(default_factory=list, init=False)
    _opened_at: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        if self.max_events < 1:
            raise ValueError(f"max_events must be at least 1, got {self.max_events}")

    def add(self, piece: list[Any], waiting: int) -> list[list[Any]]:
        """The batches that close once ``piece`` is in, with ``waiting`` events still
        delivered and not yet taken (in order; usually none or one)."""
        now = self.clock()
        if not self._open:
            self._opened_at = now
        self._open.extend(piece)
        closed = []
        while len(self._open) >= self.max_events:
            closed.append(self._open[: self.max_events])
            del self._open[: self.max_events]
            self._opened_at = now
        if self._open and (waiting == 0 or now - self._opened_at >= self.within_s):
            closed.append(self._open)
            self._open = []
        return closed

    @property
    def open_events(self) -> int:
        return len(self._open)


async def micro_batches(
    stream: Any, max_events: int, within_s: float, poll_s: float
) -> AsyncIterator[list[Any]]:
    """The stream's events as micro-batches (:class:`BatchGate`), taken every ``poll_s``."""
    gate = BatchGate(max_events, within_s)
    # The stream's own channel is the iterator Faust's conductor delivers to (``app.stream``
    # wraps the topic in ``aiter``), so its queue holds the events delivered and not taken.
    # Any other queue would always look empty and every tick would close a batch: refuse it.
    channel = stream.channel
    if not getattr(channel, "is_iterator", False):
        raise RuntimeError(
            f"micro_batches needs a stream over an iterating channel, got {channel!r}"
        )
    waiting = channel.queue.qsize
    async for piece in stream.noack_take(max_events, within=poll_s):
        for batch in gate.add(piece, waiting()):
            yield batch
