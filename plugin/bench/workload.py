"""The events the benchmarks send: MovieLens-100K, as Kafka records the worker would consume.

Two orders of the same events:

* ``interleaved`` (the default): users take turns, each user's events in time order. A batch
  then holds about as many users as events, as on a platform with many concurrent viewers;
  it is the hard case for batching (no two events of a batch share a state read or write).
* ``time``: the dataset's own time order. MovieLens users rate in bursts, so a 500-event batch
  holds a handful of users and batching merges most of their reads, writes and replans.

Two workloads per order:

* ``replans``: the events as they are. Most change the user's K-cluster history, so most
  trigger a replan (the worst case for the planner);
* ``sequence-only``: every event of a user re-watches the cluster of the user's first
  event, after one priming event per user (not timed) that creates the state and its plan.
  The sequence state still changes with each event (count, watermark, revision), but the
  history does not, so nothing is replanned.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Literal

from plugin.adapters.kafka_io import event_payload
from plugin.core.catalog import ClusterCatalog
from plugin.core.events import WatchEvent
from plugin.core.sequence import push_cluster
from plugin.streaming.worker import Record

Order = Literal["interleaved", "time"]
Kind = Literal["replans", "sequence-only"]
ORDERS: tuple[Order, ...] = ("interleaved", "time")


def interleave(events: Iterable[WatchEvent]) -> Iterator[WatchEvent]:
    """Round-robin over users (in order of their first event), each user's events in order."""
    queues: dict[str, list[WatchEvent]] = {}
    for event in events:
        queues.setdefault(event.user_id, []).append(event)
    position = 0
    active = list(queues.values())
    while active:
        remaining = []
        for queue in active:
            if position < len(queue):
                yield queue[position]
                remaining.append(queue)
        active = remaining
        position += 1


@dataclass(frozen=True)
class Workload:
    """Timed events, plus the untimed events that prime the state before them."""

    name: str
    order: Order
    priming: list[WatchEvent]
    events: list[WatchEvent]

    @property
    def users(self) -> int:
        return len({e.user_id for e in self.events})


def known_events(events: Iterable[WatchEvent], catalog: ClusterCatalog) -> Iterator[WatchEvent]:
    """Events whose item the catalog knows (the worker dead-letters the others)."""
    return (e for e in events if catalog.cluster_of(e.item_id) is not None)


def build_workload(
    events: Sequence[WatchEvent], catalog: ClusterCatalog, kind: Kind, order: Order, limit: int
) -> Workload:
    """``limit`` timed events of the given kind and order (see the module docstring)."""
    ordered = list(known_events(events, catalog))  # the dataset's (event_time, event_id) order
    if kind == "replans":
        chosen = interleave(ordered) if order == "interleaved" else iter(ordered)
        return Workload(kind, order, [], list(islice(chosen, limit)))
    first: dict[str, WatchEvent] = {}
    for event in ordered:
        first.setdefault(event.user_id, event)
    rest = [
        e.model_copy(update={"item_id": first[e.user_id].item_id})
        for e in ordered
        if e.event_id != first[e.user_id].event_id
    ]
    chosen = interleave(rest) if order == "interleaved" else iter(rest)
    timed = list(islice(chosen, limit))
    users = {e.user_id for e in timed}
    priming = [event for user, event in first.items() if user in users]
    return Workload(kind, order, priming, timed)


PlannerInput = tuple[tuple[int, ...], tuple[int, ...]]


def planner_inputs(
    events: Sequence[WatchEvent], catalog: ClusterCatalog, k: int, window: int
) -> list[tuple[PlannerInput, bool]]:
    """For each event (in the given per-user order): the user's planner input after it (the
    K-history and the sorted novelty window, what ``UserClusterSequence.plan_is_current``
    compares), and whether the event changed the K-history, i.e. should lead to a new plan."""
    recent: dict[str, tuple[int, ...]] = {}
    out = []
    for event in events:
        cluster = catalog.cluster_of(event.item_id)
        before = recent.get(event.user_id, ())
        after = push_cluster(before, cluster, window) if cluster is not None else before
        recent[event.user_id] = after
        out.append(((after[:k], tuple(sorted(after))), after[:k] != before[:k]))
    return out


def records(
    events: Sequence[WatchEvent], topic: str = "watch-events", first_offset: int = 0
) -> list[Record]:
    """The events as the Kafka records the worker's agent hands to ``StreamWorker.handle``
    (JSON values, keyed by user, Kafka timestamps now)."""
    now = time.time()
    return [
        Record(topic, 0, first_offset + i, e.user_id.encode(), event_payload(e), now)
        for i, e in enumerate(events)
    ]


def messages(events: Iterable[WatchEvent]) -> list[tuple[str, bytes]]:
    """The events as ``(key, value)`` messages for the producer."""
    return [(e.user_id, event_payload(e)) for e in events]
