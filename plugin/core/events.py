"""The watch event: the one input of the processing core, and its strict validation."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
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
# Clocks drift; an event this far in the future of the processing clock is rejected.
MAX_CLOCK_SKEW = timedelta(minutes=5)

Identifier = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=MAX_ID_LENGTH, pattern=r"^[\x21-\x7e]+$"
    ),
]


class WatchEvent(BaseModel):
    """One user watched one item. ``rating`` and/or ``watch_ratio`` say how it went."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    event_id: Identifier
    user_id: Identifier
    item_id: Identifier
    event_time: datetime
    rating: float | None = Field(None, ge=0, le=10)
    watch_ratio: float | None = Field(None, ge=0, le=MAX_WATCH_RATIO)
    context: dict[str, str] | None = None

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

    @field_validator("rating", "watch_ratio")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
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

    @property
    def order_key(self) -> tuple[datetime, str]:
        """The total order the core applies events in: event time, then event id."""
        return (self.event_time, self.event_id)


class EventRejection(BaseModel):
    """Why one raw payload was not accepted; the dead-letter record."""

    model_config = ConfigDict(frozen=True)

    reason: str
    payload: str


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming each failing field: ``rating: must be a finite number``."""
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "event"
        message = err["msg"].removeprefix("Value error, ")
        parts.append(f"{field}: {message}")
    return "; ".join(parts)


def parse_event(
    payload: bytes | str | dict[str, Any], now: datetime | None = None
) -> WatchEvent | EventRejection:
    """Validate one raw event. Never raises: a bad payload becomes an ``EventRejection``.

    ``now`` enables the future-time check; replays of historical data pass ``None``.
    """
    raw_text = _payload_text(payload)
    if isinstance(payload, bytes | str):
        if len(raw_text.encode("utf-8", "surrogatepass")) > MAX_PAYLOAD_BYTES:
            return EventRejection(
                reason=f"payload larger than {MAX_PAYLOAD_BYTES} bytes", payload=raw_text[:1024]
            )
        try:
            data = json.loads(payload)
        except RecursionError:
            return EventRejection(reason="not JSON: nested too deeply", payload=raw_text[:1024])
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return EventRejection(reason=f"not JSON: {exc}", payload=raw_text)
    else:
        data = payload
    if not isinstance(data, dict):
        return EventRejection(reason="not a JSON object", payload=raw_text)
    try:
        event = WatchEvent.model_validate(data)
    except ValidationError as exc:
        return EventRejection(reason=describe_validation_error(exc), payload=raw_text)
    if now is not None and event.event_time > now + MAX_CLOCK_SKEW:
        return EventRejection(reason="event_time: in the future", payload=raw_text)
    return event


def _payload_text(payload: bytes | str | dict[str, Any]) -> str:
    if isinstance(payload, bytes):
        return payload.decode("utf-8", errors="replace")
    if isinstance(payload, str):
        return payload
    try:
        return json.dumps(payload, default=str)
    except (TypeError, ValueError):
        return repr(payload)
