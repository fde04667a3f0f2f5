"""The core's outside world, as small interfaces. Adapters in ``plugin.adapters`` implement them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from plugin.core.catalog import ClusterCatalog
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
