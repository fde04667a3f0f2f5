"""Novel moves: the one walk over watch events that every learner and baseline counts from.

Each user's events are walked in time order through the core's sequence rule
(:func:`plugin.core.sequence.push_cluster`): the user's recent clusters are their W most recent
unique clusters, and a *novel move* is a move to a cluster outside them, exactly the clusters
a plan for that user would be allowed to propose.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from plugin.core.catalog import ClusterCatalog
from plugin.core.events import WatchEvent
from plugin.core.sequence import push_cluster
from plugin.settings import DataSettings


@dataclass(frozen=True)
class NovelMove:
    """One user's novel move: the recent clusters before it, the target, and its engagement."""

    user_id: str
    history: tuple[int, ...]
    target: int
    positive: bool
    recent: tuple[int, ...] = ()  # the whole novelty window, which a plan had to avoid
    at: datetime | None = None


@dataclass(frozen=True)
class PlanOutcome:
    """A plan of ``candidate`` for ``history`` that a user answered (``plugin.core.feedback``): one
    more trial of that pair, a success when the user engaged the candidate positively."""

    history: tuple[int, ...]
    candidate: int
    success: bool
    weight: float = 1.0


def walk_novel_moves(
    events: Iterable[WatchEvent], catalog: ClusterCatalog, window: int
) -> Iterator[tuple[WatchEvent, tuple[int, ...], int]]:
    """``(event, recent clusters before it, its cluster)`` for every novel move, in time order."""
    recent: dict[str, tuple[int, ...]] = {}
    for event in sorted(events, key=lambda e: e.order_key):
        cluster = catalog.cluster_of(event.item_id)
        if cluster is None:
            continue
        user_recent = recent.get(event.user_id, ())
        if user_recent and cluster not in user_recent:
            yield event, user_recent, cluster
        recent[event.user_id] = push_cluster(user_recent, cluster, window)


def novel_moves(
    events: Iterable[WatchEvent],
    catalog: ClusterCatalog,
    k: int,
    window: int,
    engagement: DataSettings,
) -> list[NovelMove]:
    """Every novel move in the events, in time order, with the history of length <= K."""
    return [
        NovelMove(
            event.user_id,
            recent[:k],
            cluster,
            event.is_positive(engagement.positive_rating, engagement.positive_watch_ratio),
            recent,
            event.event_time,
        )
        for event, recent, cluster in walk_novel_moves(events, catalog, window)
    ]
