"""Feast's ``ValueProto`` and protobuf ``Timestamp`` bytes, written by hand.

Why: building a protobuf object per feature per row and serialising it was the largest single
cost of the fast store's write (docs/BENCHMARKS.md). The wire format of these messages is
small and fixed, so each encoder here writes the bytes directly; the tests check them against
``SerializeToString`` of the protobuf objects, value by value, so Feast's standard read path
and ``feast serve`` read them unchanged.

The wire format used (protobuf 3, a ``oneof`` field is always written, even when zero):

* ``Value``: one field per type: ``string_val`` 2, ``int32_val`` 3, ``int64_val`` 4 (varints;
  negative numbers as ten-byte two's complement), ``double_val`` 5 (fixed64), ``float_val`` 6
  (fixed32), ``bool_val`` 7, ``string_list_val`` 12, ``int64_list_val`` 14,
  ``double_list_val`` 15 (length-delimited sub-messages whose field 1 holds the items, packed
  for numbers, omitted when the list is empty);
* ``Timestamp``: ``seconds`` 1 and ``nanos`` 2, varints, each omitted when zero.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

from feast.value_type import ValueType

_MASK64: Final = (1 << 64) - 1
# Varints of small numbers (cluster ids, counts) come from a table: one list index each.
_SMALL: Final = 1 << 14


def _varint_slow(value: int) -> bytes:
    value &= _MASK64  # negative int64: two's complement, ten bytes
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_VARINTS: Final = [_varint_slow(n) for n in range(_SMALL)]
# Any 14 low bits of a longer varint: two bytes, both with the continuation bit. Microsecond
# times (revisions, event times: 8 bytes) are then 4 table lookups instead of 8 shifts.
_CONTINUED: Final = [bytes([(n & 0x7F) | 0x80, (n >> 7) | 0x80]) for n in range(_SMALL)]
_VARINT_OF: Final = dict(enumerate(_VARINTS))
_BITS_28: Final = 1 << 28
_BITS_42: Final = 1 << 42
_BITS_56: Final = 1 << 56
_DOUBLE: Final = struct.Struct("<d").pack


def varint(value: int) -> bytes:
    """The protobuf varint of an int64 (negative values as ten-byte two's complement)."""
    if value < 0:
        return _varint_slow(value)
    # Unrolled by size: Timestamp seconds and nanos fit 28 bits, microsecond times 56.
    if value < _SMALL:
        return _VARINTS[value]
    if value < _BITS_28:
        return _CONTINUED[value & 0x3FFF] + _VARINTS[value >> 14]
    if value < _BITS_42:
        return (
            _CONTINUED[value & 0x3FFF] + _CONTINUED[(value >> 14) & 0x3FFF] + _VARINTS[value >> 28]
        )
    if value < _BITS_56:
        return (
            _CONTINUED[value & 0x3FFF]
            + _CONTINUED[(value >> 14) & 0x3FFF]
            + _CONTINUED[(value >> 28) & 0x3FFF]
            + _VARINTS[value >> 42]
        )
    return _varint_chunks(value)


def _varint_chunks(value: int) -> bytes:
    parts = []
    while value >= _SMALL:
        parts.append(_CONTINUED[value & 0x3FFF])
        value >>= 14
    parts.append(_VARINTS[value])  # not 0: the loop only shifted while bits were left
    return b"".join(parts)


def _delimited(tag: bytes, body: bytes) -> bytes:
    size = len(body)
    return tag + (_VARINTS[size] if size < _SMALL else varint(size)) + body


def _int64(value: Any) -> bytes:
    number = value if type(value) is int else int(value)
    if 0 <= number < _SMALL:
        return b"\x20" + _VARINTS[number]
    return b"\x20" + varint(number)


def _int32(value: Any) -> bytes:
    number = int(value)
    if not -(1 << 31) <= number < 1 << 31:
        raise ValueError(f"{number} does not fit an int32")
    return b"\x18" + varint(number)


def _double(value: Any) -> bytes:
    return b"\x29" + _DOUBLE(float(value))


def _float(value: Any) -> bytes:
    return b"\x35" + struct.pack("<f", float(value))


def _string(value: Any) -> bytes:
    return _delimited(b"\x12", (value if type(value) is str else str(value)).encode("utf-8"))


def _bool(value: Any) -> bytes:
    return b"\x38\x01" if value else b"\x38\x00"


def _int64_list(values: Any) -> bytes:
    # A tuple (the states' and plans' own lists) is walked as it is, like a list.
    items = values if type(values) is list or type(values) is tuple else list(values)
    if not items:
        return b"\x72\x00"
    # Cluster ids and the like: every varint from the table in one C-level pass. A dict, not
    # the list: a negative id or one past the table raises KeyError instead of picking a
    # wrong entry (no min/max pass first); an integral float or a bool finds the entry of its
    # int, as int() would, and any other value goes the long way, where int() rounds it as
    # protobuf's path does.
    try:
        packed = b"".join(map(_VARINT_OF.__getitem__, items))
    except (KeyError, TypeError):
        packed = b"".join([varint(int(v)) for v in items])
    # Both lengths from the table inline: list bodies are far below 2^14 bytes.
    size = len(packed)
    if size + 3 < _SMALL:
        inner = b"\x0a" + _VARINTS[size] + packed
        return b"\x72" + _VARINTS[len(inner)] + inner
    return _delimited(b"\x72", _delimited(b"\x0a", packed))


def _double_list(values: Any) -> bytes:
    items = [float(v) for v in values]
    packed = struct.pack(f"<{len(items)}d", *items)
    return _delimited(b"\x7a", _delimited(b"\x0a", packed) if items else b"")


def _string_list(values: Any) -> bytes:
    body = b"".join([_delimited(b"\x0a", str(v).encode("utf-8")) for v in values])
    return _delimited(b"\x62", body)


# Python value -> serialised ValueProto, per Feast value type (None is handled by the caller:
# Feast writes an empty message, b"").
VALUE_ENCODERS: Final[dict[ValueType, Callable[[Any], bytes]]] = {
    ValueType.INT64: _int64,
    ValueType.INT32: _int32,
    ValueType.DOUBLE: _double,
    ValueType.FLOAT: _float,
    ValueType.STRING: _string,
    ValueType.BOOL: _bool,
    ValueType.INT64_LIST: _int64_list,
    ValueType.DOUBLE_LIST: _double_list,
    ValueType.STRING_LIST: _string_list,
}

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp_parts(moment: datetime) -> tuple[int, int]:
    """``(seconds, nanos)`` of a protobuf ``Timestamp`` for ``moment`` (naive means UTC, as
    ``feast.utils.make_tzaware`` does); nanos are in [0, 1e9) also before 1970."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    seconds, micro = divmod(micros, 1_000_000)
    return seconds, micro * 1000


def timestamp_bytes(seconds: int, nanos: int) -> bytes:
    """A serialised protobuf ``Timestamp`` (zero fields omitted, as protobuf writes them)."""
    out = b"\x08" + varint(seconds) if seconds else b""
    return out + b"\x10" + varint(nanos) if nanos else out


def timestamp_bytes_us(micros: int) -> bytes:
    """:func:`timestamp_bytes` of a time in epoch microseconds (a revision stamp), without a
    datetime in between."""
    seconds, micro = divmod(micros, 1_000_000)
    return timestamp_bytes(seconds, micro * 1000)


def _read_varint(raw: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it (IndexError past the end)."""
    value = shift = 0
    while True:
        byte = raw[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:  # longer than ten bytes: not an int64 (protobuf refuses it)
            raise IndexError("varint too long")


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


class _Unsure(Exception):
    """The bytes are not in the one shape this decoder reads: protobuf must decide."""


def _list_body(raw: bytes) -> bytes:
    """The items field of a list sub-message that is one length-delimited field 1."""
    length, pos = _read_varint(raw, 1)
    if pos + length != len(raw):
        raise _Unsure
    if length == 0:
        return b""
    if raw[pos] != 0x0A:
        raise _Unsure
    inner, start = _read_varint(raw, pos + 1)
    if start + inner != len(raw):
        raise _Unsure  # several fields (unpacked items): protobuf reads those
    return raw[start:]


UNSURE: Final = object()  # what plain_or_unsure returns for bytes protobuf must read


def plain_or_unsure(raw: bytes) -> Any:
    """A serialised ``ValueProto`` of a shape this module reads faster than protobuf's C
    parser (timed per type), as a Python value; :data:`UNSURE` for any other bytes, decided
    by cheap checks first, so the fallback costs no exception."""
    tag = raw[0]
    try:
        if tag == 0x72:  # int64_list_val: one-byte varints only (the whole message ASCII)
            # Longer ones (cluster ids past 127) go to protobuf's C parser: splitting them with
            # a regex and a table measured 6.6 us for 20 ids against its 3.6.
            if raw.isascii():
                return list(_list_body(raw))
        elif tag == 0x12:  # string_val
            length, pos = _read_varint(raw, 1)
            if pos + length == len(raw):
                return raw[pos:].decode("utf-8")
        elif tag == 0x20:  # int64_val: up to three varint bytes (counts, not timestamps)
            if len(raw) <= 4:
                value, pos = _read_varint(raw, 1)
                if pos == len(raw):
                    return _signed(value)
        elif tag == 0x29 and len(raw) == 9:  # double_val
            return struct.unpack_from("<d", raw, 1)[0]
        elif tag == 0x7A:  # double_list_val
            body = _list_body(raw)
            if len(body) % 8 == 0:
                return list(struct.unpack(f"<{len(body) // 8}d", body))
        elif tag == 0x62:  # string_list_val
            length, pos = _read_varint(raw, 1)
            if pos + length == len(raw):
                items = []
                while pos < len(raw):
                    if raw[pos] != 0x0A:
                        return UNSURE
                    size, pos = _read_varint(raw, pos + 1)
                    items.append(raw[pos : pos + size].decode("utf-8"))
                    pos += size
                if pos == len(raw):
                    return items
    except (_Unsure, IndexError, UnicodeDecodeError, struct.error):
        pass
    return UNSURE


def decode_plain(raw: bytes) -> Any:
    """:func:`plain_or_unsure` that raises :class:`ValueError` where protobuf must decide."""
    value = plain_or_unsure(raw)
    if value is UNSURE:
        raise ValueError("not a plain value: protobuf decides")
    return value
