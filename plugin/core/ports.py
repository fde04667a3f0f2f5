"""The core's outside world, as small interfaces. Adapters in ``plugin.adapters`` implement them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from plugin.core.catalog import ClusterCatalog
from plugin.core.events import WatchEvent
from plugin.core.planning import ExplorationPlan
from plugin.core.sequence import UserClusterSequence


class SequencePlanStore(Protocol):
    """Where user sequences and plans live online. One call per batch in each direction."""

    def read_sequences(self, user_ids: Sequence[str]) -> dict[str, UserClusterSequence]:
        """Current state of each known user; unknown users are absent from the result."""
        ...

    def write_sequences(self, states: Iterable[UserClusterSequence]) -> None: ...

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
        """The states the batch starts from, right after the state read and before any plan
        or state of the batch is written."""
        ...

    def after_writes(self, events: Sequence[WatchEvent]) -> None:
        """Once the batch's plans and states are written."""
        ...
