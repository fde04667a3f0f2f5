"""WatchEvent validation: good events parse; bad ones are rejected with a reason naming it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from plugin.core.events import EventRejection, WatchEvent, parse_event

GOOD = {
    "event_id": "e1",
    "user_id": "42",
    "item_id": 7,
    "event_time": "1998-03-01T12:00:00Z",
    "rating": 4,
}


def test_good_event_parses_with_utc_time_and_text_ids() -> None:
    event = parse_event(json.dumps(GOOD))
    assert isinstance(event, WatchEvent)
    assert event.item_id == "7"
    assert event.event_time == datetime(1998, 3, 1, 12, tzinfo=UTC)
    assert event.is_positive(4.0, 0.8)


def test_epoch_seconds_and_offsets_become_utc() -> None:
    epoch = parse_event({**GOOD, "event_time": 888_000_000})
    offset = parse_event({**GOOD, "event_time": "1998-03-01T13:00:00+01:00"})
    assert isinstance(epoch, WatchEvent) and isinstance(offset, WatchEvent)
    assert epoch.event_time == datetime.fromtimestamp(888_000_000, tz=UTC)
    assert offset.event_time == datetime(1998, 3, 1, 12, tzinfo=UTC)


def test_watch_ratio_alone_is_engagement() -> None:
    event = parse_event({k: v for k, v in GOOD.items() if k != "rating"} | {"watch_ratio": 0.9})
    assert isinstance(event, WatchEvent)
    assert event.is_positive(4.0, 0.8)
    assert not event.is_positive(4.0, 0.95)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps({**GOOD, "rating": None}), "needs rating or watch_ratio"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "user_id"}), "user_id: Field required"),
        (json.dumps({**GOOD, "rating": -1}), "rating:"),
        (json.dumps({**GOOD, "rating": "NaN"}), "rating:"),
        (json.dumps({**GOOD, "watch_ratio": 1e9}), "watch_ratio:"),
        (json.dumps({**GOOD, "event_time": "1998-03-01T12:00:00"}), "event_time:"),
        (json.dumps({**GOOD, "event_time": "yesterday"}), "event_time:"),
        (json.dumps({**GOOD, "user_id": "x" * 500}), "user_id:"),
        (json.dumps({**GOOD, "user_id": "a b"}), "user_id:"),
        (json.dumps({**GOOD, "item_id": 1.5}), "item_id: must be a string or an integer"),
        (json.dumps({**GOOD, "user_id": True}), "user_id:"),
        (json.dumps({**GOOD, "surprise": 1}), "surprise: Extra inputs"),
        (json.dumps({**GOOD, "context": {"k": "v" * 1000}}), "context:"),
        (json.dumps({**GOOD, "pad": "x" * 20_000}), "payload larger than"),
    ],
)
def test_bad_events_are_rejected_with_a_reason(payload: bytes | str, reason: str) -> None:
    result = parse_event(payload)
    assert isinstance(result, EventRejection)
    assert reason in result.reason
    assert result.payload  # the raw payload travels with the reason to the dead-letter topic


def test_future_events_are_rejected_only_against_a_clock() -> None:
    future = (datetime.now(tz=UTC) + timedelta(days=1)).isoformat()
    assert isinstance(parse_event({**GOOD, "event_time": future}), WatchEvent)
    rejected = parse_event({**GOOD, "event_time": future}, now=datetime.now(tz=UTC))
    assert isinstance(rejected, EventRejection)
    assert rejected.reason == "event_time: in the future"
