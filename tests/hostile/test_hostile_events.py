"""The hostile corpus through ``StreamWorker.handle`` with the in-memory store.

Every case is dead-lettered with its reason (duplicates excepted: they are no-ops), the raw
bytes survive in the dead letter, the user's state and plans stay untouched, and the batch
around the bad records goes through.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from plugin.adapters.kafka_io import DeadLetter
from plugin.core.catalog import ClusterCatalog, InterestCluster, ParentCluster
from plugin.core.events import MAX_PAYLOAD_BYTES
from plugin.observability.metrics import WorkerMetrics
from plugin.settings import Settings, load_settings
from plugin.streaming.deadline import DeadlinePlanner
from plugin.streaming.worker import Record, StreamWorker
from plugin.wiring import build_processor
from tests.hostile.corpus import CATEGORIES, HostileCase, Target, category_counts, hostile_cases
from tests.support.streaming import CLUSTERS, MemoryStore, make_planner, watch

CATALOG = ClusterCatalog(
    clusters=tuple(InterestCluster(c, 0, (f"k{c}",), (f"i{c}",), 1) for c in range(CLUSTERS)),
    parents=(ParentCluster(0, ("all",), tuple(range(CLUSTERS))),),
    item_to_cluster={f"i{c}": c for c in range(CLUSTERS)},
)
BASELINE = [watch(1, 1), watch(2, 2), watch(3, 5, user="u2")]
CASES = hostile_cases(Target("u1", "i3", "i4", BASELINE[1], datetime.now(tz=UTC)))


def current_cases() -> list[HostileCase]:
    """The corpus aimed at *now*: its clock-skew cases are relative to the worker's clock,
    and a long suite runs a test many minutes after collection."""
    return hostile_cases(Target("u1", "i3", "i4", BASELINE[1], datetime.now(tz=UTC)))


def settings_for(tmp_path: Any) -> Settings:
    return load_settings(
        var_dir=tmp_path / "var",
        sequence={"history_length": 2, "novelty_window": 4},
        planner={"candidates": 4},
        worker={"metrics_port": 0, "plan_timeout_s": 5.0},
    )


def to_record(offset: int, key: bytes | None, value: bytes | None) -> Record:
    return Record("watch-events", 0, offset, key, value, time.time())


def baseline_worker(tmp_path: Any) -> tuple[StreamWorker, MemoryStore]:
    settings = settings_for(tmp_path)
    store = MemoryStore()
    metrics = WorkerMetrics()
    deadline = DeadlinePlanner(make_planner(), settings.worker.plan_timeout_s, metrics)
    processor = build_processor(settings, CATALOG, deadline, store)
    worker = StreamWorker(processor, CATALOG, settings, metrics, deadline)
    worker.handle(
        [
            to_record(i, e.user_id.encode(), e.model_dump_json().encode())
            for i, e in enumerate(BASELINE)
        ]
    )
    assert store.sequences["u1"].recent_clusters == (2, 1) and "u1" in store.plans
    return worker, store


def letters_of(worker: StreamWorker, outbound: list[Any]) -> list[DeadLetter]:
    topic = worker.settings.kafka.dead_letter_topic
    return [DeadLetter.model_validate_json(m.value) for m in outbound if m.topic == topic]


def test_the_corpus_covers_every_category() -> None:
    counts = category_counts(CASES)
    assert set(counts) == set(CATEGORIES)
    assert all(count >= 1 for count in counts.values())
    assert len(CASES) >= 75
    assert len({case.name for case in CASES}) == len(CASES), "case names are unique"


@pytest.mark.parametrize("name", [case.name for case in CASES])
def test_each_hostile_event_is_dead_lettered_with_its_reason(name: str, tmp_path: Any) -> None:
    (case,) = [case for case in current_cases() if case.name == name]
    worker, store = baseline_worker(tmp_path)
    before = (dict(store.sequences), dict(store.plans))
    report = worker.handle([to_record(10, case.key, case.value)])
    assert (store.sequences, store.plans) == before, "state untouched"
    letters = letters_of(worker, report.outbound)
    if case.reason is None:  # a duplicate: applied as a no-op, nothing sent
        assert report.outbound == []
        assert report.outcome is not None and report.outcome.stats.stale == 1
        return
    assert report.rejected == 1 and len(report.outbound) == len(letters) == 1
    letter = letters[0]
    assert letter.reason.startswith(case.reason), letter.reason
    assert len(letter.reason) < 600
    raw = case.value or b""
    assert letter.raw_payload() == raw[:MAX_PAYLOAD_BYTES]
    assert letter.truncated == (len(raw) > MAX_PAYLOAD_BYTES)
    assert letter.source.offset == 10
    # Bounded whatever came in: the dead letter itself can always be sent.
    assert len(report.outbound[0].value) < 4 * MAX_PAYLOAD_BYTES
    assert len(report.outbound[0].key or b"") <= 256


def test_a_batch_full_of_hostile_events_still_applies_its_good_ones(tmp_path: Any) -> None:
    cases = current_cases()
    worker, store = baseline_worker(tmp_path)
    u1_before = (store.sequences["u1"], store.plans["u1"])
    good = [watch(10 + i, c, user="u3") for i, c in enumerate((3, 4, 6))]
    batch: list[Record] = []
    for index, case in enumerate(cases):
        batch.append(to_record(len(batch), case.key, case.value))
        if index % 25 == 0 and good:
            event = good.pop(0)
            batch.append(to_record(len(batch), b"u3", event.model_dump_json().encode()))
    report = worker.handle(batch)
    hostile = [case for case in cases if case.reason is not None]
    assert report.accepted == 3 + (len(cases) - len(hostile))
    assert report.rejected == len(hostile)
    letters = letters_of(worker, report.outbound)
    assert [
        letter.reason[: len(c.reason or "")] for letter, c in zip(letters, hostile, strict=True)
    ] == [c.reason for c in hostile]
    assert (store.sequences["u1"], store.plans["u1"]) == u1_before
    assert store.sequences["u3"].recent_clusters == (6, 4, 3)
    assert worker.metrics.value("explore_events_in_total") == 3 + len(batch)
    rejected = sum(worker.snapshot()["rejections"].values())
    assert rejected == len(hostile)
    # Unknown items are dead letters now, not silent skips; they count as invalid item ids.
    unknown = [letter for letter in letters if "not in the cluster catalog" in letter.reason]
    assert len(unknown) == sum(case.category == "unknown_item" for case in cases)
    assert worker.metrics.value("explore_rejections_total", reason="invalid_item_id") == sum(
        (case.reason or "").startswith("item_id:") for case in cases
    )
