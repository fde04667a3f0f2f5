"""A batch decoder for watch events: msgspec for the plain ones, the strict parser for the rest.

Why: validating each payload with ``json`` and pydantic cost 10-14% of the worker's batch
(docs/BENCHMARKS.md). Almost every payload on the wire is plain: the producer's own encoder
wrote it, with the known fields once each and simple values. :func:`parse_events` decodes
such a payload with one typed ``msgspec`` decoder and checks the same rules as
:class:`~plugin.core.events.WatchEvent` in a few comparisons. Anything it is not certain about
goes to :func:`~plugin.core.events.parse_event`, unchanged, so **every rejection and its
reason still come from the strict parser**; the fast path only ever accepts, and only what
the strict parser accepts, to the same event (the differential tests in
``tests/core/test_fast_events.py`` hold it to that).

The fast path is taken only when all of these hold; otherwise the payload goes the slow way:

* bytes, 1 to ``MAX_PAYLOAD_BYTES`` long, with no byte-order mark, no NUL, no backslash (so no
  escape can spell a key twice) and no ``context`` (nested objects keep their own duplicate
  rules);
* it decodes as a JSON object with only the known fields, each at most once (a field's name
  appears once in the text; a value spelling a field name also sends it the slow way);
* ids are integers, or text of 1 to ``MAX_ID_LENGTH`` printable ASCII characters without
  spaces; ``event_time`` a finite number or an RFC 3339 text of the plain form
  ``YYYY-MM-DDTHH:MM:SS[.ffffff](Z|+00:00)``; ``rating`` and ``watch_ratio`` within bounds;
  at least one of them; the time within ``[earliest, now + max_skew]``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

import msgspec

from plugin.core.events import (
    EARLIEST_EVENT_TIME,
    MAX_CLOCK_SKEW,
    MAX_ID_LENGTH,
    MAX_PAYLOAD_BYTES,
    MAX_WATCH_RATIO,
    EventRejection,
    WatchEvent,
    parse_event,
)


class _PlainEvent(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """The wire shape of a plain event; anything else fails to decode (then: the slow path).
    Untracked by the garbage collector (``gc=False``): it holds only text and numbers."""

    event_id: str | int
    user_id: str | int
    item_id: str | int
    event_time: str | float
    rating: float | None = None
    watch_ratio: float | None = None


_DECODER: Final = msgspec.json.Decoder(_PlainEvent)
_FIELDS: Final = tuple(f'"{name}"'.encode() for name in _PlainEvent.__struct_fields__)
# Printable ASCII without space: what Identifier's pattern allows once nothing is stripped.
_PLAIN_ID: Final = re.compile(rf"[\x21-\x7e]{{1,{MAX_ID_LENGTH}}}")
_PLAIN_TIME: Final = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|\+00:00)")
_BAD_START: Final = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")


def _plain_id(value: str | int) -> str | None:
    text = str(value) if type(value) is int else value
    return text if isinstance(text, str) and _PLAIN_ID.fullmatch(text) else None


def _plain_time(value: str | float) -> datetime | None:
    if isinstance(value, str):
        if not _PLAIN_TIME.fullmatch(value):
            return None
        try:
            return datetime.fromisoformat(value).astimezone(UTC)
        except (ValueError, OverflowError):
            return None
    if not math.isfinite(value):
        return None
    try:
        return datetime.fromtimestamp(value, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def fast_event(
    payload: bytes | None,
    now: datetime | None,
    earliest: datetime = EARLIEST_EVENT_TIME,
    max_skew: timedelta = MAX_CLOCK_SKEW,
) -> WatchEvent | None:
    """The event of a plain payload, or None when the strict parser must decide."""
    if (
        type(payload) is not bytes
        or not 0 < len(payload) <= MAX_PAYLOAD_BYTES
        or payload.startswith(_BAD_START)
        or b"\\" in payload
        or b"\x00" in payload
        or b'"context"' in payload
    ):
        return None
    try:
        plain = _DECODER.decode(payload)
    except (msgspec.DecodeError, RecursionError):
        return None
    # Each field's name once in the text: the decoder keeps the last of repeated keys.
    if any(payload.count(name) > 1 for name in _FIELDS):
        return None
    event_id, user_id, item_id = (
        _plain_id(plain.event_id),
        _plain_id(plain.user_id),
        _plain_id(plain.item_id),
    )
    if event_id is None or user_id is None or item_id is None:
        return None
    rating, ratio = plain.rating, plain.watch_ratio
    if rating is None and ratio is None:
        return None
    if rating is not None and not 0 <= rating <= 10:  # NaN fails both comparisons
        return None
    if ratio is not None and not 0 <= ratio <= MAX_WATCH_RATIO:
        return None
    when = _plain_time(plain.event_time)
    if when is None or when < earliest or (now is not None and when > now + max_skew):
        return None
    # Every field checked above as WatchEvent's validators would: no second validation.
    return WatchEvent.trusted(event_id, user_id, item_id, when, rating, ratio)


def parse_events(
    payloads: Sequence[bytes | None],
    now: datetime | None = None,
    earliest: datetime = EARLIEST_EVENT_TIME,
    max_skew: timedelta = MAX_CLOCK_SKEW,
) -> list[WatchEvent | EventRejection]:
    """:func:`~plugin.core.events.parse_event` for a batch, in order: plain payloads through
    :func:`fast_event`, every other one (and every rejection) through the strict parser."""
    out: list[WatchEvent | EventRejection] = []
    for payload in payloads:
        event = fast_event(payload, now, earliest, max_skew)
        out.append(event if event is not None else parse_event(payload, now, earliest, max_skew))
    return out
