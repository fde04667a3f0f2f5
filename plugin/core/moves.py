"""Novel moves: the one walk over watch events that every learner and baseline counts from.

Each user's events are walked in time order through the core's sequence rule
(:func:`plugin.core.sequence.push_cluster`): the user's recent clusters are their W most recent
unique clusters, and a *novel move* is a move to a cluster outside them, exactly the clusters
a plan for that user would be allowed to propose.

The same walk can also keep each user's *consecutive-deduplicated* cluster sequence (repeats
allowed, only back-to-back duplicates removed), for sequence models that read more than the
recency set: :func:`walk_novel_sequences` and ``novel_moves(..., sequence_length=L)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from plugin.core.catalog import ClusterCatalog
from plugin.core.events import ORDER_KEY, WatchEvent
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
    # The last clusters of the user's consecutive-deduplicated sequence before the move, most
    # recent first; empty unless asked for (``novel_moves(..., sequence_length=L)``). ``recent``
    # is a set in recency order, so it loses revisits (A B A C reads as C A B).
    sequence: tuple[int, ...] = ()


@dataclass(frozen=True)
class PlanOutcome:
    """A plan of ``candidate`` for ``history`` that a user answered (``plugin.core.feedback``): one
    more trial of that pair, a success when the user engaged the candidate positively."""

    history: tuple[int, ...]
    candidate: int
    success: bool
    weight: float = 1.0


@dataclass(frozen=True)
class SequenceStep:
    """One entry of a user's consecutive-deduplicated cluster sequence: the cluster, the
    novelty window the user reached it from, and when."""

    cluster: int
    window: tuple[int, ...]  # the user's recent clusters just before it, most recent first
    at: datetime

    @property
    def novel(self) -> bool:
        """A novel move, by the same rule as :func:`walk_novel_moves`."""
        return bool(self.window) and self.cluster not in self.window


def _walk(
    events: Iterable[WatchEvent], catalog: ClusterCatalog, window: int
) -> Iterator[tuple[WatchEvent, tuple[int, ...], int]]:
    """``(event, recent clusters before it, its cluster)`` for every event of a known cluster."""
    recent: dict[str, tuple[int, ...]] = {}
    for event in sorted(events, key=ORDER_KEY):
        cluster = catalog.cluster_of(event.item_id)
        if cluster is None:
            continue
        user_recent = recent.get(event.user_id, ())
        yield event, user_recent, cluster
        recent[event.user_id] = push_cluster(user_recent, cluster, window)


def walk_novel_moves(
    events: Iterable[WatchEvent], catalog: ClusterCatalog, window: int
) -> Iterator[tuple[WatchEvent, tuple[int, ...], int]]:
    """``(event, recent clusters before it, its cluster)`` for every novel move, in time order."""
    for event, recent, cluster in _walk(events, catalog, window):
        if recent and cluster not in recent:
            yield event, recent, cluster


def walk_novel_sequences(
    events: Iterable[WatchEvent], catalog: ClusterCatalog, window: int, length: int
) -> Iterator[tuple[WatchEvent, tuple[int, ...], int, tuple[int, ...]]]:
    """:func:`walk_novel_moves` plus, for each move, the last ``length`` clusters of the user's
    consecutive-deduplicated sequence before it, most recent first (empty when ``length`` is 0).
    """
    sequences: dict[str, tuple[int, ...]] = {}
    for event, recent, cluster in _walk(events, catalog, window):
        sequence = sequences.get(event.user_id, ())
        if recent and cluster not in recent:
            yield event, recent, cluster, sequence
        if length and (not sequence or sequence[0] != cluster):
            sequences[event.user_id] = (cluster, *sequence[: length - 1])


def cluster_sequences(
    events: Iterable[WatchEvent], catalog: ClusterCatalog, window: int
) -> dict[str, list[SequenceStep]]:
    """Each user's whole consecutive-deduplicated cluster sequence, oldest first, every step
    with its novelty window: what a sequence model trains on at every position at once."""
    steps: dict[str, list[SequenceStep]] = {}
    for event, recent, cluster in _walk(events, catalog, window):
        user_steps = steps.setdefault(event.user_id, [])
        if not user_steps or user_steps[-1].cluster != cluster:
            user_steps.append(SequenceStep(cluster, recent, event.event_time))
    return steps


def novel_moves(
    events: Iterable[WatchEvent],
    catalog: ClusterCatalog,
    k: int,
    window: int,
    engagement: DataSettings,
    sequence_length: int = 0,
) -> list[NovelMove]:
    """Every novel move in the events, in time order, with the history of length <= K (and,
    when ``sequence_length`` is given, the last that many clusters of the user's sequence)."""
    return [
        NovelMove(
            event.user_id,
            recent[:k],
            cluster,
            event.is_positive(engagement.positive_rating, engagement.positive_watch_ratio),
            recent,
            event.event_time,
            sequence,
        )
        for event, recent, cluster, sequence in walk_novel_sequences(
            events, catalog, window, sequence_length
        )
    ]
