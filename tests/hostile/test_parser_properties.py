"""Property-based tests of validation and of the worker's batch step on arbitrary input.

* The worker's parser never raises, whatever the bytes; an accepted event always meets the
  schema's bounds; a rejection always has a reason with a low-cardinality metric label.
* A valid event survives its wire format unchanged.
* Garbage in a batch changes nothing: the state after a batch of valid events mixed with
  arbitrary messages equals the state after the valid events alone, and every arbitrary
  message is accounted for as accepted or dead-lettered.
"""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugin.adapters.kafka_io import event_payload
from plugin.core.events import (
    MAX_CONTEXT_KEYS,
    MAX_ID_LENGTH,
    EventRejection,
    WatchEvent,
    parse_event,
)
from plugin.observability.metrics import WorkerMetrics, rejection_kind
from plugin.settings import load_settings
from plugin.streaming.deadline import DeadlinePlanner
from plugin.streaming.worker import Record, StreamWorker, parse_record
from plugin.wiring import build_processor
from tests.hostile.test_hostile_events import CATALOG
from tests.support.streaming import MemoryStore, make_planner

NOW = datetime(2026, 1, 1, tzinfo=UTC)
FIELDS = ("event", "event_id", "user_id", "item_id", "event_time", "rating", "watch_ratio")
KINDS = {"not_json", "too_large", "not_object", "key_mismatch", "invalid_other"} | {
    f"invalid_{name}" for name in (*FIELDS, "context")
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
ids = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20)
valid_events = st.builds(
    WatchEvent,
    event_id=ids,
    user_id=ids,
    item_id=st.sampled_from([f"i{c}" for c in range(10)]),
    event_time=st.datetimes(
        min_value=datetime(1990, 1, 1), max_value=datetime(2025, 1, 1), timezones=st.just(UTC)
    ),
    rating=st.none() | st.floats(0, 10),
    watch_ratio=st.floats(0, 10),
    context=st.none() | st.dictionaries(ids, st.text(max_size=30), max_size=3),
)


def check_outcome(result: WatchEvent | EventRejection) -> None:
    """The invariants of any parse result."""
    if isinstance(result, EventRejection):
        assert result.reason
        assert rejection_kind(result.reason) in KINDS, result.reason
        return
    for value in (result.event_id, result.user_id, result.item_id):
        assert 1 <= len(value) <= MAX_ID_LENGTH and value.isascii() and value.isprintable()
        assert " " not in value
    assert result.event_time.tzinfo is not None and result.event_time <= NOW + timedelta(minutes=5)
    assert result.rating is not None or result.watch_ratio is not None
    for number in (result.rating, result.watch_ratio):
        assert number is None or (math.isfinite(number) and 0 <= number <= 10)
    assert result.context is None or len(result.context) <= MAX_CONTEXT_KEYS


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_the_worker_parser_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    check_outcome(parse_record(raw, NOW))


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_parse_event_never_raises_on_arbitrary_json(value: Any) -> None:
    check_outcome(parse_event(json.dumps(value), now=NOW))
    check_outcome(parse_record(json.dumps(value).encode(), NOW))


@settings(max_examples=300, deadline=None)
@given(valid_events, st.sampled_from(sorted(WatchEvent.model_fields)), json_values)
def test_one_corrupted_field_is_accepted_within_bounds_or_rejected_by_name(
    event: WatchEvent, field: str, value: Any
) -> None:
    fields = json.loads(event_payload(event))
    fields[field] = value
    result = parse_record(json.dumps(fields).encode(), NOW)
    check_outcome(result)
    if isinstance(result, EventRejection):
        assert rejection_kind(result.reason) != "invalid_other" or ":" in result.reason


@settings(max_examples=200, deadline=None)
@given(valid_events)
def test_a_valid_event_survives_its_wire_format(event: WatchEvent) -> None:
    parsed = parse_event(event_payload(event), now=NOW)
    assert parsed == event


def test_parse_event_itself_never_raises_on_deep_nesting_or_calendar_edges() -> None:
    for raw in (b"[" * 5000, b'{"event_id": "e", "user_id": "u", "item_id": "i", '
                b'"event_time": "9999-12-31T23:59:59-05:00", "rating": 1}'):  # fmt: skip
        assert isinstance(parse_event(raw, now=NOW), EventRejection)


def new_worker() -> tuple[StreamWorker, MemoryStore]:
    config = load_settings(
        sequence={"history_length": 2, "novelty_window": 4},
        planner={"candidates": 4},
        worker={"metrics_port": 0},
    )
    store = MemoryStore()
    deadline = DeadlinePlanner(PLANNER, 30.0)
    processor = build_processor(config, CATALOG, deadline, store)
    return StreamWorker(processor, CATALOG, config, WorkerMetrics(), deadline), store


PLANNER = make_planner()
messages = st.tuples(st.none() | st.binary(max_size=30), st.none() | st.binary(max_size=200))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)  # fmt: skip
@given(
    st.lists(valid_events, max_size=8),
    st.lists(messages | json_values.map(lambda v: (None, json.dumps(v).encode())), max_size=12),
    st.randoms(use_true_random=False),
)
def test_garbage_in_a_batch_changes_nothing(
    good: list[WatchEvent], garbage: list[tuple[bytes | None, bytes | None]], rng: Any
) -> None:
    def record(offset: int, key: bytes | None, value: bytes | None) -> Record:
        return Record("watch-events", 0, offset, key, value, time.time())

    # Unique ids: two different events with one (time, id) would apply in arrival order.
    good = [e.model_copy(update={"event_id": f"g{i}"}) for i, e in enumerate(good)]
    good_messages = [(e.user_id.encode(), event_payload(e)) for e in good]
    mixed = good_messages + garbage
    rng.shuffle(mixed)

    clean_worker, clean = new_worker()
    clean_worker.handle([record(i, k, v) for i, (k, v) in enumerate(good_messages)])
    dirty_worker, dirty = new_worker()
    report = dirty_worker.handle([record(i, k, v) for i, (k, v) in enumerate(mixed)])

    assert report.accepted + report.rejected == len(mixed)
    letters = [
        m for m in report.outbound if m.topic == dirty_worker.settings.kafka.dead_letter_topic
    ]
    assert len(letters) == report.rejected
    # Hypothesis almost never builds a valid event by chance; if it does, it counts as good.
    if report.accepted == len(good):
        assert dirty.sequences == clean.sequences
        assert dirty.plans == clean.plans
