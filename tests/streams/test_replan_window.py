"""A plan never outlives the novelty window it avoided (found by the fault tests).

A user who follows their plan into cluster Z and then returns to their two old clusters is
back at the planned history. Had the core replanned on history changes only, the stored plan
would still propose Z, a cluster the user has just watched, and which plan survived would
depend on where batch boundaries fell. The core compares the avoided set too
(``plugin/core/sequence.py``, rule *Replan*).
"""

from __future__ import annotations

import time
from pathlib import Path

from plugin.core.events import WatchEvent
from plugin.observability.metrics import WorkerMetrics
from plugin.settings import load_settings
from plugin.streaming.deadline import DeadlinePlanner
from plugin.streaming.worker import Record, StreamWorker
from plugin.wiring import build_processor
from tests.hostile.test_hostile_events import CATALOG
from tests.support.streaming import MemoryStore, make_planner, watch


def records(*events: WatchEvent) -> list[Record]:
    return [
        Record("watch-events", 0, i, e.user_id.encode(), e.model_dump_json().encode(), time.time())
        for i, e in enumerate(events)
    ]


def test_a_plan_never_proposes_a_cluster_the_user_just_watched(tmp_path: Path) -> None:
    settings = load_settings(
        var_dir=tmp_path / "var",
        sequence={"history_length": 2, "novelty_window": 6},
        planner={"candidates": 4},
        worker={"metrics_port": 0},
    )
    store = MemoryStore()
    deadline = DeadlinePlanner(make_planner(), 30.0)
    processor = build_processor(settings, CATALOG, deadline, store)
    worker = StreamWorker(processor, CATALOG, settings, WorkerMetrics(), deadline)
    worker.handle(records(watch(1, 1), watch(2, 2)))
    planned = store.plans["u1"].cluster_id
    assert store.plans["u1"].history == (2, 1)
    # The user follows the plan, then goes back to their old clusters, in one batch.
    worker.handle(records(watch(3, planned), watch(4, 1), watch(5, 2)))
    state, plan = store.sequences["u1"], store.plans["u1"]
    assert state.history(2) == (2, 1) and planned in state.recent_clusters
    assert plan.cluster_id not in state.recent_clusters
    assert plan.history == (2, 1) and state.planned_window == tuple(sorted(state.recent_clusters))
