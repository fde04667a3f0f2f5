"""The worker's feedback loop, given to the processor as its observer when both are built: the
plans it wrote remembered (read only when unknown or changed by another writer), records logged
before the batch's writes and sent with it, nothing twice, aggregates and monitoring kept up."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from plugin.core.catalog import ClusterCatalog
from plugin.core.feedback import FeedbackCollector, FeedbackRecord
from plugin.models.planner import BestOfNPlanner
from plugin.observability.metrics import WorkerMetrics
from plugin.observability.monitoring import FeedbackMonitor
from plugin.settings import Settings
from plugin.streaming.deadline import DeadlinePlanner
from plugin.streaming.worker import Record, StreamWorker
from plugin.wiring import build_processor
from tests.support.streaming import watch


def records(*events: Any, start: int = 0) -> list[Record]:
    now = time.time()
    return [
        Record("watch-events", 0, start + i, e.user_id.encode(), e.model_dump_json().encode(), now)
        for i, e in enumerate(events)
    ]


def make_worker(
    catalog: ClusterCatalog, planner: Any, store: Any, settings: Settings, sink: Any
) -> StreamWorker:
    metrics = WorkerMetrics()
    deadline = DeadlinePlanner(planner, settings.worker.plan_timeout_s, metrics)
    monitor = FeedbackMonitor(len(catalog), 100, metrics.registry)
    collector = FeedbackCollector(
        store, catalog, settings.sequence, settings.data, sink, store, None, monitor
    )
    processor = build_processor(settings, catalog, deadline, store, observer=collector)
    return StreamWorker(processor, catalog, settings, metrics, deadline, feedback=collector)


def feedback_of(report: Any, settings: Settings) -> list[FeedbackRecord]:
    topic = settings.kafka.feedback_topic
    return [
        FeedbackRecord.model_validate_json(m.value) for m in report.outbound if m.topic == topic
    ]


def test_an_answered_plan_becomes_a_record_in_the_log_the_topic_and_the_view(
    catalog: ClusterCatalog,
    best_of_n: BestOfNPlanner,
    store: Any,
    memory_log: Any,
    feedback_settings: Settings,
) -> None:
    w, s = watch, feedback_settings
    worker = make_worker(catalog, best_of_n, store, s, memory_log)
    first = worker.handle(records(w(1, 1), w(2, 2)))
    assert not feedback_of(first, s)  # no plan yet: nothing to answer
    # Users it never planned: their plans are read, after the state read, before the writes.
    assert store.calls == ["read_sequences", "read_plans", "write_plans", "write_sequences"]
    plan = store.plans["u1"]
    store.calls.clear()
    second = worker.handle(records(w(3, plan.cluster_id, rating=1), start=2))
    # The plan it wrote, confirmed by the state read: no plan read at all.
    assert store.calls == ["read_sequences", "write_plans", "write_sequences"]
    (answer,) = feedback_of(second, s)
    assert answer.planned_cluster == plan.cluster_id and answer.accepted and not answer.positive
    assert answer.history == list(plan.history) and answer.model_version == plan.model_version
    assert [m.key for m in second.outbound if m.topic == s.kafka.feedback_topic] == [b"u1"]
    assert memory_log.records == [answer]
    worker.settle()  # the aggregates and the monitor are published in the background
    row = store.aggregates[f"{','.join(map(str, plan.history))}>{plan.cluster_id}"]
    assert (row.answered, row.engaged, row.engaged_positive) == (1, 1, 0)
    metric = worker.metrics.value
    assert metric("explore_feedback_records_total", outcome="accepted_negative") == 1
    assert metric("explore_plan_acceptance_rate") == 0.0
    assert metric("explore_plan_engaged_rate") == 1.0
    assert metric("explore_plan_coverage") == pytest.approx(0.1)
    assert worker.snapshot()["feedback"]["records"] == 1


def test_a_plan_another_writer_changed_is_read_from_the_store(
    catalog: ClusterCatalog,
    best_of_n: BestOfNPlanner,
    store: Any,
    memory_log: Any,
    feedback_settings: Settings,
) -> None:
    w, s = watch, feedback_settings
    worker = make_worker(catalog, best_of_n, store, s, memory_log)
    worker.handle(records(w(1, 1), w(2, 2)))
    ours = store.plans["u1"]
    # A repair, or the worker that held the partition meanwhile, planned u1 again: a newer
    # plan, confirmed by the stored state, that this worker never saw written.
    other = ours.candidates[1]
    theirs = replace(
        ours,
        cluster_id=other,
        candidates=(other, ours.cluster_id, *ours.candidates[2:]),
        as_of=ours.as_of + timedelta(seconds=1),
    )
    store.plans["u1"] = theirs
    state = store.sequences["u1"]
    store.sequences["u1"] = replace(state, planned_at=theirs.as_of)
    store.calls.clear()
    report = worker.handle(records(w(3, theirs.cluster_id), start=2))
    assert store.calls[:2] == ["read_sequences", "read_plans"]
    (answer,) = feedback_of(report, s)
    assert answer.planned_cluster == theirs.cluster_id and answer.accepted
    # A restarted worker remembers nothing: it reads, and finds the same plans.
    again = make_worker(catalog, best_of_n, store, s, memory_log)
    store.calls.clear()
    again.handle(records(w(4, 1), start=3))
    assert "read_plans" in store.calls


def test_a_replayed_batch_sends_and_logs_nothing_again(
    catalog: ClusterCatalog,
    best_of_n: BestOfNPlanner,
    store: Any,
    memory_log: Any,
    feedback_settings: Settings,
) -> None:
    w, s = watch, feedback_settings
    worker = make_worker(catalog, best_of_n, store, s, memory_log)
    worker.handle(records(w(1, 1), w(2, 2)))
    batch = records(w(3, store.plans["u1"].cluster_id), start=2)
    assert len(feedback_of(worker.handle(batch), s)) == 1
    again = worker.handle(batch)  # at-least-once: the same records after a crash
    assert not feedback_of(again, s)
    assert len(memory_log.records) == 1
    worker.settle()
    assert store.aggregates and next(iter(store.aggregates.values())).answered == 1


def test_a_batch_that_fails_after_logging_sends_its_records_once_it_goes_through(
    catalog: ClusterCatalog,
    best_of_n: BestOfNPlanner,
    store: Any,
    memory_log: Any,
    feedback_settings: Settings,
) -> None:
    w, s = watch, feedback_settings
    worker = make_worker(catalog, best_of_n, store, s, memory_log)
    worker.handle(records(w(1, 1), w(2, 2)))
    batch = records(w(3, store.plans["u1"].cluster_id), start=2)
    store.fail_writes = 1
    with pytest.raises(ConnectionError):
        worker.handle(batch)
    # Logged before the failed write: durable even if the process died here.
    assert len(memory_log.records) == 1
    report = worker.handle(batch)  # the agent's retry
    assert len(feedback_of(report, s)) == 1
    assert memory_log.records[0] == memory_log.records[-1]  # logged again, same key: deduped
    worker.settle()
    assert next(iter(store.aggregates.values())).answered == 1
    # The next batch sends only its own answer (to the plan the retry confirmed).
    later = feedback_of(worker.handle(records(w(9, 2), start=3)), s)
    assert [r.event_id for r in later] == ["e0009"]


def test_without_feedback_the_worker_is_unchanged(
    catalog: ClusterCatalog,
    best_of_n: BestOfNPlanner,
    store: Any,
    feedback_settings: Settings,
) -> None:
    w, s = watch, feedback_settings
    metrics = WorkerMetrics()
    processor = build_processor(s, catalog, best_of_n, store)
    worker = StreamWorker(processor, catalog, s, metrics)
    worker.handle(records(w(1, 1), w(2, 2)))
    report = worker.handle(records(w(3, store.plans["u1"].cluster_id), start=2))
    assert not feedback_of(report, s) and "read_plans" not in store.calls
    assert worker.snapshot()["feedback"] is None


def test_a_collector_the_processor_does_not_run_is_refused(
    catalog: ClusterCatalog,
    best_of_n: BestOfNPlanner,
    store: Any,
    memory_log: Any,
    feedback_settings: Settings,
) -> None:
    s = feedback_settings
    collector = FeedbackCollector(store, catalog, s.sequence, s.data, memory_log)
    processor = build_processor(s, catalog, best_of_n, store)  # built without its observer
    with pytest.raises(ValueError, match="observer"):
        StreamWorker(processor, catalog, s, WorkerMetrics(), feedback=collector)
