"""The batch decoder's fast path accepts only what the strict parser accepts, as the same
event, and leaves every rejection (with its reason) to the strict parser."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugin.adapters.kafka_io import event_payload
from plugin.core.events import EventRejection, WatchEvent, parse_event
from plugin.core.fast_events import fast_event, parse_events
from plugin.data.platform import PlatformShape, PlatformWorkload
from tests.hostile.test_hostile_events import CASES

NOW = datetime(2026, 1, 1, tzinfo=UTC)
GOOD: dict[str, Any] = {
    "event_id": "e1",
    "user_id": "42",
    "item_id": 7,
    "event_time": "1998-03-01T12:00:00Z",
    "rating": 4,
}


def agree(payload: bytes | None, now: datetime | None = NOW) -> WatchEvent | EventRejection:
    """The batch decoder's answer, asserted equal to the strict parser's."""
    (batch,) = parse_events([payload], now=now)
    strict = parse_event(payload, now=now)
    assert batch == strict, payload
    fast = fast_event(payload, now)
    if fast is not None:  # the fast path never accepts what the strict parser rejects
        assert isinstance(strict, WatchEvent) and fast == strict
        assert fast.model_dump() == strict.model_dump()
    return batch


def test_plain_events_take_the_fast_path_and_equal_the_strict_parse() -> None:
    for event_time in ("1998-03-01T12:00:00Z", "1998-03-01T12:00:00.25+00:00", 888_753_600.5):
        payload = json.dumps({**GOOD, "event_time": event_time}).encode()
        assert fast_event(payload, NOW) is not None
        assert isinstance(agree(payload), WatchEvent)
    watch = WatchEvent(
        event_id="e", user_id="u", item_id="i", event_time=NOW, watch_ratio=0.5, rating=None
    )
    assert fast_event(event_payload(watch), NOW) == watch


def test_platform_payloads_all_take_the_fast_path() -> None:
    workload = PlatformWorkload(PlatformShape(users=1000, items=500, clusters=20, parents=2))
    now = datetime(2027, 1, 1, tzinfo=UTC)
    for _, payload in workload.events(500):
        assert fast_event(payload, now) is not None
        agree(payload, now)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_the_hostile_corpus_gets_the_strict_parsers_answer(case: Any) -> None:
    result = agree(case.value, now=datetime.now(tz=UTC))
    if isinstance(result, EventRejection) and case.reason is not None:
        assert result.reason.startswith(case.reason) or case.category in (
            "unknown_item",
            "wrong_key",
        )


@pytest.mark.parametrize(
    "payload",
    [
        # Repeated keys, also spelled with escapes or hidden in values.
        b'{"event_id":"e1","user_id":"42","item_id":"7","event_time":1e9,"rating":4,"rating":5}',
        b'{"event_id":"e1","user_id":"42","item_id":"7","event_time":1e9,"rating":4,'
        b'"r\\u0061ting":5}',
        b'{"event_id":"rating","user_id":"42","item_id":"7","event_time":1e9,"rating":4}',
        b'{"event_id":"e1","user_id":"42","item_id":"7","event_time":1e9,"rating":4,'
        b'"context":{"a":"x","a":"y"}}',
        # Values the strict parser judges: spaces to strip, unicode, numbers as text, bools.
        b'{"event_id":" e1 ","user_id":"42","item_id":"7","event_time":1e9,"rating":4}',
        '{"event_id":"é","user_id":"42","item_id":"7","event_time":1e9,"rating":4}'.encode(),
        b'{"event_id":"e1","user_id":"42","item_id":"7","event_time":"1000000000","rating":4}',
        b'{"event_id":"e1","user_id":true,"item_id":"7","event_time":1e9,"rating":4}',
        b'{"event_id":"e1","user_id":"42","item_id":"7","event_time":1e9,"rating":"4"}',
        b'{"event_id":"e1","user_id":"42","item_id":"7","event_time":1e9,"rating":1e400}',
        b'{"event_id":"e1","user_id":"42","item_id":"7","event_time":1e9,"rating":-0.0}',
        b'{"event_id":"e1","user_id":"42","item_id":"7","event_time":1e9,"rating":10.5}',
        b'{"event_id":"e1","user_id":"42","item_id":"7","event_time":1e9}',
        b'{"event_id":"e1","user_id":"42","item_id":"7","event_time":"1998-02-30T00:00:00Z",'
        b'"rating":4}',
        b'{"event_id":"e1","user_id":"42","item_id":"7","event_time":"1998-03-01T12:00:00",'
        b'"rating":4}',
        b'{"event_id":"e1","user_id":"42","item_id":"7","event_time":1e30,"rating":4}',
        b'{"event_id":"e1","user_id":"42","item_id":"7","event_time":100,"rating":4}',
        b'{"event_id":"e1","user_id":"42","item_id":"7","event_time":2e9,"rating":4}',
        b'{"event_id":1e3,"user_id":"42","item_id":"7","event_time":1e9,"rating":4}',
        b'{"event_id":' + b"9" * 200 + b',"user_id":"4","item_id":"7","event_time":1e9,"rating":4}',
        b'\xef\xbb\xbf{"event_id":"e1","user_id":"42","item_id":"7","event_time":1e9,"rating":4}',
        b'{"event_id":"e1","user_id":"42","item_id":"\xff","event_time":1e9,"rating":4}',
        b'{"event_id":"e1","user_id":"42","item_id":"7","event_time":1e9,"rating":4,"x":1}',
        b"[1, 2]",
        b"",
        None,
    ],
)
def test_odd_payloads_get_the_strict_parsers_answer(payload: bytes | None) -> None:
    agree(payload)


ids = st.one_of(
    st.integers(-(10**140), 10**140),
    st.text(max_size=140),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=130),
    st.booleans(),
    st.none(),
)
numbers = st.one_of(
    st.none(),
    st.integers(-20, 20),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1, max_value=12),
    st.text(max_size=4),
    st.booleans(),
)
times = st.one_of(
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.datetimes(
        min_value=datetime(1970, 1, 2), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ).map(lambda d: d.isoformat().replace("+00:00", "Z")),
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2100, 1, 1)).map(
        lambda d: d.isoformat()
    ),
    st.text(max_size=30),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    event_id=ids,
    user_id=ids,
    item_id=ids,
    event_time=times,
    rating=numbers,
    watch_ratio=numbers,
    drop=st.sets(st.sampled_from(sorted(GOOD))),
    skew=st.integers(-(10**10), 10**10),
)
def test_any_event_shaped_payload_gets_the_strict_parsers_answer(
    event_id: Any,
    user_id: Any,
    item_id: Any,
    event_time: Any,
    rating: Any,
    watch_ratio: Any,
    drop: set[str],
    skew: int,
) -> None:
    fields = {
        "event_id": event_id,
        "user_id": user_id,
        "item_id": item_id,
        "event_time": event_time,
        "rating": rating,
        "watch_ratio": watch_ratio,
    }
    payload = json.dumps({k: v for k, v in fields.items() if k not in drop}).encode()
    agree(payload, now=NOW + timedelta(seconds=skew))


def test_a_trusted_event_is_what_model_construct_makes() -> None:
    when = datetime(2026, 1, 1, 12, tzinfo=UTC)
    trusted = WatchEvent.trusted("e", "u", "i", when, rating=4.5, watch_ratio=None)
    constructed = WatchEvent.model_construct(
        event_id="e",
        user_id="u",
        item_id="i",
        event_time=when,
        rating=4.5,
        watch_ratio=None,
        context=None,
    )
    # What makes the shortcut the same as model_construct for this model.
    assert not WatchEvent.__private_attributes__ and not WatchEvent.__pydantic_post_init__
    for attribute in ("__dict__", "__pydantic_fields_set__", "__pydantic_extra__"):
        assert getattr(trusted, attribute) == getattr(constructed, attribute), attribute
    assert trusted.__pydantic_private__ is None and constructed.__pydantic_private__ is None
    assert trusted == constructed and hash(trusted) == hash(constructed)
    assert trusted.model_dump_json() == constructed.model_dump_json()
    with pytest.raises(ValueError, match="frozen"):
        trusted.rating = 1.0  # type: ignore[misc]
    # Its fields set is its own: changing one event's does not change another's.
    trusted.__pydantic_fields_set__.discard("context")
    assert "context" in WatchEvent.trusted("f", "u", "i", when, 1.0, None).model_fields_set
