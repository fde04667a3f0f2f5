"""The whole-row codec writes the generic path's bytes and reads every shape back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

from plugin.adapters.fast_redis_online_store import FastRedisOnlineStore, encode_value
from plugin.adapters.feast_rows import (
    PLAN_FEATURES,
    SEQUENCE_FEATURES,
    STATE_FEATURES,
    plan_rows,
    sequence_row,
    state_of,
)
from plugin.adapters.feast_store import load_definitions
from plugin.core.planning import ExplorationPlan
from plugin.core.sequence import UserClusterSequence, to_micros
from plugin.settings import Settings

T0 = datetime(2026, 12, 6, 12, 0, 0, 123456, tzinfo=UTC)
SEQUENCE_TYPES = {
    "recent_clusters": ValueType.INT64_LIST,
    "history": ValueType.INT64_LIST,
    "last_event_id": ValueType.STRING,
    "last_event_time_us": ValueType.INT64,
    "event_count": ValueType.INT64,
    "positive_count": ValueType.INT64,
    "planned_history": ValueType.INT64_LIST,
    "planned_window": ValueType.INT64_LIST,
    "planned_at_us": ValueType.INT64,
    "revision_us": ValueType.INT64,
}
PLAN_TYPES = {
    "cluster_id": ValueType.INT64,
    "description": ValueType.STRING,
    "candidates": ValueType.INT64_LIST,
    "scores": ValueType.DOUBLE_LIST,
    "history": ValueType.INT64_LIST,
    "model_version": ValueType.STRING,
    "planned_at_us": ValueType.INT64,
}


def states() -> list[UserClusterSequence]:
    recent = (499, 3, 128, 127, 16_000, 0)
    return [
        UserClusterSequence(
            user_id="u1",
            recent_clusters=recent,
            last_event_time=T0,
            last_event_id="e-é" + "x" * 200,  # a two-byte length: the generic reader's case
            event_count=300,
            positive_count=5,
            planned_history=recent[:2],
            planned_window=tuple(sorted(recent)),
            planned_at=T0 - timedelta(seconds=30),
            revision_us=to_micros(T0) + 2,
        ),
        # Never planned (planned_at -1), no lists, before 1970.
        UserClusterSequence(
            user_id="u2",
            recent_clusters=(7,),
            last_event_time=datetime(1969, 7, 20, 20, 17, tzinfo=UTC),
            last_event_id="e2",
            event_count=1,
            revision_us=to_micros(datetime(1969, 7, 20, 20, 17, tzinfo=UTC)),
        ),
    ]


def generic(value: Any, value_type: ValueType) -> bytes:
    return encode_value(value, value_type).SerializeToString()


def stamp(micros: int) -> bytes:
    seconds, micro = divmod(micros, 1_000_000)
    return Timestamp(seconds=seconds, nanos=micro * 1000).SerializeToString()


def test_a_state_row_holds_protobufs_bytes_for_every_feature() -> None:
    for state in states():
        user_id, timestamp, values = sequence_row(state, k=2)
        assert user_id == state.user_id
        assert timestamp == stamp(state.revision_us)
        expected = {
            "recent_clusters": list(state.recent_clusters),
            "history": list(state.recent_clusters[:2]),
            "last_event_id": state.last_event_id,
            "last_event_time_us": to_micros(state.last_event_time or T0),
            "event_count": state.event_count,
            "positive_count": state.positive_count,
            "planned_history": list(state.planned_history),
            "planned_window": list(state.planned_window),
            "planned_at_us": to_micros(state.planned_at) if state.planned_at else -1,
            "revision_us": state.revision_us,
        }
        assert values == [generic(expected[n], SEQUENCE_TYPES[n]) for n in SEQUENCE_FEATURES]


def test_a_state_reads_back_from_its_row() -> None:
    for state in states():
        _, _, values = sequence_row(state, k=2)
        stored = dict(zip(SEQUENCE_FEATURES, values, strict=True))
        assert state_of(state.user_id, [stored[n] for n in STATE_FEATURES]) == state


def test_nulls_and_other_shapes_go_through_the_generic_decoder() -> None:
    state = states()[0]
    _, _, values = sequence_row(state, k=2)
    stored: dict[str, bytes | None] = dict(zip(SEQUENCE_FEATURES, values, strict=True))
    # Unknown user: Redis answers nulls for every field.
    assert state_of("nobody", [None] * len(STATE_FEATURES)) is None
    # A state written before planned_window existed, and null counts.
    stored.update(planned_window=None, event_count=b"", positive_count=None)
    # An int64 list written unpacked (valid protobuf, not what Feast writes), and a count
    # stored as an int32 value.
    stored["planned_history"] = b"\x72\x05\x08\xf3\x03\x08\x03"
    assert ValueProto.FromString(stored["planned_history"]).int64_list_val.val == [499, 3]
    stored["revision_us"] = ValueProto(int32_val=77).SerializeToString()
    read = state_of(state.user_id, [stored[n] for n in STATE_FEATURES])
    assert read is not None
    assert read.planned_window == ()
    assert (read.event_count, read.positive_count) == (0, 0)
    assert read.planned_history == (499, 3)
    assert read.revision_us == 77
    assert read.recent_clusters == state.recent_clusters


def test_a_plan_row_holds_protobufs_bytes_for_every_feature() -> None:
    plan = ExplorationPlan(
        user_id="u1",
        history=(3, 499),
        cluster_id=130,
        candidates=(130, 5, 16_001),
        scores=(0.5, -1.25, 1e-9),
        model_version="best-of-n-v2",
        as_of=T0,
    )
    revision = to_micros(T0) + 7
    for revisions, micros in (({"u1": revision}, revision), ({}, to_micros(T0))):
        ((user_id, timestamp, values),) = plan_rows([plan], lambda c: f"topic {c}", revisions)
        assert (user_id, timestamp) == ("u1", stamp(micros))
        expected = {
            "cluster_id": 130,
            "description": "topic 130",
            "candidates": [130, 5, 16_001],
            "scores": [0.5, -1.25, 1e-9],
            "history": [3, 499],
            "model_version": "best-of-n-v2",
            "planned_at_us": to_micros(T0),
        }
        assert values == [generic(expected[n], PLAN_TYPES[n]) for n in PLAN_FEATURES]


def test_encoded_rows_must_name_the_views_features_in_order() -> None:
    definitions = load_definitions(Settings().feast.repo_path)
    view = definitions.user_cluster_sequence
    FastRedisOnlineStore._check_features(view, SEQUENCE_FEATURES)
    assert [f.name for f in view.features] == list(SEQUENCE_FEATURES)
    assert [f.name for f in definitions.exploration_plan.features] == list(PLAN_FEATURES)
    with pytest.raises(ValueError, match="user_cluster_sequence: encoded rows must hold every"):
        FastRedisOnlineStore._check_features(view, STATE_FEATURES)
