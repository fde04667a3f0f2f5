"""Feast adapter for :class:`plugin.core.ports.SequencePlanStore`: SQLite or Redis online store.

Writes go through ``write_to_online_store`` once per batch and feature view; reads go through
``get_online_features``. Feast's Redis store silently drops a write whose event timestamp is
not newer than the stored one, so a user's rows are stamped with the state's revision
(``UserClusterSequence.revision_us``): the last applied event time, moved on by a microsecond
where needed so that it strictly increases. It is never a wall-clock time.

With the fast Redis store, the store also keeps the durable record of users owed a replan
(:class:`~plugin.core.ports.OwedReplanRecord`): one sorted set per shard (a ``topic:partition``
of the events topic), key ``<worker.owed_key_prefix>:<project>:<topic>:<partition>``, member the
user id, score the owed state's revision. Its updates go in the same pipeline as the states'
write, after it, so the record is as durable as the states (docs/ROBUSTNESS.md).
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import yaml
from feast import FeatureStore, RepoConfig

from plugin.adapters.fast_redis_online_store import BatchedRedisPath, MarkerProbe, OwedOps
from plugin.adapters.feast_rows import (
    PLAN_FEATURES,
    SEQUENCE_FEATURES,
    STATE_FEATURES,
    from_micros,
    plan_rows,
    sequence_row,
    state_from,
    state_of,
)
from plugin.adapters.feedback_counters import AggregateCounters
from plugin.core.catalog import ClusterCatalog
from plugin.core.feedback import FeedbackAggregate, merge_aggregates
from plugin.core.planning import ExplorationPlan
from plugin.core.ports import OwedChanges, OwedMark
from plugin.core.sequence import UserClusterSequence, to_micros
from plugin.settings import Settings

log = logging.getLogger(__name__)

SEQUENCE_VIEW = "user_cluster_sequence"
PLAN_VIEW = "exploration_plan"
CLUSTER_VIEW = "cluster_items"
FEEDBACK_VIEW = "feedback_aggregates"
FEEDBACK_FEATURES = (
    "answered",
    "engaged",
    "engaged_positive",
    "positive_rate",
    "novel",
    "model_version",
    "revision_us",
)
CLUSTER_FEATURES = (
    "top_items",
    "top_titles",
    "description",
    "summary",
    "parent_description",
    "catalog_version",
)


def repo_config(settings: Settings) -> RepoConfig:
    """The feature_store.yaml of the chosen profile, with paths and connection from settings."""
    feast = settings.feast
    name = "feature_store.yaml" if feast.online_store == "sqlite" else "feature_store.redis.yaml"
    document: dict[str, Any] = yaml.safe_load((feast.repo_path / name).read_text())
    document["registry"] = str(feast.registry_path)
    if feast.online_store == "sqlite":
        document["online_store"]["path"] = str(feast.sqlite_path)
    else:
        document["online_store"]["connection_string"] = settings.redis.connection_string()
        if settings.redis.cluster_nodes:
            document["online_store"]["redis_type"] = "redis_cluster"
    feast.registry_path.parent.mkdir(parents=True, exist_ok=True)
    return RepoConfig(repo_path=feast.repo_path, **document)


def load_definitions(repo_path: Path) -> ModuleType:
    """Import the repo's ``features.py`` (the deployable face owns the definitions)."""
    path = repo_path / "features.py"
    spec = importlib.util.spec_from_file_location("interest_explorer_features", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"{path}: Feast definitions not found")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class FeastStore:
    """User sequences, plans and cluster items in a Feast online store."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = FeatureStore(
            config=repo_config(settings), repo_path=str(settings.feast.repo_path)
        )
        # The fast Redis store's batched path (plain rows, two round trips per batch), when
        # the profile selects it; otherwise the SDK path below. See docs/BENCHMARKS.md.
        self.batched = BatchedRedisPath.of(self.store)
        # Feedback counts are incremented on the Redis server, atomically per key, so workers
        # answering the same (history, plan) key never lose each other's increments.
        self.counters = AggregateCounters.of(self.store)
        # The generation marker read in the sequences' own round trips (watch_marker).
        self._marker: tuple[str, Callable[[str | None], None]] | None = None

    def apply(self) -> None:
        """Register the entities, views and feature service (idempotent)."""
        defs = load_definitions(self.settings.feast.repo_path)
        self.store.apply(
            [
                defs.user,
                defs.cluster,
                defs.user_cluster_sequence,
                defs.exploration_plan,
                defs.cluster_items,
                defs.ranker,
                defs.history_candidate,
                defs.feedback_aggregates,
            ]
        )
        if self.batched is not None:
            self.batched.forget_views()

    # -- sequences -------------------------------------------------------------------------

    def watch_marker(self, key: str, verify: Callable[[str | None], None]) -> bool:
        """Read Redis key ``key`` in the same round trip as every sequence read (before the
        states) and every sequence write (after the states and the record of owed replans),
        and hand what was found to ``verify``, which raises to stop the batch: the
        generation marker's check (``plugin.streaming.generation``) without round trips of
        its own. False, and nothing watched, where a read or write is not one pipeline (the
        SDK path, SQLite, a Redis Cluster): the caller checks the marker itself then."""
        if self.batched is None or not self.batched.one_pipeline:
            return False
        self._marker = (key, verify)
        return True

    def _probe(self) -> MarkerProbe | None:
        return MarkerProbe(self._marker[0]) if self._marker is not None else None

    def _verify(self, probe: MarkerProbe | None) -> None:
        if probe is not None and self._marker is not None:
            self._marker[1](probe.found)

    def write_sequences(
        self, states: Iterable[UserClusterSequence], owed: OwedChanges | None = None
    ) -> None:
        """Write states, then ``owed``'s changes to the record of owed replans in the same
        round trip (ignored by a store that keeps no record: SQLite, the SDK path), then the
        watched marker (:meth:`watch_marker`; also when there is no state to write)."""
        if self.batched is None:
            self._write(SEQUENCE_VIEW, self._sequence_rows(states))
            return
        # The whole-row codec (plugin.adapters.feast_rows): one call per state.
        k = self.settings.sequence.history_length
        rows = [sequence_row(s, k) for s in states if s.last_event_time is not None]
        probe = self._probe()
        if rows or owed or probe is not None:
            ops = self._owed_ops(owed) if owed else None
            self.batched.write_encoded(SEQUENCE_VIEW, SEQUENCE_FEATURES, rows, ops, probe)
            self._verify(probe)

    def _sequence_rows(self, states: Iterable[UserClusterSequence]) -> list[dict[str, Any]]:
        k = self.settings.sequence.history_length
        return [
            {
                "user_id": s.user_id,
                "recent_clusters": list(s.recent_clusters),
                "history": list(s.history(k)),
                "last_event_id": s.last_event_id,
                "last_event_time_us": to_micros(s.last_event_time),
                "event_count": s.event_count,
                "positive_count": s.positive_count,
                "planned_history": list(s.planned_history),
                "planned_window": list(s.planned_window),
                "planned_at_us": to_micros(s.planned_at) if s.planned_at else -1,
                "revision_us": s.revision_us,
                "event_timestamp": from_micros(s.revision_us),
            }
            for s in states
            if s.last_event_time is not None
        ]

    # -- the record of owed replans ------------------------------------------------------------

    @property
    def keeps_owed_replans(self) -> bool:
        return self.batched is not None

    def owed_key(self, shard: str) -> str:
        return f"{self.settings.worker.owed_key_prefix}:{self.store.project}:{shard}"

    def _owed_ops(self, owed: OwedChanges) -> OwedOps:
        ops: dict[str, list[tuple[str, str, int]]] = {}
        for kind, marks in (("o", owed.owed), ("s", owed.settled)):
            for user_id, mark in marks.items():
                ops.setdefault(self.owed_key(mark.shard), []).append(
                    (kind, user_id, mark.revision_us)
                )
        return ops

    def read_owed(self, shards: Sequence[str], limit: int) -> dict[str, OwedMark]:
        """Up to ``limit`` users owed a replan per shard, oldest revision first ({} without
        a record)."""
        if self.batched is None or not shards:
            return {}
        replies = self.batched.read_owed([self.owed_key(shard) for shard in shards], limit)
        return {
            user_id: OwedMark(shard, revision)
            for shard, entries in zip(shards, replies, strict=True)
            for user_id, revision in entries
        }

    def count_owed(self, shards: Sequence[str]) -> int:
        if self.batched is None or not shards:
            return 0
        return self.batched.count_owed([self.owed_key(shard) for shard in shards])

    def read_sequences(self, user_ids: Sequence[str]) -> dict[str, UserClusterSequence]:
        """The stored states of ``user_ids`` (absent: never written); the watched marker
        (:meth:`watch_marker`) is read and verified first, in the same round trip."""
        ids = list(user_ids)
        states: Iterable[UserClusterSequence | None]
        if self.batched is not None:
            probe = self._probe()
            raw = self.batched.read_raw(SEQUENCE_VIEW, STATE_FEATURES, ids, probe)
            self._verify(probe)  # before any state read on a lost store is used
            states = map(state_of, ids, raw)
        else:
            rows = self._read(SEQUENCE_VIEW, STATE_FEATURES, "user_id", ids)
            states = (
                state_from(
                    row["user_id"],
                    _ints(row["recent_clusters"]),
                    row["last_event_id"],
                    row["last_event_time_us"],
                    row["event_count"],
                    row["positive_count"],
                    _ints(row["planned_history"]),
                    _ints(row["planned_window"]),
                    row["planned_at_us"],
                    row["revision_us"],
                )
                for row in rows
            )
        return {state.user_id: state for state in states if state is not None}

    # -- plans -----------------------------------------------------------------------------

    def write_plans(
        self,
        plans: Sequence[ExplorationPlan],
        describe: Callable[[int], str],
        revisions: Mapping[str, int] | None = None,
    ) -> None:
        """Write plans; each is stamped with its user's revision (default: its event time)."""
        if self.batched is not None:
            if plans:  # the whole-row codec (plugin.adapters.feast_rows): one call per plan
                rows = plan_rows(plans, describe, revisions or {})
                self.batched.write_encoded(PLAN_VIEW, PLAN_FEATURES, rows)
            return
        self._write(PLAN_VIEW, self._plan_rows(plans, describe, revisions))

    def _plan_rows(
        self,
        plans: Sequence[ExplorationPlan],
        describe: Callable[[int], str],
        revisions: Mapping[str, int] | None,
    ) -> list[dict[str, Any]]:
        revisions = revisions or {}
        return [
            {
                "user_id": p.user_id,
                "cluster_id": p.cluster_id,
                "description": describe(p.cluster_id),
                "candidates": list(p.candidates),
                "scores": [float(s) for s in p.scores],
                "history": list(p.history),
                "model_version": p.model_version,
                "planned_at_us": to_micros(p.as_of),
                "event_timestamp": from_micros(revisions.get(p.user_id, to_micros(p.as_of))),
            }
            for p in plans
        ]

    def read_plans(self, user_ids: Sequence[str]) -> dict[str, ExplorationPlan]:
        found: dict[str, ExplorationPlan] = {}
        for row in self._read(PLAN_VIEW, PLAN_FEATURES, "user_id", list(user_ids)):
            if row["cluster_id"] is None:
                continue
            found[row["user_id"]] = ExplorationPlan(
                user_id=row["user_id"],
                history=tuple(int(c) for c in row["history"] or ()),
                cluster_id=int(row["cluster_id"]),
                candidates=tuple(int(c) for c in row["candidates"]),
                scores=tuple(float(s) for s in row["scores"]),
                model_version=row["model_version"],
                as_of=from_micros(row["planned_at_us"]),
            )
        return found

    def read_plan_rows(self, user_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Plans as the ranker sees them, descriptions included (None features when absent)."""
        return self._read(PLAN_VIEW, PLAN_FEATURES, "user_id", list(user_ids))

    # -- clusters --------------------------------------------------------------------------

    def write_catalog(self, catalog: ClusterCatalog) -> None:
        # Cluster rows change only with the catalog; stamp them with the write time.
        now = datetime.now(tz=UTC)
        rows = [
            {
                "cluster_id": c.cluster_id,
                "top_items": list(c.top_items),
                "top_titles": [catalog.title(item) for item in c.top_items],
                "description": c.description,
                "summary": c.readable,
                "parent_description": catalog.parents[c.parent_id].description,
                "catalog_version": catalog.version,
                "event_timestamp": now,
            }
            for c in catalog.clusters
        ]
        self._write(CLUSTER_VIEW, rows)

    def read_clusters(self, cluster_ids: Sequence[int]) -> list[dict[str, Any]]:
        return self._read(CLUSTER_VIEW, CLUSTER_FEATURES, "cluster_id", list(cluster_ids))

    # -- feedback aggregates (plugin.core.feedback) ---------------------------------------------

    def add_feedback_aggregates(self, rows: Sequence[FeedbackAggregate]) -> None:
        """Add a batch's per-(history, candidate) counts to the stored ones.

        On Redis the addition is one server-side script per chunk of keys, atomic per key
        (:mod:`plugin.adapters.feedback_counters`); on SQLite, which one embedded process
        writes, it is a read of the stored counts and a write of the sums.
        """
        if self.counters is not None:
            self.counters.add(rows)
            return
        stored = self.read_feedback_aggregates(sorted(row.key for row in rows))
        self.write_feedback_aggregates(merge_aggregates(stored, {row.key: row for row in rows}))

    def write_feedback_aggregates(self, rows: Sequence[FeedbackAggregate]) -> None:
        """Write per-(history, candidate) counts, each stamped with its own revision (a
        rewrite: ``explore refresh`` sets the log's exact counts this way)."""
        self._write(
            FEEDBACK_VIEW,
            [
                {
                    "history_candidate": r.key,
                    "answered": r.answered,
                    "engaged": r.engaged,
                    "engaged_positive": r.engaged_positive,
                    "positive_rate": r.positive_rate,
                    "novel": r.novel,
                    "model_version": r.model_version,
                    "revision_us": r.revision_us,
                    "event_timestamp": from_micros(r.revision_us),
                }
                for r in rows
            ],
        )

    def read_feedback_aggregates(self, keys: Sequence[str]) -> dict[str, FeedbackAggregate]:
        """The stored counts of ``keys`` ('c1,c2>c'); keys never written are absent."""
        found: dict[str, FeedbackAggregate] = {}
        for row in self._read(FEEDBACK_VIEW, FEEDBACK_FEATURES, "history_candidate", list(keys)):
            if row["answered"] is None:
                continue
            found[row["history_candidate"]] = FeedbackAggregate(
                key=row["history_candidate"],
                answered=int(row["answered"]),
                engaged=int(row["engaged"] or 0),
                engaged_positive=int(row["engaged_positive"] or 0),
                novel=int(row["novel"] or 0),
                model_version=row["model_version"] or "",
                revision_us=int(row["revision_us"] or 0),
            )
        return found

    # -- plumbing --------------------------------------------------------------------------

    def _write(self, view: str, rows: list[dict[str, Any]]) -> None:
        if rows and self.batched is not None:
            self.batched.write(view, rows)
        elif rows:
            self.store.write_to_online_store(view, df=pd.DataFrame(rows))

    def _read(
        self, view: str, features: Sequence[str], key: str, keys: list[Any]
    ) -> list[dict[str, Any]]:
        if not keys:
            return []
        if self.batched is not None:
            return self.batched.read(view, features, keys)
        response = self.store.get_online_features(
            features=[f"{view}:{name}" for name in features], entity_rows={key: keys}
        ).to_dict()
        return [{name: response[name][i] for name in (key, *features)} for i in range(len(keys))]


def _ints(values: Iterable[Any] | None) -> tuple[int, ...]:
    return tuple(map(int, values or ()))
