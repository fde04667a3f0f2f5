"""Atomic increments of the online ``feedback_aggregates`` view on Redis.

Several workers answer plans of the same (history, planned cluster) key. A read of the stored
counts followed by a write of their sum loses one worker's increments whenever two batches
interleave (measured before this module: 464 and 500 increments lost in two of 11 rounds).
Here each increment is one Lua script call on the Redis server, which runs it alone: it
decodes the stored counts from Feast's own encoding, adds the batch's, and writes the new
values back in that encoding, with a newer ``_ts`` stamp. No second copy of the counts is
kept, so Feast's standard read path (``get_online_features``, ``feast serve``) and
:meth:`~plugin.adapters.feast_store.FeastStore.read_feedback_aggregates` read the result
unchanged, and a rewrite from the log (``explore refresh``) is picked up by the next increment.

The bytes written are the ones Feast's SDK writes for the summed row (protobuf ``Value``:
``int64_val`` field 4 varint, ``double_val`` field 5 little-endian double, ``string_val``
field 2; the stamp a protobuf ``Timestamp``); ``tests/adapters/test_feedback_counters.py``
compares them byte for byte with the SDK path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from feast import FeatureStore
from feast.infra.online_stores.helpers import _mmh3
from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig, RedisType
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from plugin.adapters.fast_redis_online_store import online_store_of
from plugin.core.feedback import FeedbackAggregate

VIEW: Final = "feedback_aggregates"
ENTITY: Final = "history_candidate"
# The view's features in the order the script takes their fields (features.py).
COUNTS: Final = ("answered", "engaged", "engaged_positive", "novel")
_FIELDS: Final = (*COUNTS, "positive_rate", "model_version", "revision_us")
# Keys per script call: bounds how long one call holds the server.
_KEYS_PER_CALL = 1000

# KEYS: the aggregates' entity hashes. ARGV: the ts field, the TTL (0: none), the fields of
# answered, engaged, engaged_positive, novel, positive_rate, model_version, revision_us; then
# per key: the four count increments, the serialised model_version Value ('' keeps the
# stored one) and the batch's revision. Counts and revisions are non-negative and below 2^53,
# exact in Lua's doubles. A stored int64 Value is field 4 (tag 32) with a varint.
_ADD_SCRIPT = """
local function varint(s, pos)
  local value, scale = 0, 1
  while true do
    local byte = string.byte(s, pos)
    if byte == nil then return value, pos end
    pos = pos + 1
    value = value + (byte % 128) * scale
    scale = scale * 128
    if byte < 128 then return value, pos end
  end
end
local function int64(raw)
  if not raw or #raw == 0 then return 0 end
  if string.byte(raw, 1) ~= 32 then return 0 end
  local value = varint(raw, 2)
  return value
end
local function encode_varint(n)
  local out = {}
  repeat
    local low = n % 128
    n = (n - low) / 128
    if n > 0 then low = low + 128 end
    out[#out + 1] = string.char(low)
  until n == 0
  return table.concat(out)
end
local function stamp_micros(raw)
  local seconds, nanos, pos = 0, 0, 1
  if not raw then return 0 end
  while pos <= #raw do
    local tag, value
    tag, pos = varint(raw, pos)
    value, pos = varint(raw, pos)
    if tag == 8 then seconds = value elseif tag == 16 then nanos = value end
  end
  return seconds * 1000000 + math.floor(nanos / 1000)
end
local function timestamp(micros)
  local seconds = math.floor(micros / 1000000)
  local nanos = (micros - seconds * 1000000) * 1000
  local out = ''
  if seconds ~= 0 then out = out .. '\\8' .. encode_varint(seconds) end
  if nanos ~= 0 then out = out .. '\\16' .. encode_varint(nanos) end
  return out
end
local ts_field, ttl = ARGV[1], tonumber(ARGV[2])
local f = {ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]}
for i, key in ipairs(KEYS) do
  local at = 10 + (i - 1) * 6
  local stored = redis.call('HMGET', key, f[1], f[2], f[3], f[4], f[6], f[7], ts_field)
  local counts = {}
  for c = 1, 4 do counts[c] = int64(stored[c]) + tonumber(ARGV[at + c - 1]) end
  local revision = tonumber(ARGV[at + 5])
  local old = math.max(int64(stored[6]), stamp_micros(stored[7]))
  if stored[7] then revision = math.max(revision, old + 1) end
  local version = ARGV[at + 4]
  if version == '' then version = stored[5] or '\\18\\0' end
  local rate = 0
  if counts[1] > 0 then rate = counts[3] / counts[1] end
  redis.call('HSET', key,
    ts_field, timestamp(revision),
    f[1], '\\32' .. encode_varint(counts[1]),
    f[2], '\\32' .. encode_varint(counts[2]),
    f[3], '\\32' .. encode_varint(counts[3]),
    f[4], '\\32' .. encode_varint(counts[4]),
    f[5], '\\41' .. struct.pack('<d', rate),
    f[6], version,
    f[7], '\\32' .. encode_varint(revision))
  if ttl > 0 then redis.call('EXPIRE', key, ttl) end
end
return #KEYS
"""


class AggregateCounters:
    """Adds batches' counts to the ``feedback_aggregates`` hashes of a Feast Redis store,
    atomically per key on the server (one script call per chunk of keys; one per key on a
    Redis Cluster, where a call's keys must share a slot)."""

    def __init__(self, store: FeatureStore, online: RedisOnlineStore) -> None:
        self.store = store
        self.online = online
        self._script: tuple[Any, Any] | None = None

    @classmethod
    def of(cls, store: FeatureStore) -> AggregateCounters | None:
        """The counters of ``store``, or None when its online store is not Redis."""
        online = online_store_of(store, RedisOnlineStoreConfig, RedisOnlineStore)
        return None if online is None else cls(store, online)

    def add(self, rows: Sequence[FeedbackAggregate]) -> int:
        """Add each row's counts to its key's stored ones (a key never written starts at 0);
        the stored revision becomes the row's, or the stored one plus a microsecond when that
        is not older, as :meth:`FeedbackAggregate.plus` does. Returns the keys updated."""
        if not rows:
            return 0
        config = self.store.config
        online = config.online_store
        assert isinstance(online, RedisOnlineStoreConfig)
        client = self.online._get_client(online)
        script = self._registered(client)
        fields = [_mmh3(f"{VIEW}:{name}") for name in _FIELDS]
        header: list[Any] = [f"_ts:{VIEW}".encode(), online.key_ttl_seconds or 0, *fields]
        keys = self.online._generate_redis_keys_for_entities(
            config,
            [
                EntityKeyProto(join_keys=[ENTITY], entity_values=[ValueProto(string_val=row.key)])
                for row in rows
            ],
        )
        per_call = _KEYS_PER_CALL if online.redis_type != RedisType.redis_cluster else 1
        for start in range(0, len(rows), per_call):
            args = list(header)
            for row in rows[start : start + per_call]:
                if row.revision_us < 0 or min(_counts(row)) < 0:
                    raise ValueError(f"feedback aggregate {row.key!r}: negative count or revision")
                version = (
                    ValueProto(string_val=row.model_version).SerializeToString()
                    if row.model_version
                    else b""
                )
                args += [*_counts(row), version, row.revision_us]
            script(keys=keys[start : start + per_call], args=args)
        return len(rows)

    def _registered(self, client: Any) -> Any:
        # Per client: redis-py sends EVALSHA and falls back to EVAL on NOSCRIPT (a restarted
        # server has lost its script cache).
        if self._script is None or self._script[0] is not client:
            self._script = (client, client.register_script(_ADD_SCRIPT))
        return self._script[1]


def _counts(row: FeedbackAggregate) -> tuple[int, int, int, int]:
    return (row.answered, row.engaged, row.engaged_positive, row.novel)
