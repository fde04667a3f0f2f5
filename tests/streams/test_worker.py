"""The worker's batch logic without Kafka: validation, dead letters, plans, the deadline."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from plugin.adapters.kafka_io import DeadLetter, PlanUpdate
from plugin.core.catalog import ClusterCatalog
from plugin.core.events import WatchEvent
from plugin.core.planning import ExplorationPlan, PlanRequest
from plugin.models.planner import BestOfNPlanner
from plugin.observability.metrics import WorkerMetrics
from plugin.settings import Settings
from plugin.streaming.deadline import DeadlinePlanner
from plugin.streaming.worker import Record, StreamWorker
from plugin.wiring import build_processor


def records(*payloads: tuple[str | None, bytes], start: int = 0) -> list[Record]:
    now = time.time()
    return [
        Record("watch-events", 0, start + i, k.encode() if k else None, v, now)
        for i, (k, v) in enumerate(payloads)
    ]


def payload(event: WatchEvent) -> tuple[str, bytes]:
    return event.user_id, event.model_dump_json().encode()


def make_worker(
    catalog: ClusterCatalog, planner: Any, store: Any, settings: Settings
) -> StreamWorker:
    metrics = WorkerMetrics()
    deadline = DeadlinePlanner(planner, settings.worker.plan_timeout_s, metrics)
    processor = build_processor(settings, catalog, deadline, store)
    return StreamWorker(processor, catalog, settings, metrics, deadline)


def test_valid_events_become_sequences_plans_and_plan_updates(
    catalog: ClusterCatalog,
    best_of_n: BestOfNPlanner,
    store: Any,
    stream_settings: Settings,
    event: Callable[..., WatchEvent],
) -> None:
    worker = make_worker(catalog, best_of_n, store, stream_settings)
    batch = records(*(payload(e) for e in [event(1, 1), event(2, 2), event(3, 5, user="u2")]))
    report = worker.handle(batch)
    assert (report.records, report.accepted, report.rejected) == (3, 3, 0)
    # One read, then plans before the sequences that confirm them.
    assert store.calls == ["read_sequences", "write_plans", "write_sequences"]
    assert store.sequences["u1"].recent_clusters == (2, 1)
    assert store.sequences["u1"].planned_history == (2, 1)
    updates = [PlanUpdate.model_validate_json(m.value) for m in report.outbound]
    assert {u.user_id for u in updates} == {"u1", "u2"}
    by_user = {u.user_id: u for u in updates}
    assert by_user["u1"].cluster_id == store.plans["u1"].cluster_id
    assert by_user["u1"].description == catalog.describe(store.plans["u1"].cluster_id)
    assert by_user["u1"].trigger is not None and by_user["u1"].trigger.offset == 1
    assert all(m.topic == stream_settings.kafka.plans_topic for m in report.outbound)
    assert worker.metrics.value("explore_events_in_total") == 3
    assert worker.metrics.value("explore_plans_written_total") == 2
    assert worker.metrics.plan_latency.count == 3


def test_malformed_events_become_dead_letters_and_the_rest_is_processed(
    catalog: ClusterCatalog,
    best_of_n: BestOfNPlanner,
    store: Any,
    stream_settings: Settings,
    event: Callable[..., WatchEvent],
) -> None:
    worker = make_worker(catalog, best_of_n, store, stream_settings)
    good = payload(event(1, 1))
    wrong_key = ("u9", event(2, 2).model_dump_json().encode())
    batch = records(
        ("u1", b"{not json"),
        good,
        ("u1", b'{"event_id": "x", "user_id": "u1", "item_id": "i1", "event_time": 1}'),
        (None, b"\xff\xfe binary"),
        wrong_key,
    )
    report = worker.handle(batch)
    assert (report.accepted, report.rejected) == (1, 4)
    letters = [
        DeadLetter.model_validate_json(m.value)
        for m in report.outbound
        if m.topic == stream_settings.kafka.dead_letter_topic
    ]
    reasons = [letter.reason for letter in letters]
    assert reasons[0].startswith("not JSON")
    assert reasons[1] == "event: needs rating or watch_ratio"
    assert reasons[2].startswith("not JSON")
    assert reasons[3] == "key: 'u9' does not match user_id 'u1'"
    # The raw payload survives exactly, text or not, with where it came from.
    assert letters[0].payload == "{not json"
    assert letters[2].payload is None and letters[2].raw_payload() == b"\xff\xfe binary"
    assert [letter.source.offset for letter in letters] == [0, 2, 3, 4]
    assert store.sequences["u1"].recent_clusters == (1,)
    metric = worker.metrics.value
    assert metric("explore_rejections_total", reason="not_json") == 2
    assert metric("explore_rejections_total", reason="invalid_event") == 1
    assert metric("explore_rejections_total", reason="key_mismatch") == 1


def test_a_keyless_event_is_dead_lettered_not_applied(
    catalog: ClusterCatalog,
    best_of_n: BestOfNPlanner,
    store: Any,
    stream_settings: Settings,
    event: Callable[..., WatchEvent],
) -> None:
    # The default partitioner scatters keyless records, so another worker may own the user.
    worker = make_worker(catalog, best_of_n, store, stream_settings)
    keyless = (None, event(2, 2).model_dump_json().encode())
    report = worker.handle(records(payload(event(1, 1)), keyless))
    assert (report.accepted, report.rejected) == (1, 1)
    letters = [
        (m.key, DeadLetter.model_validate_json(m.value))
        for m in report.outbound
        if m.topic == stream_settings.kafka.dead_letter_topic
    ]
    assert len(letters) == 1
    key, letter = letters[0]
    assert letter.reason == "key: missing; watch events must be keyed by user_id"
    assert key is None and letter.source.key is None and letter.source.offset == 1
    assert letter.raw_payload() == keyless[1]
    assert store.sequences["u1"].recent_clusters == (1,)
    assert worker.snapshot()["rejections"] == {"key_mismatch": 1}


def test_a_replayed_batch_changes_nothing(
    catalog: ClusterCatalog,
    best_of_n: BestOfNPlanner,
    store: Any,
    stream_settings: Settings,
    event: Callable[..., WatchEvent],
) -> None:
    worker = make_worker(catalog, best_of_n, store, stream_settings)
    batch = records(*(payload(event(n, n % 4)) for n in range(1, 9)))
    worker.handle(batch)
    first = (dict(store.sequences), dict(store.plans))
    again = worker.handle(batch)  # at-least-once: the same records after a crash
    assert again.outcome is not None and again.outcome.stats.stale == 8
    assert (store.sequences, store.plans) == first
    assert not again.outbound


class SlowPlanner:
    """Plans like ``inner`` after ``delay`` seconds, or fails when ``fail`` is set."""

    def __init__(self, inner: BestOfNPlanner, delay: float = 0.0) -> None:
        self.inner = inner
        self.delay = delay
        self.fail = False
        self.calls = 0
        self.release = threading.Event()

    @property
    def model_version(self) -> str:
        return self.inner.model_version

    def plan(self, requests: Sequence[PlanRequest]) -> list[ExplorationPlan]:
        self.calls += 1
        if self.fail:
            raise ConnectionError("planner down")
        self.release.wait(self.delay)
        return self.inner.plan(requests)


def test_a_slow_planner_delays_sequence_writes_by_at_most_the_deadline(
    catalog: ClusterCatalog,
    best_of_n: BestOfNPlanner,
    store: Any,
    stream_settings: Settings,
    event: Callable[..., WatchEvent],
) -> None:
    slow = SlowPlanner(best_of_n, delay=30.0)
    stream_settings.worker.plan_timeout_s = 0.3
    worker = make_worker(catalog, slow, store, stream_settings)
    started = time.perf_counter()
    first = worker.handle(records(payload(event(1, 1)), payload(event(2, 2, user="u2"))))
    assert time.perf_counter() - started < 2.0
    # Sequences advanced, unconfirmed: the replans stay pending.
    assert store.sequences["u1"].recent_clusters == (1,)
    assert store.sequences["u1"].planned_history == ()
    assert not store.plans and not first.outbound
    # While the late call runs, later batches do not wait for the planner at all.
    started = time.perf_counter()
    worker.handle(records(payload(event(3, 3, user="u3")), start=2))
    assert time.perf_counter() - started < 0.25
    assert slow.calls == 1
    assert store.sequences["u3"].recent_clusters == (3,)
    # Once the planner is back, the next event of a pending user gets its plan.
    slow.release.set()
    slow.delay = 0.0
    time.sleep(0.2)
    worker.handle(records(payload(event(4, 1)), start=3))
    assert store.plans["u1"].history == (1,)
    assert store.sequences["u1"].planned_history == (1,)
    metric = worker.metrics.value
    assert metric("explore_replans_deferred_total", why="timeout") == 2
    assert metric("explore_replans_deferred_total", why="busy") == 1


def test_a_failing_planner_leaves_replans_pending(
    catalog: ClusterCatalog,
    best_of_n: BestOfNPlanner,
    store: Any,
    stream_settings: Settings,
    event: Callable[..., WatchEvent],
) -> None:
    failing = SlowPlanner(best_of_n)
    failing.fail = True
    worker = make_worker(catalog, failing, store, stream_settings)
    worker.handle(records(payload(event(1, 1))))
    assert store.sequences["u1"].recent_clusters == (1,) and not store.plans
    failing.fail = False
    # The same event again is stale, but the pending replan is asked for anyway.
    worker.handle(records(payload(event(1, 1))))
    assert store.plans["u1"].history == (1,)
    assert worker.metrics.value("explore_replans_deferred_total", why="error") == 1


def test_a_store_failure_raises_so_the_batch_is_not_acked(
    catalog: ClusterCatalog,
    best_of_n: BestOfNPlanner,
    store: Any,
    stream_settings: Settings,
    event: Callable[..., WatchEvent],
) -> None:
    worker = make_worker(catalog, best_of_n, store, stream_settings)
    store.fail_writes = 1
    batch = records(payload(event(1, 1)), payload(event(2, 2)))
    with pytest.raises(ConnectionError):
        worker.handle(batch)
    report = worker.handle(batch)  # the agent's retry
    assert report.accepted == 2
    assert store.sequences["u1"].recent_clusters == (2, 1)
    assert store.sequences["u1"].planned_history == (2, 1)


def test_snapshot_reports_throughput_latency_and_totals(
    catalog: ClusterCatalog,
    best_of_n: BestOfNPlanner,
    store: Any,
    stream_settings: Settings,
    event: Callable[..., WatchEvent],
    tmp_path: Any,
) -> None:
    worker = make_worker(catalog, best_of_n, store, stream_settings)
    worker.handle(records(payload(event(1, 1)), ("u1", b"nope")))
    path = tmp_path / "stats.json"
    worker.write_stats(path)
    summary = worker.snapshot()
    assert summary["events"] == 2 and summary["rejected"] == 1
    assert summary["rejections"] == {"not_json": 1}
    assert summary["event_to_plan"]["count"] == 1
    assert summary["plans"] == 1 and summary["planned_users"] == 1
    assert path.exists()
