"""A platform-sized synthetic workload: a catalog and a stream of watch events, seeded.

MovieLens-100K has 943 users and 19 genres; a video platform has millions of users and
hundreds of leaf interest clusters. This generator makes the shape the scaling figures need
(docs/SCALING.md), with the skew that decides cache hit rates and Redis load:

* **Items and clusters.** ``items`` items (default 50k) in ``clusters`` leaf clusters (500)
  under ``parents`` parent clusters (25). Item popularity is Zipf: the item of popularity rank
  ``r`` (1-based) is watched with probability proportional to ``r ** -zipf_exponent``
  (default 1.0, the exponent usually reported for video views). Items are dealt to clusters at
  random, so every cluster holds a head of popular items and a long tail.
* **Users and sessions.** ``users`` users (1M). Watching happens in sessions: a session
  belongs to one user (uniform over the user base, so almost every batch meets users the
  process has never seen) and holds a geometric number of events (mean
  ``session_mean_events``, 8). Within a session a viewer stays with the current cluster with
  probability ``stay_in_cluster`` (0.6: the next item is drawn from that cluster's items by
  the same Zipf weights), and otherwise draws a new item from the whole catalog.
* **Burstiness.** ``concurrent_sessions`` sessions (2,000) are open at once and the stream
  takes the next event from a random open one; a finished session is replaced by a new one.
  Consecutive events therefore belong to different users (the hard case for batching), while
  each user's own events come in a burst, ``mean_gap_s`` (20 s) apart on average. Event times
  come from one stream clock, so they never go backwards, for any user.
* **Engagement.** ``positive_share`` (0.7) of the events are rated 4 or 5 (a positive watch),
  the rest 1 to 3.

Every draw comes from one ``numpy`` generator seeded with ``seed``, so a shape and a seed
always give the same catalog and the same events. Event payloads are the JSON an upstream
producer sends (event time as epoch seconds), built without a model object per event: the
generator must outrun the worker it feeds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np

from plugin.core.catalog import ClusterCatalog, InterestCluster, ParentCluster

# 2026-01-01T00:00:00Z: the synthetic clock's start (epoch seconds).
EPOCH_START = 1_767_225_600.0


@dataclass(frozen=True)
class PlatformShape:
    """The size and skew of a synthetic platform (see the module docstring)."""

    users: int = 1_000_000
    items: int = 50_000
    clusters: int = 500
    parents: int = 25
    zipf_exponent: float = 1.0
    session_mean_events: float = 8.0
    stay_in_cluster: float = 0.6
    concurrent_sessions: int = 2_000
    positive_share: float = 0.7
    mean_gap_s: float = 20.0  # seconds between two events of one session
    seed: int = 15

    def __post_init__(self) -> None:
        if self.users < 1 or self.clusters < 2 or self.parents < 1:
            raise ValueError("a platform needs users, at least 2 clusters and 1 parent")
        if self.items < self.clusters:
            raise ValueError(f"{self.items} items cannot fill {self.clusters} clusters")
        if self.session_mean_events < 1:
            raise ValueError("session_mean_events must be at least 1")
        for name in ("stay_in_cluster", "positive_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be within [0, 1]")

    @property
    def histories(self) -> int:
        """Planning histories of 1..2 distinct clusters: C + C(C-1) (250,000 at C=500)."""
        return self.clusters * self.clusters

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class PlatformWorkload:
    """The catalog and the event stream of one :class:`PlatformShape`."""

    def __init__(self, shape: PlatformShape) -> None:
        self.shape = shape
        rng = np.random.default_rng(shape.seed)
        # Popularity rank r (0-based) -> weight; item i has rank i.
        weights = 1.0 / np.arange(1, shape.items + 1, dtype=np.float64) ** shape.zipf_exponent
        self._cdf = np.cumsum(weights / weights.sum())
        # Every cluster gets at least one item, the rest are dealt at random.
        dealt = np.concatenate(
            [
                np.arange(shape.clusters),
                rng.integers(0, shape.clusters, shape.items - shape.clusters),
            ]
        )
        rng.shuffle(dealt)
        self.cluster_of_item = dealt.astype(np.int64)
        # Per cluster, its items (popularity order) and the cumulative weights among them.
        order = np.argsort(self.cluster_of_item, kind="stable")
        bounds = np.searchsorted(self.cluster_of_item[order], np.arange(shape.clusters + 1))
        self._members = [order[bounds[c] : bounds[c + 1]] for c in range(shape.clusters)]
        self._member_cdf = []
        for members in self._members:
            w = weights[members]
            self._member_cdf.append(np.cumsum(w / w.sum()))
        self._rng = rng

    def catalog(self) -> ClusterCatalog:
        """The catalog: item ``i<n>`` (popularity rank n) in its cluster, parents by
        ``cluster % parents``, each cluster's three most popular items on top."""
        shape = self.shape
        clusters = tuple(
            InterestCluster(
                cluster_id=c,
                parent_id=c % shape.parents,
                keywords=(f"topic {c}",),
                top_items=tuple(f"i{int(i)}" for i in self._members[c][:3]),
                size=len(self._members[c]),
            )
            for c in range(shape.clusters)
        )
        parents = tuple(
            ParentCluster(p, (f"area {p}",), tuple(range(p, shape.clusters, shape.parents)))
            for p in range(shape.parents)
        )
        items = {f"i{i}": int(c) for i, c in enumerate(self.cluster_of_item)}
        return ClusterCatalog(
            clusters, parents, items, build={"synthetic": "platform", **shape.as_dict()}
        )

    def events(self, count: int, chunk: int = 10_000) -> Iterator[tuple[str, bytes]]:
        """``count`` events as ``(user key, JSON payload)``, in stream order (see the module
        docstring). Draws are made ``chunk`` at a time."""
        shape, rng = self.shape, self._rng
        sessions = shape.concurrent_sessions
        user = rng.integers(0, shape.users, sessions)
        left = rng.geometric(1.0 / shape.session_mean_events, sessions)
        clock = EPOCH_START
        current = np.full(sessions, -1)  # the session's current cluster (-1: none yet)
        emitted = 0
        while emitted < count:
            n = min(chunk, count - emitted)
            pick = rng.integers(0, sessions, n)
            stay = rng.random(n) < shape.stay_in_cluster
            global_items = np.searchsorted(self._cdf, rng.random(n), side="right")
            within = rng.random(n)
            positive = rng.random(n) < shape.positive_share
            ratings = np.where(positive, rng.integers(4, 6, n), rng.integers(1, 4, n))
            # One clock for the stream: a session's events are mean_gap_s apart on average
            # (one in ``sessions`` events is its own), and every user's events are in order.
            gaps = rng.exponential(shape.mean_gap_s / sessions, n)
            for j in range(n):
                s = int(pick[j])
                cluster = int(current[s])
                if stay[j] and cluster >= 0:
                    members = self._members[cluster]
                    cdf = self._member_cdf[cluster]
                    index = min(int(np.searchsorted(cdf, within[j], side="right")), len(cdf) - 1)
                    item = int(members[index])
                else:
                    item = min(int(global_items[j]), shape.items - 1)
                current[s] = self.cluster_of_item[item]
                clock += float(gaps[j])
                user_id = f"p{int(user[s])}"
                number = emitted + j
                yield user_id, _payload(number, user_id, item, clock, int(ratings[j]))
                left[s] -= 1
                if left[s] <= 0:  # the session ends; a new one opens in its place
                    user[s] = rng.integers(0, shape.users)
                    left[s] = rng.geometric(1.0 / shape.session_mean_events)
                    current[s] = -1
            emitted += n


def _payload(number: int, user_id: str, item: int, when: float, rating: int) -> bytes:
    # The same JSON as plugin.adapters.kafka_io.event_payload, built as text.
    return (
        f'{{"event_id":"s{number}","user_id":{json.dumps(user_id)},"item_id":"i{item}",'
        f'"event_time":{when:.6f},"rating":{rating}.0}}'
    ).encode()
