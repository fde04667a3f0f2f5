"""The strict parser: each input a lenient JSON parser would accept is dead-lettered by name.

Duplicate keys, byte-order marks, encodings other than UTF-8, numbers sent as text, non-finite
numbers, implausible event times and tombstones. Every test asserts the exact reason.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugin.adapters.kafka_io import event_payload
from plugin.core.events import (
    EARLIEST_EVENT_TIME,
    MAX_CLOCK_SKEW,
    EventRejection,
    WatchEvent,
    parse_event,
)
from plugin.data.datasets import load_movielens_100k
from plugin.observability.metrics import rejection_kind
from plugin.settings import SettingsError, load_settings, settings_environment

NOW = datetime(2026, 1, 1, tzinfo=UTC)
GOOD: dict[str, Any] = {
    "event_id": "e1",
    "user_id": "42",
    "item_id": "7",
    "event_time": "1998-03-01T12:00:00Z",
    "rating": 4,
}
GOOD_TEXT = json.dumps(GOOD)


def reason_of(payload: bytes | str | dict[str, Any] | None, **options: Any) -> str:
    result = parse_event(payload, **({"now": NOW} | options))
    assert isinstance(result, EventRejection), result
    return result.reason


def with_field(name: str, raw_json: str) -> str:
    """GOOD with one field's value spelled as raw JSON text (NaN, 1e400: not json.dumps')."""
    fields = {k: v for k, v in GOOD.items() if k != name}
    return json.dumps(fields)[:-1] + f', "{name}": {raw_json}}}'


def test_the_good_event_parses() -> None:
    assert isinstance(parse_event(GOOD_TEXT, now=NOW), WatchEvent)
    assert isinstance(parse_event(GOOD_TEXT.encode(), now=NOW), WatchEvent)


# -- duplicate keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (GOOD_TEXT[:-1] + ', "user_id": "43"}', "user_id: duplicate key"),
        # The same value twice is still two keys: the producer's encoder is broken.
        (GOOD_TEXT[:-1] + ', "rating": 4}', "rating: duplicate key"),
        (with_field("context", '{"device": "tv", "device": "phone"}'),
         "context.device: duplicate key"),
        (with_field("extra", '[1, {"a": {"b": 1, "b": 2}}]'), "extra.1.a.b: duplicate key"),
        # Broken after the repeat: the path cannot be rebuilt, the key is still named.
        ('{"context": {"device": "tv", "device": "tv"}, "user_id": ', "device: duplicate key"),
        (f'{{"{"k" * 500}": 1, "{"k" * 500}": 2}}', "k" * 64 + "…: duplicate key"),
    ],
)  # fmt: skip
def test_duplicate_keys_are_rejected_at_any_depth(payload: str, reason: str) -> None:
    assert reason_of(payload) == reason
    assert reason_of(payload.encode()) == reason


# -- byte-order marks and encodings -------------------------------------------------------------


def test_a_byte_order_mark_is_rejected() -> None:
    # json.loads(bytes) would skip it silently; json.loads(str) refuses it: now both refuse.
    assert reason_of(b"\xef\xbb\xbf" + GOOD_TEXT.encode()) == "not JSON: byte-order mark"
    assert reason_of("\ufeff" + GOOD_TEXT) == "not JSON: byte-order mark"


@pytest.mark.parametrize(
    ("encoding", "reason"),
    [
        ("utf-16", "not JSON: not UTF-8 (a UTF-16 or UTF-32 byte-order mark)"),
        ("utf-32", "not JSON: not UTF-8 (a UTF-16 or UTF-32 byte-order mark)"),
        ("utf-16-le", "not JSON: not UTF-8 (NUL bytes: UTF-16 or UTF-32?)"),
        ("utf-16-be", "not JSON: not UTF-8 (NUL bytes: UTF-16 or UTF-32?)"),
        ("utf-32-le", "not JSON: not UTF-8 (NUL bytes: UTF-16 or UTF-32?)"),
        ("utf-32-be", "not JSON: not UTF-8 (NUL bytes: UTF-16 or UTF-32?)"),
    ],
)
def test_utf16_and_utf32_are_rejected(encoding: str, reason: str) -> None:
    payload = GOOD_TEXT.encode(encoding)
    assert isinstance(json.loads(payload), dict), "what the stdlib would have accepted"
    assert reason_of(payload) == reason


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff", "invalid start byte"),
        (b"\xc3(", "invalid continuation byte"),
        (b"\xed\xa0\x80", "invalid continuation byte"),  # an encoded surrogate (CESU-8)
        (b"\xe9", "invalid continuation byte"),  # Latin-1 é
    ],
)
def test_bytes_that_are_not_utf8_are_rejected_with_their_position(raw: bytes, reason: str) -> None:
    payload = GOOD_TEXT.replace('"e1"', '"e1@"').encode().replace(b"@", raw)
    position = payload.index(raw)
    assert reason_of(payload) == f"not JSON: not UTF-8 (byte {position}: {reason})"


def test_a_payload_cut_inside_a_character_is_rejected() -> None:
    payload = b'{"event_id": "\xe2\x82'
    assert reason_of(payload) == "not JSON: not UTF-8 (byte 14: unexpected end of data)"


# -- numbers given as strings, and other JSON types ---------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("rating", "4", "rating: Input should be a valid number"),
        ("rating", "4.5", "rating: Input should be a valid number"),
        ("rating", True, "rating: Input should be a valid number"),
        ("watch_ratio", "0.5", "watch_ratio: Input should be a valid number"),
        ("watch_ratio", False, "watch_ratio: Input should be a valid number"),
        ("context", {"device": 1}, "context.device: Input should be a valid string"),
        ("item_id", 7.0, "item_id: must be a string or an integer"),
    ],
)
def test_numbers_and_booleans_are_not_read_from_other_types(
    field: str, value: Any, reason: str
) -> None:
    assert reason_of(json.dumps(GOOD | {field: value})) == reason


EPOCH_AS_TEXT = "event_time: epoch seconds must be a JSON number, not a string"


@pytest.mark.parametrize(
    "text", ["1234567890", "888000000.5", "+888000000", "-5", ".5", "0", "12345678901234", "1e9"]
)
def test_epoch_seconds_given_as_a_string_are_rejected(text: str) -> None:
    # Lax pydantic reads these as epoch seconds, or milliseconds past 2e10: a guessed unit.
    assert reason_of(json.dumps(GOOD | {"event_time": text})) == EPOCH_AS_TEXT


@settings(max_examples=200, deadline=None)
@given(
    st.from_regex(r"\A[+-]?[0-9]{0,14}\.?[0-9]{0,6}\Z").filter(lambda s: any(map(str.isdigit, s)))
)
def test_no_number_in_a_string_is_taken_for_a_time(text: str) -> None:
    assert reason_of(json.dumps(GOOD | {"event_time": text})) == EPOCH_AS_TEXT


def test_documented_forms_are_still_accepted() -> None:
    # docs/DATASETS.md and the wire format: integer ids, epoch seconds as JSON numbers (int or
    # float), ISO-8601 with Z or an offset, integer ratings.
    for fields in (
        GOOD | {"user_id": 42, "item_id": 7},
        GOOD | {"event_time": 888_000_000},
        GOOD | {"event_time": 888_000_000.25},
        GOOD | {"event_time": "1998-03-01T13:00:00+01:00"},
        GOOD | {"rating": 4.5, "watch_ratio": 1},
    ):
        assert isinstance(parse_event(json.dumps(fields), now=NOW), WatchEvent), fields


# -- non-finite numbers ----------------------------------------------------------------------


@pytest.mark.parametrize("field", ["rating", "watch_ratio"])
@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"])
def test_non_finite_scores_say_so(field: str, raw: str) -> None:
    # Before this check, Infinity and 1e400 read as "less than or equal to 10".
    assert reason_of(with_field(field, raw)) == f"{field}: must be finite"
    assert reason_of(GOOD | {field: float(raw)}) == f"{field}: must be finite"


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_epochs_say_so(raw: str) -> None:
    assert reason_of(with_field("event_time", raw)) == "event_time: must be a finite epoch time"


# -- the plausible window of event times -------------------------------------------------------

BEFORE_1990 = "event_time: before 1990-01-01T00:00:00Z (the earliest accepted time)"


@pytest.mark.parametrize(
    "event_time", ["1989-12-31T23:59:59Z", "1990-01-01T00:30:00+01:00", 0, 631_151_999.5, -1]
)
def test_times_before_1990_are_rejected(event_time: str | float) -> None:
    assert reason_of(json.dumps(GOOD | {"event_time": event_time})) == BEFORE_1990
    # The lower bound is absolute: replays without a clock are held to it too.
    assert reason_of(json.dumps(GOOD | {"event_time": event_time}), now=None) == BEFORE_1990


def test_the_window_includes_its_bounds() -> None:
    first = parse_event(json.dumps(GOOD | {"event_time": "1990-01-01T00:00:00Z"}), now=NOW)
    assert isinstance(first, WatchEvent) and first.event_time == EARLIEST_EVENT_TIME
    edge = (NOW + MAX_CLOCK_SKEW).isoformat()
    assert isinstance(parse_event(json.dumps(GOOD | {"event_time": edge}), now=NOW), WatchEvent)
    later = (NOW + MAX_CLOCK_SKEW + timedelta(microseconds=1)).isoformat()
    assert reason_of(json.dumps(GOOD | {"event_time": later})) == "event_time: in the future"


def test_the_window_is_configurable() -> None:
    old = json.dumps(GOOD | {"event_time": "1985-06-01T00:00:00Z"})
    assert isinstance(
        parse_event(old, now=NOW, earliest=datetime(1970, 1, 1, tzinfo=UTC)), WatchEvent
    )
    # A bound given with an offset is named in UTC.
    paris = datetime.fromisoformat("2000-01-01T02:00:00+01:00")
    assert reason_of(GOOD_TEXT, earliest=paris) == (
        "event_time: before 2000-01-01T01:00:00Z (the earliest accepted time)"
    )
    soon = json.dumps(GOOD | {"event_time": (NOW + timedelta(seconds=30)).isoformat()})
    assert isinstance(parse_event(soon, now=NOW), WatchEvent)
    assert reason_of(soon, max_skew=timedelta(seconds=10)) == "event_time: in the future"


def test_the_settings_carry_the_same_window() -> None:
    worker = load_settings().worker
    assert worker.earliest_event_time == EARLIEST_EVENT_TIME
    assert worker.max_clock_skew_s == MAX_CLOCK_SKEW.total_seconds()
    env = settings_environment(load_settings(worker={"earliest_event_time": "1970-01-01T00:00Z"}))
    assert env["EXPLORE_WORKER__EARLIEST_EVENT_TIME"] == "1970-01-01 00:00:00+00:00"
    # What a child worker reads back from that environment is the same bound.
    assert load_settings(
        worker={"earliest_event_time": env["EXPLORE_WORKER__EARLIEST_EVENT_TIME"]}
    ).worker.earliest_event_time == datetime(1970, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"earliest_event_time": "1990-01-01T00:00:00"}, "must be timezone-aware"),
        ({"max_clock_skew_s": -1}, "greater than or equal to 0"),
        ({"max_clock_skew_s": 90_000}, "less than or equal to 86400"),
    ],
)
def test_bad_window_settings_fail_at_start_by_name(override: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(worker=override)
    field = next(iter(override))
    assert f"worker.{field} (EXPLORE_WORKER__{field.upper()})" in str(caught.value)
    assert message in str(caught.value)


@pytest.mark.slow
def test_movielens_replays_parse_inside_the_window() -> None:
    # MovieLens-100K is from 1997-1998: every event survives the wire format and the window.
    events = list(load_movielens_100k().events())
    assert len(events) == 100_000
    assert all(parse_event(event_payload(e), now=NOW) == e for e in events)


# -- tombstones and empty messages -------------------------------------------------------------


def test_a_tombstone_is_not_an_empty_message() -> None:
    tombstone = parse_event(None, now=NOW)
    assert isinstance(tombstone, EventRejection)
    assert (tombstone.reason, tombstone.payload) == ("not JSON: tombstone", "")
    assert reason_of(b"") == "not JSON: empty message"
    assert reason_of("") == "not JSON: empty message"
    assert reason_of(b" ").startswith("not JSON: Expecting value")


# -- every new reason keeps a low-cardinality metric label ---------------------------------------


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (None, "not_json"),
        (b"", "not_json"),
        (b"\xef\xbb\xbf{}", "not_json"),
        (GOOD_TEXT.encode("utf-16"), "not_json"),
        (b"{\xff}", "not_json"),
        (GOOD_TEXT[:-1] + ', "user_id": "43"}', "invalid_user_id"),
        (with_field("context", '{"a": "b", "a": "c"}'), "invalid_context"),
        (with_field("rating", "NaN"), "invalid_rating"),
        (json.dumps(GOOD | {"event_time": "1234567890"}), "invalid_event_time"),
        (json.dumps(GOOD | {"event_time": "1980-01-01T00:00:00Z"}), "invalid_event_time"),
    ],
)
def test_new_reasons_map_to_known_metric_labels(payload: bytes | str | None, kind: str) -> None:
    assert rejection_kind(reason_of(payload)) == kind
