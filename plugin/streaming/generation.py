"""The online state's generation marker: how a worker notices that Redis lost its data.

The online store is the only copy of each user's state, and offsets are committed once a
batch's writes are acknowledged. A Redis that forgets acknowledged writes (restarted without
persistence, flushed, failed over to an empty or lagging replica) would otherwise go unnoticed:
the worker writes the next batches onto the emptied store and keeps committing.

So the store holds one small key beside the state, ``<worker.generation_key_prefix>:<feast
project>``, whose value names a generation of the online state. The first worker to start on an
empty store creates it (``SET NX``, so workers starting together agree on one), every worker
remembers the value it found, and :meth:`GenerationGuard.check` reads it before a batch reads
any state and again after the batch's writes, before its offsets are acked. On the fast Redis
store both reads ride on the batch's own round trips (:meth:`FeastStore.watch_marker
<plugin.adapters.feast_store.FeastStore.watch_marker>`): a ``GET`` queued before the state
read's script and one queued after the state write's, in the same pipelines, so Redis answers
them in that order and the guarantee is the same without two more round trips a batch.
A marker that is missing or different means the data behind it is not what this worker
wrote on: the worker raises :class:`StateLost`, logs one line and exits with
:data:`EXIT_STATE_LOST` without acking (``streams.app``). A Redis that is down raises its own
connection error instead, and the batch is retried as before: only a Redis that answers
without the marker is a loss.

A worker that starts on a store without a marker while its group has committed offsets refuses
too: the offsets say events were applied, and the state that recorded them is gone. ``explore
rebuild`` (:mod:`plugin.jobs.rebuild`) replays the retained topic into the store and writes a
new marker; then workers start again (docs/ROBUSTNESS.md).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

# Exit status of a worker that found the online state lost (EX_DATAERR): distinct from a
# failed batch (70), so a supervisor can tell "restart me" from "rebuild first".
EXIT_STATE_LOST = 65

REBUILD_HINT = (
    "stop the workers, run `explore rebuild` (it replays the retained events topic into the "
    "store and writes a new marker), then start them again"
)


class StateLost(RuntimeError):
    """The online store no longer holds the state this worker wrote on."""


def generation_key(prefix: str, project: str) -> str:
    return f"{prefix}:{project}"


class GenerationMarker:
    """The marker key in the online store's Redis."""

    def __init__(self, client: Any, key: str) -> None:
        # A redis-py client on the online store's server (typed loosely: the layer above
        # builds it, and redis-py's own stubs type every reply as Awaitable | Any).
        self.client = client
        self.key = key

    def read(self) -> str | None:
        raw = self.client.get(self.key)
        if raw is None:
            return None
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    def create(self, by: str) -> str:
        """Write a new generation unless one exists (``SET NX``); the stored value either way."""
        self.client.set(self.key, _new_value(by), nx=True)
        value = self.read()
        if value is None:  # removed between the two calls: someone is rebuilding
            raise StateLost(f"generation marker {self.key} vanished while it was created")
        return value

    def replace(self, by: str) -> str:
        """Write a new generation over any old one (``explore rebuild``, once it is done)."""
        value = _new_value(by)
        self.client.set(self.key, value)
        return value

    def remove(self) -> None:
        self.client.delete(self.key)


def _new_value(by: str) -> str:
    return json.dumps(
        {
            "generation": uuid4().hex,
            "created_at": datetime.now(tz=UTC).isoformat(timespec="seconds"),
            "by": f"{by} (pid {os.getpid()} on {socket.gethostname()})",
        }
    )


class GenerationGuard:
    """A worker's view of the marker: the generation it found at start, checked per batch."""

    def __init__(self, marker: GenerationMarker, expected: str) -> None:
        self.marker = marker
        self.expected = expected
        self.checks = 0

    @classmethod
    def claim(cls, marker: GenerationMarker, has_committed: Callable[[], bool]) -> GenerationGuard:
        """At the worker's start: the stored generation, or a new one on an empty store.

        ``has_committed`` says whether the worker's group has committed offsets on the events
        topic; a store without a marker then lost the state those offsets stand for.
        """
        found = marker.read()
        if found is None:
            if has_committed():
                raise StateLost(
                    f"online state lost: no generation marker {marker.key} in Redis, but the "
                    "consumer group has committed offsets (Redis restarted without "
                    f"persistence, was flushed or failed over while no worker ran); {REBUILD_HINT}"
                )
            found = marker.create("worker")
        return cls(marker, found)

    def check(self) -> None:
        """Raise :class:`StateLost` unless the marker still holds the expected generation."""
        self.verify(self.marker.read())

    def verify(self, found: str | None) -> None:
        """:meth:`check` on a marker value read elsewhere: by the online store, in the same
        round trip as a batch's state read (before the states) or write (after them)."""
        self.checks += 1
        if found == self.expected:
            return
        what = "is gone" if found is None else f"changed to {_generation_of(found)}"
        raise StateLost(
            f"online state lost: generation marker {self.marker.key} {what} (expected "
            f"{_generation_of(self.expected)}): Redis restarted without persistence, was "
            f"flushed or failed over to a replica without this worker's writes; stopping "
            f"without committing; {REBUILD_HINT}"
        )


def _generation_of(value: str) -> str:
    try:
        return str(json.loads(value)["generation"])
    except (ValueError, KeyError, TypeError):
        return repr(value[:80])
