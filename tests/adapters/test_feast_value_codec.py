"""The hand-written Feast value bytes equal protobuf's own, value by value."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from feast.value_type import ValueType
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from plugin.adapters.fast_redis_online_store import _decode_proto, decode_value, encode_value
from plugin.adapters.feast_value_codec import (
    VALUE_ENCODERS,
    _varint_slow,
    decode_plain,
    timestamp_bytes,
    timestamp_parts,
    varint,
)

INT64_EDGES = [0, 1, 127, 128, 16_383, 16_384, 2**31, 2**63 - 1, -1, -(2**63), -300]
CASES: list[tuple[ValueType, Any]] = [
    *((ValueType.INT64, v) for v in INT64_EDGES),
    *((ValueType.INT32, v) for v in (0, 5, -1, 2**31 - 1, -(2**31))),
    *((ValueType.DOUBLE, v) for v in (0.0, -0.0, 1e-9, -2.5, 1e308, math.inf, 7)),
    *((ValueType.FLOAT, v) for v in (0.0, 0.1, -3.5)),
    *((ValueType.STRING, v) for v in ("", "a", "é日本", "x" * 300)),
    *((ValueType.BOOL, v) for v in (True, False)),
    *((ValueType.INT64_LIST, v) for v in ([], [0], [3, 1, 499], INT64_EDGES, list(range(200)))),
    *((ValueType.DOUBLE_LIST, v) for v in ([], [2.5, -0.125, 1e-9], [0.0] * 40)),
    *((ValueType.STRING_LIST, v) for v in ([], [""], ["i2", "j2"], ["é" * 200, "b"])),
]


@pytest.mark.parametrize(("value_type", "value"), CASES)
def test_every_encoder_writes_protobufs_bytes(value_type: ValueType, value: Any) -> None:
    ours = VALUE_ENCODERS[value_type](value)
    assert ours == encode_value(value, value_type).SerializeToString()
    decoded = decode_value(ours)
    if value_type in (ValueType.FLOAT,):
        assert decoded == pytest.approx(value)
    elif value_type == ValueType.INT64_LIST or value_type == ValueType.STRING_LIST:
        assert decoded == list(value)
    else:
        assert decoded == value


def test_random_int64_lists_and_varints_match_protobuf() -> None:
    rng = random.Random(15)
    for _ in range(500):
        values = [rng.randint(-(2**63), 2**63 - 1) >> rng.randint(0, 63) for _ in range(20)]
        assert VALUE_ENCODERS[ValueType.INT64_LIST](values) == (
            encode_value(values, ValueType.INT64_LIST).SerializeToString()
        )
    assert varint(300) == b"\xac\x02"


def test_an_int32_out_of_range_is_refused_as_protobuf_would() -> None:
    with pytest.raises(ValueError, match="int32"):
        VALUE_ENCODERS[ValueType.INT32](2**31)


@pytest.mark.parametrize(
    "moment",
    [
        datetime(1998, 1, 1, tzinfo=UTC),
        datetime(2026, 12, 6, 8, 59, 1, 123456, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1969, 7, 20, 20, 17, 0, 500000, tzinfo=UTC),
        datetime(1900, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        datetime(2030, 1, 1, 1, tzinfo=UTC) + timedelta(microseconds=1),
        datetime(2020, 1, 1),  # naive: UTC, as Feast reads it
    ],
)
def test_timestamps_match_protobufs_from_datetime(moment: datetime) -> None:
    stamp = Timestamp()
    stamp.FromDatetime(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
    seconds, nanos = timestamp_parts(moment)
    assert (seconds, nanos) == (stamp.seconds, stamp.nanos)
    assert timestamp_bytes(seconds, nanos) == stamp.SerializeToString()


@pytest.mark.parametrize(("value_type", "value"), CASES)
def test_the_hand_decoder_reads_what_protobuf_reads(value_type: ValueType, value: Any) -> None:
    raw = VALUE_ENCODERS[value_type](value)
    assert decode_value(raw) == _decode_proto(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"r\x04\x08\x01\x08\x02",  # an int64 list written unpacked: protobuf reads it
        b"r\x06\n\x02\x01\x02\x08\x03",  # packed, then one more item unpacked
        b" \x01\x12\x01a",  # two oneof fields: the last wins
        b"\x98\x01\x00",  # null_val
        b"\x18\x05",  # int32
        b"8\x01",  # bool
    ],
)
def test_other_shapes_go_to_protobuf(raw: bytes) -> None:
    with pytest.raises(ValueError):
        decode_plain(raw)
    assert decode_value(raw) == _decode_proto(raw)


def test_an_eleven_byte_varint_is_refused_as_protobuf_refuses_it() -> None:
    raw = b" " + b"\xff" * 10 + b"\x01"
    with pytest.raises(ValueError):
        decode_plain(raw)
    with pytest.raises(DecodeError):
        decode_value(raw)


def test_random_bytes_decode_as_protobuf_decodes_them() -> None:
    rng = random.Random(16)
    prefixes = [b"r", b"\x12", b" ", b")", b"z", b"b"]
    for _ in range(3000):
        raw = rng.choice(prefixes) + bytes(rng.randrange(256) for _ in range(rng.randrange(12)))
        try:
            expected: Any = _decode_proto(raw)
        except Exception as exc:  # protobuf refuses it: so must the store's read
            with pytest.raises(type(exc)):
                decode_value(raw)
            continue
        got = decode_value(raw)
        if isinstance(expected, float) and math.isnan(expected):
            assert math.isnan(got)
        else:
            assert got == expected, raw


def test_long_varints_from_the_tables_equal_the_bit_by_bit_ones() -> None:
    rng = random.Random(17)
    # Microsecond times, revisions and every power-of-two edge of the 14-bit chunks.
    values = [rng.randrange(2**63) >> rng.randrange(63) for _ in range(3000)]
    values += [2**k + d for k in range(64) for d in (-1, 0, 1) if 0 <= 2**k + d < 2**63]
    for value in values:
        assert varint(value) == _varint_slow(value), value


@pytest.mark.parametrize(
    "clusters", [[128, 499, 0, 16_383], [300] * 20, [127, 128], list(range(100, 600, 7))]
)
def test_cluster_ids_past_127_are_left_to_protobuf(clusters: list[int]) -> None:
    raw = VALUE_ENCODERS[ValueType.INT64_LIST](clusters)
    with pytest.raises(ValueError):  # two-byte varints: protobuf's C parser is faster
        decode_plain(raw)
    assert decode_value(raw) == clusters


@pytest.mark.parametrize(
    "values",
    [[3.0, True, 2.7, 499], [np.int64(5), np.int64(300)], [-1, 5], [16_384, 1], [np.float64(7.0)]],
)
def test_int64_lists_of_other_number_types_encode_as_protobuf_does(values: list[Any]) -> None:
    # The table lookup must find exactly what int() then protobuf would write.
    assert VALUE_ENCODERS[ValueType.INT64_LIST](values) == (
        encode_value(values, ValueType.INT64_LIST).SerializeToString()
    )
