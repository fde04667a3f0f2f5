"""How the latency bench accounts for each replanning event, and the fetch-wait rule: pure,
no servers. An event with no plan at or after it is repaired, owed none (its user came back to
the state their plan was made for) or lost; only the last is a failure."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from plugin.adapters.kafka_io import ConsumedRecord, PlanUpdate, SourceRecord
from plugin.bench.fetch_wait import best_wait
from plugin.bench.latency import Phase, account
from plugin.bench.machine import idle_cpu_percent, process_cpu_seconds
from plugin.bench.workload import messages
from plugin.core.catalog import ClusterCatalog
from plugin.core.events import WatchEvent
from tests.support.streaming import watch

K, WINDOW = 2, 20
SENT_AT_MS = 1_000_000_000_000  # every event produced at this Kafka time


def consumed(events: list[WatchEvent]) -> list[ConsumedRecord]:
    """The events as read back from one partition, in produce order."""
    return [
        ConsumedRecord(0, offset, key.encode(), value, SENT_AT_MS)
        for offset, (key, value) in enumerate(messages(events))
    ]


def update(
    user: str, history: list[int], trigger: int | None, written_ms: float = 20.0
) -> PlanUpdate:
    """A plan update written ``written_ms`` after the events were sent; ``trigger``: the
    offset of the newest event of the batch that made it (None: the repair loop made it)."""
    source = (
        None
        if trigger is None
        else SourceRecord(topic="events", partition=0, offset=trigger, key=user)
    )
    return PlanUpdate(
        user_id=user,
        cluster_id=9,
        description="c9",
        history=history,
        candidates=[9],
        scores=[1.0],
        model_version="v",
        as_of=datetime(2000, 1, 1, tzinfo=UTC),
        written_at=datetime.fromtimestamp((SENT_AT_MS + written_ms) / 1000, tz=UTC),
        trigger=source,
    )


def run(catalog: ClusterCatalog, events: list[WatchEvent], updates: list[PlanUpdate]) -> Phase:
    phase = Phase("paced", 1000.0, len(events), end_offsets={0: len(events)})
    account(consumed(events), updates, events, catalog, K, WINDOW, [phase])
    return phase


def test_each_replanning_event_is_planned_repaired_owed_none_or_lost(
    catalog: ClusterCatalog,
) -> None:
    # u1 moves 1 -> 2 -> 1 -> 2 (offsets 0-3); the worker planned it after offset 1, then
    # took offsets 2 and 3 in one batch, which brought u1 back to the state of that plan.
    back = [watch(1, 1), watch(2, 2), watch(3, 1), watch(4, 2)]
    phase = run(catalog, back, [update("u1", [1], 0), update("u1", [2, 1], 1)])
    assert (len(phase.latencies_ms), phase.no_plan_owed, phase.unplanned) == (2, 2, 0)
    assert phase.latencies_ms == pytest.approx([20.0, 20.0], abs=0.01)
    # The same moves where the last batch ends elsewhere (cluster 3): a plan was owed.
    lost = [*back[:3], watch(4, 3)]
    phase = run(catalog, lost, [update("u1", [1], 0), update("u1", [2, 1], 1)])
    assert (phase.no_plan_owed, phase.unplanned) == (0, 2)
    # ... unless the repair loop made it afterwards: planned, its latency counted.
    repaired = [update("u1", [1], 0), update("u1", [2, 1], 1), update("u1", [3, 1], None, 900)]
    phase = run(catalog, lost, repaired)
    assert (phase.repaired, phase.unplanned) == (2, 0)
    assert sorted(phase.latencies_ms) == pytest.approx([20.0, 20.0, 900.0, 900.0], abs=0.01)
    row = phase.as_dict()
    assert (row["repaired_events"], row["no_plan_owed_events"], row["unplanned_events"]) == (
        2,
        0,
        0,
    )


def sweep_row(wait: int, feedback: bool, p50: float, unplanned: int = 0) -> dict[str, Any]:
    rates = [{"offered_per_s": 1000.0, "p50_ms": p50, "unplanned_events": unplanned}]
    return {"fetch_max_wait_ms": wait, "feedback_loop": feedback, "rates": rates}


def test_the_default_wait_is_the_longest_whose_median_is_near_the_best() -> None:
    rows = [
        sweep_row(10, True, 80.0),
        sweep_row(25, True, 70.0),
        sweep_row(50, True, 75.0),
        sweep_row(50, True, 90.0),  # its second repeat: a mean of 82.5, past 70 + 10
        sweep_row(100, True, 60.0, unplanned=1),  # a lost plan rules a wait out
        sweep_row(100, False, 20.0),  # the feedback-off rows do not decide
    ]
    assert best_wait(rows, 1000.0) == 25
    assert best_wait(rows, 1000.0, slack_ms=15.0) == 50
    assert best_wait(rows, 5000.0) is None


def test_idle_cpu_tells_a_busy_process_from_a_sleeping_one() -> None:
    before = process_cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    after = process_cpu_seconds(os.getpid())
    assert before is not None and after is not None and after - before >= 0.15
    # This process sleeps while it samples itself: close to nothing.
    idle = idle_cpu_percent({"self": os.getpid()}, 0.3)
    assert idle["self"] is not None and idle["self"] < 20
    assert idle["total"] == idle["self"]
