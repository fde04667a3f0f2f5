"""The watch event: the one input of the processing core, and its strict validation."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

# Bounds on every input size: an id longer than this is hostile, not a real id.
MAX_ID_LENGTH = 128
MAX_CONTEXT_KEYS = 32
MAX_CONTEXT_VALUE_LENGTH = 256
MAX_PAYLOAD_BYTES = 16_384
MAX_WATCH_RATIO = 10.0
# The plausible window of an event time on the live path (``worker.earliest_event_time`` and
# ``worker.max_clock_skew_s`` in the settings default to these). A watch event from before 1990
# is a bug upstream, not history: a zero time, or minutes or hours sent as epoch seconds.
# Clocks drift; an event further ahead of the processing clock than the skew is rejected.
EARLIEST_EVENT_TIME = datetime(1990, 1, 1, tzinfo=UTC)
MAX_CLOCK_SKEW = timedelta(minutes=5)

# Reasons without a field; the ``not JSON`` prefix keeps them under the ``not_json`` metric label.
TOMBSTONE = "not JSON: tombstone"
EMPTY_MESSAGE = "not JSON: empty message"
BYTE_ORDER_MARK = "not JSON: byte-order mark"

# A string pydantic would read as epoch seconds (or milliseconds, past 2e10): a number sent as
# text, which hides an upstream bug and makes the unit a guess.
_NUMBER_IN_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# Byte-order marks of UTF-16 and UTF-32, which ``json.loads`` of bytes would silently decode.
_WIDE_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")

Identifier = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=MAX_ID_LENGTH, pattern=r"^[\x21-\x7e]+$"
    ),
]


class WatchEvent(BaseModel):
    """One user watched one item. ``rating`` and/or ``watch_ratio`` say how it went.

    Every field is strict about its JSON type: ids are strings or integers, ``event_time`` an
    ISO-8601 string with a zone or epoch seconds as a number, scores numbers (never strings or
    booleans), ``context`` strings only.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    event_id: Identifier
    user_id: Identifier
    item_id: Identifier
    event_time: datetime
    # strict: "4" and true are not ratings (lax pydantic would read them as 4.0 and 1.0).
    rating: float | None = Field(None, ge=0, le=10, strict=True)
    watch_ratio: float | None = Field(None, ge=0, le=MAX_WATCH_RATIO, strict=True)
    context: dict[str, str] | None = Field(None, strict=True)

    @field_validator("user_id", "item_id", "event_id", mode="before")
    @classmethod
    def _ids_are_text(cls, value: Any) -> Any:
        # Ids arrive as text or integers; anything else (floats, lists, bools) is a bug upstream.
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ValueError("must be a string or an integer")
        return str(value)

    @field_validator("event_time", mode="before")
    @classmethod
    def _time_is_tz_aware(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be a timestamp")
        if isinstance(value, int | float):
            if not math.isfinite(value):
                raise ValueError("must be a finite epoch time")
            try:
                return datetime.fromtimestamp(value, tz=UTC)
            except (OverflowError, OSError):
                raise ValueError("epoch time out of range") from None
        # An RFC 3339 time has its first "-" at index 4, which no number pydantic would read
        # as epoch seconds has: only other strings pay for the regex.
        if isinstance(value, str) and value[4:5] != "-" and _NUMBER_IN_TEXT.fullmatch(value):
            raise ValueError("epoch seconds must be a JSON number, not a string")
        if isinstance(value, datetime) and value.tzinfo is None:
            raise ValueError("must be timezone-aware")
        return value

    @field_validator("event_time")
    @classmethod
    def _time_in_range(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must be timezone-aware (add Z or an offset)")
        try:
            return value.astimezone(UTC)
        except OverflowError:  # e.g. 9999-12-31T23:59-05:00 is past datetime.max in UTC
            raise ValueError("out of the representable range") from None

    @field_validator("rating", "watch_ratio", mode="before")
    @classmethod
    def _finite(cls, value: Any) -> Any:
        # Before the bounds, so NaN, Infinity and 1e400 (inf once decoded) all say what they are.
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("must be finite")
        return value

    @field_validator("context")
    @classmethod
    def _bounded_context(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        if len(value) > MAX_CONTEXT_KEYS:
            raise ValueError(f"at most {MAX_CONTEXT_KEYS} keys")
        for key, item in value.items():
            if len(key) > MAX_ID_LENGTH or len(item) > MAX_CONTEXT_VALUE_LENGTH:
                raise ValueError(f"key or value too long: {key[:32]!r}")
        return value

    @model_validator(mode="after")
    def _has_engagement(self) -> WatchEvent:
        if self.rating is None and self.watch_ratio is None:
            raise ValueError("needs rating or watch_ratio")
        return self

    def is_positive(self, positive_rating: float, positive_watch_ratio: float) -> bool:
        """Positive engagement: either signal at or above its threshold."""
        if self.rating is not None and self.rating >= positive_rating:
            return True
        return self.watch_ratio is not None and self.watch_ratio >= positive_watch_ratio

    @classmethod
    def trusted(
        cls,
        event_id: str,
        user_id: str,
        item_id: str,
        event_time: datetime,
        rating: float | None,
        watch_ratio: float | None,
    ) -> WatchEvent:
        """An event whose fields were already checked as the validators check them (the
        batch decoder's fast path, ``plugin.core.fast_events``), without ``context``.

        Why not ``model_construct``: it loops over the model's fields with their defaults and
        aliases, about 5 us per event, a third of the fast path's time in the drain. This sets
        the same four attributes it sets for this model (no private attributes, no
        ``model_post_init``, extra fields forbidden: ``tests/core/test_fast_events.py`` holds
        it to ``model_construct``'s result), about 0.9 us.
        """
        event = _new_object(cls)
        _set_attribute(
            event,
            "__dict__",
            {
                "event_id": event_id,
                "user_id": user_id,
                "item_id": item_id,
                "event_time": event_time,
                "rating": rating,
                "watch_ratio": watch_ratio,
                "context": None,
            },
        )
        _set_attribute(event, "__pydantic_fields_set__", set(_EVENT_FIELDS))
        _set_attribute(event, "__pydantic_extra__", None)
        _set_attribute(event, "__pydantic_private__", None)
        return event

    @property
    def order_key(self) -> tuple[datetime, str]:
        """The total order the core applies events in: event time, then event id."""
        return ORDER_KEY(self)


_new_object = object.__new__
_set_attribute = object.__setattr__  # the model is frozen: its own __setattr__ refuses
_EVENT_FIELDS = frozenset(WatchEvent.model_fields)

# WatchEvent.order_key as a sort key: read in C, without a property call per event (the hot
# path sorts every batch by it).
ORDER_KEY = attrgetter("event_time", "event_id")


class EventRejection(BaseModel):
    """Why one raw payload was not accepted; the dead-letter record."""

    model_config = ConfigDict(frozen=True)

    reason: str
    payload: str


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming each failing field: ``rating: must be finite``."""
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "event"
        message = err["msg"].removeprefix("Value error, ")
        parts.append(f"{field}: {message}")
    return "; ".join(parts)


def parse_event(
    payload: bytes | str | dict[str, Any] | None,
    now: datetime | None = None,
    earliest: datetime = EARLIEST_EVENT_TIME,
    max_skew: timedelta = MAX_CLOCK_SKEW,
) -> WatchEvent | EventRejection:
    """Validate one raw event. Never raises: a bad payload becomes an ``EventRejection``.

    ``None`` is a Kafka tombstone. Bytes must be UTF-8 without a byte-order mark, and JSON
    objects must not repeat a key (which value would win is the decoder's choice, and the
    producer meant one of them). ``event_time`` must not be before ``earliest`` (timezone-aware);
    ``now`` enables the check against ``now + max_skew``, and replays of historical data pass
    ``None``.
    """
    if payload is None:
        return EventRejection(reason=TOMBSTONE, payload="")
    if isinstance(payload, bytes | str):
        data = _decode(payload)
        if isinstance(data, EventRejection):
            return data
    else:
        data = payload
    if not isinstance(data, dict):
        return _reject("not a JSON object", payload)
    try:
        event = WatchEvent.model_validate(data)
    except ValidationError as exc:
        return _reject(describe_validation_error(exc), payload)
    if event.event_time < earliest:
        reason = f"event_time: before {_utc_text(earliest)} (the earliest accepted time)"
        return _reject(reason, payload)
    if now is not None and event.event_time > now + max_skew:
        return _reject("event_time: in the future", payload)
    return event


# -- decoding -------------------------------------------------------------------------------


class _DuplicateKeyError(Exception):
    """Raised by the decoder's object hook: an object repeats ``key``."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # The hot path: one dict() and one length check per object.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _DuplicateKeyError(_first_repeat(pairs))
    return obj


class _Repeated(dict[str, Any]):
    """A decoded object that repeats ``key``: the marker the slow path leaves in the tree."""

    key: str = ""


def _marking_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    marked = _Repeated(obj)
    marked.key = _first_repeat(pairs)
    return marked


def _first_repeat(pairs: list[tuple[str, Any]]) -> str:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            return key
        seen.add(key)
    raise AssertionError("no repeated key")  # only called when dict(pairs) lost a pair


# Module-level decoders: json.loads with a hook would build a new decoder for every event.
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)
_MARKING_DECODER = json.JSONDecoder(object_pairs_hook=_marking_repeats)
_MAX_PATH_PART = 64


def _decode(payload: bytes | str) -> Any:
    """The JSON value of a raw payload, or the ``EventRejection`` saying why there is none."""
    size = (
        len(payload)
        if isinstance(payload, bytes)
        else len(payload.encode("utf-8", "surrogatepass"))
    )
    if size > MAX_PAYLOAD_BYTES:
        return _reject(f"payload larger than {MAX_PAYLOAD_BYTES} bytes", payload, limit=1024)
    if size == 0:
        return EventRejection(reason=EMPTY_MESSAGE, payload="")
    if isinstance(payload, bytes):
        # json.loads(bytes) would skip a UTF-8 BOM and guess UTF-16 or UTF-32 from the NUL
        # bytes: the wire format is UTF-8 alone, so a producer that differs is told so.
        if payload.startswith(b"\xef\xbb\xbf"):
            return _reject(BYTE_ORDER_MARK, payload)
        if payload.startswith(_WIDE_BOMS):
            return _reject("not JSON: not UTF-8 (a UTF-16 or UTF-32 byte-order mark)", payload)
        if b"\x00" in payload:  # never in UTF-8 JSON: not whitespace, and escaped in strings
            return _reject("not JSON: not UTF-8 (NUL bytes: UTF-16 or UTF-32?)", payload)
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            return _reject(f"not JSON: not UTF-8 (byte {exc.start}: {exc.reason})", payload)
    else:
        text = payload
        if text.startswith("\ufeff"):
            return _reject(BYTE_ORDER_MARK, payload)
    try:
        return _DECODER.decode(text)
    except RecursionError:
        return _reject("not JSON: nested too deeply", payload, limit=1024)
    except _DuplicateKeyError as exc:
        return _reject(f"{_repeat_path(text, exc.key)}: duplicate key", payload)
    except json.JSONDecodeError as exc:
        return _reject(f"not JSON: {exc}", payload)


def _repeat_path(text: str, key: str) -> str:
    """The dotted path of a repeated key (``context.device``); only rejections pay for it."""
    try:
        tree = _MARKING_DECODER.decode(text)
    except (ValueError, RecursionError):  # broken after the repeat: the key alone
        return _cut(key)
    # Iterative, not recursive: the tree may be as deep as the decoder allows.
    stack: list[tuple[tuple[str, ...], Any]] = [((), tree)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, _Repeated):
            return ".".join(_cut(part) for part in (*path, value.key))
        if isinstance(value, dict):
            stack.extend(((*path, k), v) for k, v in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend(((*path, str(i)), v) for i, v in reversed(list(enumerate(value))))
    return _cut(key)


def _cut(part: str) -> str:
    # A hostile key must not make the reason, and so the dead letter, large.
    return part if len(part) <= _MAX_PATH_PART else part[:_MAX_PATH_PART] + "…"


def _reject(
    reason: str, payload: bytes | str | dict[str, Any], limit: int | None = None
) -> EventRejection:
    # The payload's text is built only here: valid events never pay for it.
    text = _payload_text(payload)
    return EventRejection(reason=reason, payload=text if limit is None else text[:limit])


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _payload_text(payload: bytes | str | dict[str, Any]) -> str:
    if isinstance(payload, bytes):
        return payload.decode("utf-8", errors="replace")
    if isinstance(payload, str):
        return payload
    try:
        return json.dumps(payload, default=str)
    except (TypeError, ValueError):
        return repr(payload)
