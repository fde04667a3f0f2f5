"""What runs around each batch is given when it is built: the processor's observer hooks, in
their order, and the worker's planners, chained once in ``plugin.wiring``."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from plugin.adapters.plan_cache import CachedPlanner
from plugin.core.catalog import ClusterCatalog
from plugin.core.events import WatchEvent
from plugin.core.frequency import TransitionCounts, TransitionFrequencyPlanner
from plugin.core.fresh import FreshBoostPlanner, FreshTransitions, FreshWindow
from plugin.core.planning import ExplorationPlan, RankingPlanner
from plugin.core.sequence import UserClusterSequence
from plugin.models.planner import BestOfNPlanner
from plugin.settings import Settings, load_settings
from plugin.wiring import build_processor, planner_chain
from tests.support.streaming import MemoryStore, watch


class RecordingObserver:
    """A :class:`~plugin.core.ports.BatchObserver` that notes each call in the store's log."""

    def __init__(self, store: MemoryStore, fail_before_writes: bool = False) -> None:
        self.store = store
        self.fail_before_writes = fail_before_writes
        self.seen_states: list[dict[str, UserClusterSequence]] = []

    def before_read(self, events: Sequence[WatchEvent]) -> None:
        self.store.calls.append("before_read")

    def before_writes(
        self, events: Sequence[WatchEvent], states: Mapping[str, UserClusterSequence]
    ) -> None:
        self.store.calls.append("before_writes")
        self.seen_states.append(dict(states))
        if self.fail_before_writes:
            raise ConnectionError("log down")

    def after_writes(self, events: Sequence[WatchEvent], plans: Sequence[ExplorationPlan]) -> None:
        self.store.calls.append("after_writes")


def test_the_processor_shows_each_batch_to_its_observer_around_its_reads_and_writes(
    catalog: ClusterCatalog, best_of_n: BestOfNPlanner, stream_settings: Settings
) -> None:
    store = MemoryStore()
    observer = RecordingObserver(store)
    processor = build_processor(stream_settings, catalog, best_of_n, store, observer=observer)
    processor.process([watch(1, 1), watch(2, 2)])
    assert store.calls == [
        "before_read",
        "read_sequences",
        "before_writes",
        "write_plans",
        "write_sequences",
        "after_writes",
    ]
    before = store.sequences["u1"]
    store.calls.clear()
    processor.process([watch(3, 5)])
    # The observer sees the states the batch starts from, not the ones it writes.
    assert observer.seen_states == [{}, {"u1": before}]
    assert store.sequences["u1"] != before


class SlowObserver(RecordingObserver):
    """Notes ``before_writes`` only once it is done, after a while: as a log's fsync would."""

    def before_writes(
        self, events: Sequence[WatchEvent], states: Mapping[str, UserClusterSequence]
    ) -> None:
        time.sleep(0.3)
        super().before_writes(events, states)


def test_the_writes_wait_for_an_observer_working_beside_the_core(
    catalog: ClusterCatalog, best_of_n: BestOfNPlanner, stream_settings: Settings
) -> None:
    store = MemoryStore()
    processor = build_processor(
        stream_settings, catalog, best_of_n, store, observer=SlowObserver(store)
    )
    outcome = processor.process([watch(1, 1), watch(2, 2)])
    assert store.calls[2:] == ["before_writes", "write_plans", "write_sequences", "after_writes"]
    assert outcome.timings.plan >= 0.25  # the wait is the plan step's


def test_an_observer_that_fails_before_the_writes_fails_the_batch_before_it_wrote_anything(
    catalog: ClusterCatalog, best_of_n: BestOfNPlanner, stream_settings: Settings
) -> None:
    store = MemoryStore()
    observer = RecordingObserver(store, fail_before_writes=True)
    processor = build_processor(stream_settings, catalog, best_of_n, store, observer=observer)
    with pytest.raises(ConnectionError):
        processor.process([watch(1, 1), watch(2, 2)])
    assert store.calls == ["before_read", "read_sequences", "before_writes"]
    assert not store.sequences and not store.plans


def chain_settings(tmp_path: Path, **sections: Any) -> Settings:
    return load_settings(
        var_dir=tmp_path / "var",
        planner={"candidates": 4},
        worker={"metrics_port": 0, "plan_timeout_s": 3.0},
        **sections,
    )


def fresh_table() -> FreshTransitions:
    return FreshTransitions(FreshWindow(), k=2)


def test_the_chain_is_cache_then_fresh_boost_then_deadline(
    tmp_path: Path, best_of_n: BestOfNPlanner
) -> None:
    settings = chain_settings(tmp_path, feedback={"fresh_weight": 1.0})
    table = fresh_table()
    chain = planner_chain(settings, best_of_n, fresh=table)
    boost = chain.deadline.planner
    assert isinstance(boost, FreshBoostPlanner)
    assert isinstance(chain.cache, CachedPlanner) and boost.planner is chain.cache
    assert chain.cache.planner is best_of_n and boost.table is table
    assert (boost.n, boost.weight) == (4, 1.0)
    assert chain.deadline.timeout_s == 3.0
    assert chain.deadline.model_version == "t+fresh"


def test_without_a_boost_or_a_cache_the_chain_is_shorter(
    tmp_path: Path, best_of_n: BestOfNPlanner
) -> None:
    weightless = planner_chain(chain_settings(tmp_path), best_of_n, fresh=fresh_table())
    assert weightless.cache is not None and weightless.deadline.planner is weightless.cache
    no_table = planner_chain(chain_settings(tmp_path, feedback={"fresh_weight": 1.0}), best_of_n)
    assert no_table.cache is not None and no_table.deadline.planner is no_table.cache
    uncached = planner_chain(
        chain_settings(tmp_path, cache={"enabled": False}, feedback={"fresh_weight": 1.0}),
        best_of_n,
        fresh=fresh_table(),
    )
    assert uncached.cache is None
    boost = uncached.deadline.planner
    assert isinstance(boost, FreshBoostPlanner) and boost.planner is best_of_n


def test_a_planner_without_rankings_gets_neither_the_cache_nor_the_boost(
    tmp_path: Path, catalog: ClusterCatalog
) -> None:
    baseline = TransitionFrequencyPlanner(TransitionCounts(2), catalog, n=2)
    assert not isinstance(baseline, RankingPlanner)
    settings = chain_settings(tmp_path, feedback={"fresh_weight": 1.0})
    chain = planner_chain(settings, baseline, fresh=fresh_table())
    assert chain.cache is None and chain.deadline.planner is baseline
