"""The core's outside world, as small interfaces. Adapters in ``plugin.adapters`` implement them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from plugin.core.catalog import ClusterCatalog
from plugin.core.events import WatchEvent
from plugin.core.planning import ExplorationPlan
from plugin.core.sequence import UserClusterSequence


@dataclass(frozen=True)
class OwedMark:
    """One user's entry in the record of owed replans: the shard (``topic:partition``) the
    user's events come from, and a state revision (see :class:`OwedChanges`)."""

    shard: str
    revision_us: int


@dataclass(frozen=True)
class OwedChanges:
    """What a write changes in the durable record of users owed a replan.

    ``owed``: the user's written state (of that revision) still waits for a plan; the record
    keeps the highest revision it was given. ``settled``: the user's entry goes, but only if
    its revision is at most the one given, so a settlement never removes the entry of a newer
    owed state that someone else wrote meanwhile.
    """

    owed: Mapping[str, OwedMark] = field(default_factory=dict)
    settled: Mapping[str, OwedMark] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.owed or self.settled)


class SequencePlanStore(Protocol):
    """Where user sequences and plans live online. One call per batch in each direction."""

    def read_sequences(self, user_ids: Sequence[str]) -> dict[str, UserClusterSequence]:
        """Current state of each known user; unknown users are absent from the result."""
        ...

    def write_sequences(
        self, states: Iterable[UserClusterSequence], owed: OwedChanges | None = None
    ) -> None:
        """Write states and, where the store keeps one, apply ``owed`` to its record of owed
        replans in the same round trip (so the record is exactly as durable as the states)."""
        ...

    def write_plans(
        self,
        plans: Sequence[ExplorationPlan],
        describe: Callable[[int], str],
        revisions: Mapping[str, int] | None = None,
    ) -> None:
        """Write plans stamped with their users' state revisions (see ``plugin.core.sequence``)."""
        ...

    def read_plans(self, user_ids: Sequence[str]) -> dict[str, ExplorationPlan]: ...

    def write_catalog(self, catalog: ClusterCatalog) -> None:
        """Publish each cluster's description and top items for the ranker."""
        ...


class BatchObserver(Protocol):
    """What the batch processor shows each batch to, at three fixed points of
    :meth:`~plugin.core.pipeline.BatchProcessor.process` (the feedback loop,
    :class:`~plugin.core.feedback.FeedbackCollector`).

    An exception from :meth:`before_read` or :meth:`before_writes` fails the batch before it
    wrote anything; one from :meth:`after_writes` fails it after its writes (a driver retries,
    and the core's watermarks make the second application a no-op).
    """

    def before_read(self, events: Sequence[WatchEvent]) -> None:
        """The batch's validated events, before the store's state read."""
        ...

    def before_writes(
        self, events: Sequence[WatchEvent], states: Mapping[str, UserClusterSequence]
    ) -> None:
        """The states the batch starts from, after the state read and before any plan or
        state of the batch is written. It runs on a thread of its own, beside the core and
        the planner call (it must not touch what they use), and the batch waits for it before
        its first write."""
        ...

    def after_writes(self, events: Sequence[WatchEvent], plans: Sequence[ExplorationPlan]) -> None:
        """Once the batch's plans and states are written; ``plans``: the plans it wrote."""
        ...


class OwedReplanRecord(Protocol):
    """A store's durable record of users owed a replan, per shard (``topic:partition``):
    written with the states (:meth:`SequencePlanStore.write_sequences`), read by the repair."""

    @property
    def keeps_owed_replans(self) -> bool:
        """Whether this store keeps the record (the Redis store does; SQLite does not)."""
        ...

    def read_owed(self, shards: Sequence[str], limit: int) -> dict[str, OwedMark]:
        """Up to ``limit`` users per shard, lowest (oldest) revision first."""
        ...

    def count_owed(self, shards: Sequence[str]) -> int:
        """How many users the shards owe a replan."""
        ...
