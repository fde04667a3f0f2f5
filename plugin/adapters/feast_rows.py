"""Whole rows of the sequence and plan views: domain objects to stored bytes and back.

Why: the worker writes one state per event and one plan per replan, and reads one state per
event. Going through a dict per row, then a generic encoder or decoder per value chosen by the
value's type at run time, cost the fast store's encode and decode about a quarter of the
drain's batch thread (docs/BENCHMARKS.md). A view's types are fixed, so each row here is one
function call that knows its features: a :class:`UserClusterSequence` or an
:class:`ExplorationPlan` straight to the write script's arguments
(:data:`~plugin.adapters.fast_redis_online_store.EncodedRow`), and a Redis reply straight to a
state. The bytes are those of :mod:`plugin.adapters.feast_value_codec`, the same Feast layout
the generic path writes (the tests compare them), so Feast's read path still reads them.

A stored value of an unexpected shape (another writer's, a null) is read by the generic
decoder (:func:`~plugin.adapters.fast_redis_online_store.decode_value`), never guessed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Final

from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.value_type import ValueType

from plugin.adapters.fast_redis_online_store import EncodedRow, decode_value
from plugin.adapters.feast_value_codec import VALUE_ENCODERS, timestamp_bytes_us
from plugin.core.planning import ExplorationPlan
from plugin.core.sequence import UserClusterSequence, to_micros

_INT64: Final = VALUE_ENCODERS[ValueType.INT64]
_INT64_LIST: Final = VALUE_ENCODERS[ValueType.INT64_LIST]
_DOUBLE_LIST: Final = VALUE_ENCODERS[ValueType.DOUBLE_LIST]
_STRING: Final = VALUE_ENCODERS[ValueType.STRING]
_PARSE: Final = ValueProto.FromString

# The features each codec writes, in the views' order (feature_repo/features.py); the fast
# store checks the order against the view at every write.
SEQUENCE_FEATURES: Final = (
    "recent_clusters",
    "history",
    "last_event_id",
    "last_event_time_us",
    "event_count",
    "positive_count",
    "planned_history",
    "planned_window",
    "planned_at_us",
    "revision_us",
)
# What a state is read back from: every feature but ``history`` (written for the ranker; the
# state derives it from ``recent_clusters``), one value fewer to fetch and decode per user.
STATE_FEATURES: Final = tuple(name for name in SEQUENCE_FEATURES if name != "history")
PLAN_FEATURES: Final = (
    "cluster_id",
    "description",
    "candidates",
    "scores",
    "history",
    "model_version",
    "planned_at_us",
)


def from_micros(micros: int) -> datetime:
    return datetime.fromtimestamp(micros / 1_000_000, tz=UTC)


# -- writing ----------------------------------------------------------------------------------


def sequence_row(state: UserClusterSequence, k: int) -> EncodedRow:
    """A state as the sequence view's row, stamped with its revision (the state must have
    applied an event: ``last_event_time`` set)."""
    assert state.last_event_time is not None, "a state without events is not written"
    recent = state.recent_clusters
    planned_at = state.planned_at
    last_event_us = to_micros(state.last_event_time)
    revision_us = state.revision_us
    last_event = _INT64(last_event_us)
    return (
        state.user_id,
        timestamp_bytes_us(revision_us),
        [
            _INT64_LIST(recent),
            _INT64_LIST(recent[:k]),
            _STRING(state.last_event_id),
            last_event,
            _INT64(state.event_count),
            _INT64(state.positive_count),
            _INT64_LIST(state.planned_history),
            _INT64_LIST(state.planned_window),
            _INT64(to_micros(planned_at) if planned_at is not None else -1),
            # Usually the last event's time (the core moves it on only within a second's
            # ties): its bytes are then already made.
            last_event if revision_us == last_event_us else _INT64(revision_us),
        ],
    )


def plan_rows(
    plans: Sequence[ExplorationPlan],
    describe: Callable[[int], str],
    revisions: Mapping[str, int],
) -> list[EncodedRow]:
    """Plans as the plan view's rows, each stamped with its user's revision (default: the
    plan's event time)."""
    rows: list[EncodedRow] = []
    for plan in plans:
        planned_at = to_micros(plan.as_of)
        rows.append(
            (
                plan.user_id,
                timestamp_bytes_us(revisions.get(plan.user_id, planned_at)),
                [
                    _INT64(plan.cluster_id),
                    _STRING(describe(plan.cluster_id)),
                    _INT64_LIST(plan.candidates),
                    _DOUBLE_LIST(plan.scores),
                    _INT64_LIST(plan.history),
                    _STRING(plan.model_version),
                    _INT64(planned_at),
                ],
            )
        )
    return rows


# -- reading ----------------------------------------------------------------------------------
# Each reader takes the stored bytes of one value of a known type. The expected shape (its
# tag first, its field the one set) is parsed by protobuf's C parser straight to the field,
# without the generic decoder's dispatch; anything else goes to that decoder.


def _ints(raw: bytes | None) -> tuple[int, ...]:
    """An int64 list (``()`` when absent or null)."""
    if raw and raw[0] == 0x72:
        value = _PARSE(raw)
        if value.WhichOneof("val") == "int64_list_val":
            return tuple(value.int64_list_val.val)
    found = decode_value(raw)
    return () if found is None else tuple(map(int, found))


def _int(raw: bytes | None) -> int | None:
    """An int64 (None when absent or null)."""
    if raw and raw[0] == 0x20:
        if len(raw) == 2 and raw[1] < 0x80:  # a count below 128: the byte is the value
            return raw[1]
        value = _PARSE(raw)
        if value.WhichOneof("val") == "int64_val":
            return value.int64_val
    found = decode_value(raw)
    return None if found is None else int(found)


def _text(raw: bytes | None) -> str | None:
    """A string (None when absent or null)."""
    if raw and raw[0] == 0x12 and raw[1] < 0x80 and len(raw) == raw[1] + 2:
        return raw[2:].decode("utf-8")  # one length byte, then the text: nothing else
    found = decode_value(raw)
    return None if found is None else str(found)


def state_of(user_id: str, raw: Sequence[bytes | None]) -> UserClusterSequence | None:
    """The state stored for ``user_id`` from its :data:`STATE_FEATURES` bytes, in that
    order; None when it has none (Redis answers an unknown user with nulls)."""
    (recent, last_id, last_time, events, positives, history, window, planned_at, revision) = raw
    last_event_us = _int(last_time)
    return state_from(
        user_id,
        _ints(recent),
        _text(last_id),
        last_event_us,
        _int(events),
        _int(positives),
        _ints(history),
        _ints(window),
        _int(planned_at),
        # Usually the same bytes as the last event's time (sequence_row): decoded once.
        last_event_us if revision == last_time else _int(revision),
    )


def state_from(
    user_id: str,
    recent_clusters: tuple[int, ...],
    last_event_id: str | None,
    last_event_us: int | None,
    event_count: int | None,
    positive_count: int | None,
    planned_history: tuple[int, ...],
    planned_window: tuple[int, ...],
    planned_at_us: int | None,
    revision_us: int | None,
) -> UserClusterSequence | None:
    """A state from its stored features, decoded (None: null or absent); None when it has
    none: no event time (Redis answers an unknown user with nulls)."""
    if last_event_us is None:
        return None
    return UserClusterSequence(
        user_id=user_id,
        recent_clusters=recent_clusters,
        last_event_time=from_micros(last_event_us),
        last_event_id=last_event_id or "",
        # int(): the SDK's read path may answer numpy integers.
        event_count=int(event_count or 0),
        positive_count=int(positive_count or 0),
        planned_history=planned_history,
        # Absent in states written before it existed: the user is replanned once.
        planned_window=planned_window,
        planned_at=(
            from_micros(planned_at_us) if planned_at_us is not None and planned_at_us >= 0 else None
        ),
        revision_us=int(revision_us or 0),
    )
