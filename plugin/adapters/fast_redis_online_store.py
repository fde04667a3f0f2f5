"""A Feast Redis online store with a batched write and read path for plain Python rows.

Why: profiling the worker (docs/BENCHMARKS.md) showed the Feast SDK write path costing about
half of every batch. ``FeatureStore.write_to_online_store`` turns the rows into a DataFrame,
then an Arrow table, then protobuf values column by column through the generic type map,
before the Redis store writes them; ``get_online_features`` does the reverse plus a response
object. The Redis commands themselves are a small part.

:class:`FastRedisOnlineStore` is Feast's :class:`RedisOnlineStore` (every inherited method,
so ``feast serve``, ``get_online_features``, ``push`` and ``materialize`` work unchanged) plus
:meth:`~FastRedisOnlineStore.write_rows` and :meth:`~FastRedisOnlineStore.read_rows`, which go
from Python values to Redis and back directly. They keep Feast's layout exactly, so the
standard ``type: redis`` store reads what they write and the other way round:

* one hash per entity, key ``serialize_entity_key(entity, v3) + project``;
* a field per feature, ``mmh3("<view>:<feature>")``, holding the serialised ``ValueProto``;
* ``_ts:<view>`` holding the row's event time as a serialised protobuf ``Timestamp``;
* the same rule as Feast's store: a row whose event time is not newer than the stored one
  (or than an earlier row of the same batch) is skipped.

A batch's write is one round trip whatever its size (one per node on a Redis Cluster).
Select it with the class path as ``type:`` in ``feature_store.redis.yaml``;
:class:`BatchedRedisPath` is what :class:`~plugin.adapters.feast_store.FeastStore` uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar

from feast import FeatureStore, FeatureView
from feast.infra.online_stores.helpers import _mmh3
from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig, RedisType
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import (
    DoubleList,
    Int64List,
    StringList,
)
from feast.protos.feast.types.Value_pb2 import (
    Value as ValueProto,
)
from feast.repo_config import RepoConfig
from feast.value_type import ValueType
from redis.crc import key_slot
from redis.exceptions import NoScriptError

from plugin.adapters.feast_value_codec import (
    UNSURE,
    VALUE_ENCODERS,
    plain_or_unsure,
    timestamp_bytes,
    timestamp_parts,
)

# Sorted-set updates queued after a batch's row writes: key -> (kind, member, revision) triples.
OwedOps = Mapping[str, Sequence[tuple[str, str, int]]]
# A row as the write script takes it: the entity value, the serialised event Timestamp, then
# the serialised value of each feature (FastRedisOnlineStore.write_encoded).
EncodedRow = tuple[Any, bytes, list[bytes]]
# A row ready to write: its Redis key and its script arguments (the Timestamp, the values).
_KeyedRow = tuple[bytes, list[bytes]]

STORE_TYPE: Final = "plugin.adapters.fast_redis_online_store.FastRedisOnlineStore"
StoreType = Literal["plugin.adapters.fast_redis_online_store.FastRedisOnlineStore"]
TIMESTAMP_FIELD = "event_timestamp"
# Entity keys are cached per store; bounded so a long-running worker does not grow forever.
_KEY_CACHE_MAX = 200_000

# Rows per script call: bounds how long one call holds the Redis server.
_ROWS_PER_SCRIPT = 1000

# KEYS: entity hashes. ARGV: ts field, TTL (0: none), F, F feature fields, then per key: the
# serialised Timestamp, F serialised values. A row is written when the stored stamp is not
# positive or is older, the rule of Feast's RedisOnlineStore; reading the stamp after the
# earlier rows' HSETs makes a later duplicate key compare with them. Both Timestamps, the
# stored one and the row's, are decoded from their protobuf bytes (field 1 seconds, field 2
# nanos, varints) by the same function, so they compare alike; seconds below 2^49 are exact in
# Lua's doubles, and a ten-byte varint is a negative int64. (The row's seconds and nanos are
# not sent beside its Timestamp: two arguments fewer per row to pack, send and parse.)
_WRITE_SCRIPT = """
local function varint(s, pos)
  local value, scale, count = 0, 1, 0
  while true do
    local byte = string.byte(s, pos)
    if byte == nil then return value, pos end
    pos = pos + 1
    count = count + 1
    if count <= 7 then
      value = value + (byte % 128) * scale
      scale = scale * 128
    end
    if byte < 128 then break end
  end
  if count > 7 then value = value - 2 ^ 49 end
  return value, pos
end
local function stamp(raw)
  local seconds, nanos, pos = 0, 0, 1
  if not raw then return seconds, nanos end
  while pos <= #raw do
    local tag, value
    tag, pos = varint(raw, pos)
    value, pos = varint(raw, pos)
    if tag == 8 then seconds = value elseif tag == 16 then nanos = value end
  end
  return seconds, nanos
end
local ts_field, ttl, count = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local width, first, written = count + 1, count + 4, 0
for i, key in ipairs(KEYS) do
  local at = first + (i - 1) * width
  local seconds, nanos = stamp(ARGV[at])
  local old_s, old_n = stamp(redis.call('HGET', key, ts_field))
  local stored_positive = old_s > 0 or (old_s == 0 and old_n > 0)
  if not stored_positive or seconds > old_s or (seconds == old_s and nanos > old_n) then
    local args = {ts_field, ARGV[at]}
    for f = 1, count do
      args[#args + 1] = ARGV[3 + f]
      args[#args + 1] = ARGV[at + f]
    end
    redis.call('HSET', key, unpack(args))
    if ttl > 0 then redis.call('EXPIRE', key, ttl) end
    written = written + 1
  end
end
return written
"""
# KEYS[1]: one shard's sorted set of users owed a replan (score: a state revision in epoch
# microseconds, exact in a double below 2^53). ARGV: triples of kind ('o' owed, 's' settled),
# member, revision. Owed keeps the highest revision (ZADD GT); settled removes an entry only
# when its revision is at most the one given, so it never removes a newer owed state's entry.
_OWED_SCRIPT = """
local changed = 0
for i = 1, #ARGV, 3 do
  local kind, member, rev = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if kind == 'o' then
    changed = changed + redis.call('ZADD', KEYS[1], 'GT', rev, member)
  else
    local score = redis.call('ZSCORE', KEYS[1], member)
    if score and tonumber(score) <= tonumber(rev) then
      changed = changed + redis.call('ZREM', KEYS[1], member)
    end
  end
end
return changed
"""
# KEYS: entity hashes; ARGV: fields. One HMGET reply per key.
_READ_SCRIPT = """
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('HMGET', key, unpack(ARGV)) end
return out
"""
_SCRIPTS: Final = {"write": _WRITE_SCRIPT, "owed": _OWED_SCRIPT, "read": _READ_SCRIPT}

# Python value -> ValueProto, per Feast value type; None always becomes an empty ValueProto
# (what Feast's type map writes for a null).
_ENCODERS: dict[ValueType, Callable[[Any], ValueProto]] = {
    ValueType.INT64: lambda v: ValueProto(int64_val=int(v)),
    ValueType.INT32: lambda v: ValueProto(int32_val=int(v)),
    ValueType.DOUBLE: lambda v: ValueProto(double_val=float(v)),
    ValueType.FLOAT: lambda v: ValueProto(float_val=float(v)),
    ValueType.STRING: lambda v: ValueProto(string_val=str(v)),
    ValueType.BOOL: lambda v: ValueProto(bool_val=bool(v)),
    ValueType.INT64_LIST: lambda v: ValueProto(int64_list_val=Int64List(val=[int(x) for x in v])),
    ValueType.DOUBLE_LIST: lambda v: ValueProto(
        double_list_val=DoubleList(val=[float(x) for x in v])
    ),
    ValueType.STRING_LIST: lambda v: ValueProto(
        string_list_val=StringList(val=[str(x) for x in v])
    ),
}
_NULL = ValueProto().SerializeToString()  # a null: what Feast writes for None (b"")
_LIST_FIELDS = frozenset({"int64_list_val", "double_list_val", "string_list_val"})


class UnsupportedFeatureType(TypeError):
    """A feature view uses a type the batched path does not encode (use the SDK path)."""


class FastRedisOnlineStoreConfig(RedisOnlineStoreConfig):
    """The Redis store's settings, unchanged; only ``type`` names this class."""

    type: StoreType = STORE_TYPE  # type: ignore[assignment]


def _encoder(value_type: ValueType) -> Callable[[Any], ValueProto]:
    encoder = _ENCODERS.get(value_type)
    if encoder is None:
        raise UnsupportedFeatureType(f"the batched Redis path cannot encode {value_type.name}")
    return encoder


def _byte_encoder(value_type: ValueType) -> Callable[[Any], bytes]:
    encoder = VALUE_ENCODERS.get(value_type)
    if encoder is None:
        raise UnsupportedFeatureType(f"the batched Redis path cannot encode {value_type.name}")
    return encoder


def encode_value(value: Any, value_type: ValueType) -> ValueProto:
    """One Python value as the ``ValueProto`` Feast's type map would make of it."""
    return ValueProto() if value is None else _encoder(value_type)(value)


def decode_value(raw: bytes | None) -> Any:
    """A stored ``ValueProto`` back to a Python value (None when absent or null): the common
    types read by hand (:func:`~plugin.adapters.feast_value_codec.decode_plain`), any other
    bytes through protobuf."""
    if not raw:
        return None
    tag = raw[0]
    # Shapes protobuf's C parser reads faster (feast_value_codec.plain_or_unsure), sent to
    # it at once: a long int64 (a time), an int64 list with ids past 127.
    if (tag == 0x20 and len(raw) > 4) or (tag == 0x72 and not raw.isascii()):
        return _decode_proto(raw)
    value = plain_or_unsure(raw)
    return _decode_proto(raw) if value is UNSURE else value


def _decode_proto(raw: bytes) -> Any:
    proto = ValueProto.FromString(raw)
    kind = proto.WhichOneof("val")
    if kind is None or kind == "null_val":
        return None
    value = getattr(proto, kind)
    return list(value.val) if kind in _LIST_FIELDS else value


class FastRedisOnlineStore(RedisOnlineStore):
    """Feast's Redis online store plus a batched path for plain Python rows."""

    def __init__(self) -> None:
        super().__init__()
        # Serialised entity keys by (project, join key), then by entity value.
        self._keys: dict[tuple[str, str], dict[Any, bytes]] = {}
        self._fields: dict[tuple[str, str], bytes] = {}
        self._scripts: dict[str, tuple[Any, Any]] = {}

    # -- layout ------------------------------------------------------------------------------

    def _entity_keys(self, config: RepoConfig, table: FeatureView) -> Callable[[Any], bytes]:
        """The Redis key of an entity value of ``table``, cached: one dict lookup per row."""
        column = table.entity_columns[0]
        cache = self._keys.setdefault((config.project, column.name), {})
        value_type = column.dtype.to_value_type()

        def key_of(value: Any) -> bytes:
            found = cache.get(value)
            if found is not None:
                return found
            proto = EntityKeyProto(
                join_keys=[column.name], entity_values=[encode_value(value, value_type)]
            )
            key: bytes = self._generate_redis_keys_for_entities(config, [proto])[0]
            if len(cache) >= _KEY_CACHE_MAX:
                cache.clear()
            cache[value] = key
            return key

        return key_of

    def _field(self, view: str, feature: str) -> bytes:
        field = self._fields.get((view, feature))
        if field is None:
            field = self._fields[(view, feature)] = _mmh3(f"{view}:{feature}")
        return field

    @staticmethod
    def _check(config: RepoConfig, table: FeatureView) -> None:
        if len(table.entity_columns) != 1:
            raise UnsupportedFeatureType(
                f"{table.name}: the batched Redis path handles views with one entity column"
            )
        # Feature-view versioning renames the stored fields; the batched path does not.
        if getattr(config.registry, "enable_online_feature_view_versioning", False):
            raise UnsupportedFeatureType("online feature-view versioning is not supported")

    # -- the batched path ----------------------------------------------------------------------

    def write_rows(
        self,
        config: RepoConfig,
        table: FeatureView,
        rows: Sequence[Mapping[str, Any]],
        owed: OwedOps | None = None,
        probe: MarkerProbe | None = None,
    ) -> int:
        """Write rows (entity column, every feature, ``event_timestamp``); returns the number
        written: each value encoded by its feature's type, then :meth:`write_encoded`."""
        self._check(config, table)
        entity = table.entity_columns[0].name
        names = [f.name for f in table.features]
        encoders = [(f.name, _byte_encoder(f.dtype.to_value_type())) for f in table.features]
        # Bytes written by hand (plugin.adapters.feast_value_codec), no protobuf object per
        # value; inlined rather than per-value calls: measured 25-30 % less time.
        encoded: list[EncodedRow] = [
            (
                row[entity],
                timestamp_bytes(*timestamp_parts(row[TIMESTAMP_FIELD])),
                [
                    _NULL if (value := row[name]) is None else encode(value)
                    for name, encode in encoders
                ],
            )
            for row in rows
        ]
        return self.write_encoded(config, table, names, encoded, owed, probe)

    def write_encoded(
        self,
        config: RepoConfig,
        table: FeatureView,
        features: Sequence[str],
        rows: Sequence[EncodedRow],
        owed: OwedOps | None = None,
        probe: MarkerProbe | None = None,
    ) -> int:
        """Write rows already serialised (:data:`EncodedRow`: the values of ``features``, which
        must be the view's features in its order, so no feature is left stale); returns the
        number written. A row codec (``plugin.adapters.feast_rows``) makes them from domain
        objects in one call per row.

        Rows not newer than what is stored, or than an earlier row for the same entity in
        ``rows``, are skipped, as Feast's Redis store does. On a single Redis (or a Sentinel
        master) each chunk of rows is one script call that checks and writes every hash
        atomically; on a Redis Cluster (keys in many slots) it is one script call per hash
        slot, all in one cluster pipeline (one round trip per node, see
        :meth:`_write_per_slot`). ``owed`` (the record of owed replans, outside Feast's
        layout) is applied after the rows, in the same pipeline. ``probe``'s key is read after
        everything else in that pipeline, so its value is the one the writes were followed by
        (single Redis only: :meth:`scripted`).
        """
        self._check(config, table)
        self._check_features(table, features)
        online = config.online_store
        assert isinstance(online, RedisOnlineStoreConfig)
        client = self._get_client(online)
        fields = [self._field(table.name, name) for name in features]
        ts_field = f"_ts:{table.name}".encode()
        key_of = self._entity_keys(config, table)
        # Each row as its key and its script arguments, ready to splice into the call.
        batch: list[_KeyedRow] = [
            (key_of(entity), [stamp, *values]) for entity, stamp, values in rows
        ]
        ttl = online.key_ttl_seconds or 0
        if not self.scripted(online):
            if probe is not None:
                raise ValueError("a marker probe needs one pipeline: not on a Redis Cluster")
            return self._write_per_slot(client, ts_field, fields, batch, ttl, owed)
        head: list[Any] = [ts_field, ttl, len(fields), *fields]

        # One round trip: every chunk's script call, the record's updates, the probe.
        def queue(pipe: Any, sha: Mapping[str, str]) -> int:
            for start in range(0, len(batch), _ROWS_PER_SCRIPT):
                self._queue_write(pipe, sha["write"], head, batch[start : start + _ROWS_PER_SCRIPT])
            self._queue_owed(pipe, sha["owed"], owed)
            if probe is not None:
                pipe.get(probe.key)
            return len(pipe)

        replies = self._pipelined(client, ("write", "owed"), queue)
        if probe is not None and replies:
            probe.found = _optional_text(replies[-1])
        chunks = -(-len(batch) // _ROWS_PER_SCRIPT)
        return sum(int(reply) for reply in replies[:chunks])

    @staticmethod
    def _check_features(table: FeatureView, features: Sequence[str]) -> None:
        """``features`` must be ``table``'s features in its order: a write that left one out
        would leave a stale value beside the new ones (once per batch: a few names)."""
        expected = [f.name for f in table.features]
        if list(features) != expected:
            raise ValueError(
                f"{table.name}: encoded rows must hold every feature in the view's order, "
                f"{expected}; got {list(features)}"
            )

    @staticmethod
    def _queue_write(pipe: Any, sha: str, head: list[Any], chunk: list[_KeyedRow]) -> None:
        args = list(head)
        for _, values in chunk:
            args += values
        keys = [key for key, _ in chunk]
        pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)

    @staticmethod
    def _queue_owed(pipe: Any, sha: str, owed: OwedOps | None) -> None:
        for key, ops in (owed or {}).items():
            if ops:
                flat = [value for op in ops for value in op]
                pipe.execute_command("EVALSHA", sha, 1, key, *flat)

    def _pipelined(
        self, client: Any, scripts: Sequence[str], queue: Callable[[Any, Mapping[str, str]], int]
    ) -> list[Any]:
        """One pipeline that ``queue`` fills (it returns how many commands it queued), with
        the named scripts called by SHA: the replies, in order ([] when nothing was queued).

        Not redis-py's registered scripts: in a pipeline those cost a ``SCRIPT EXISTS`` round
        trip before every ``execute``, a second round trip per batch read and write (measured
        in the profile). The scripts are loaded once per client instead, and once more after a
        ``NOSCRIPT`` (a restarted server, ``SCRIPT FLUSH``), when the whole pipeline is sent
        again: reads change nothing, rows already written are skipped by the timestamp rule
        and the owed updates are idempotent, so a retry changes nothing twice.
        """
        for attempt in (1, 2):
            sha = {
                name: self._script_sha(client, name, _SCRIPTS[name], reload=attempt > 1)
                for name in scripts
            }
            with client.pipeline(transaction=False) as pipe:
                if not queue(pipe, sha):
                    return []
                replies: list[Any] = pipe.execute(raise_on_error=False)
            if attempt == 1 and any(isinstance(r, NoScriptError) for r in replies):
                continue
            failed = next((r for r in replies if isinstance(r, Exception)), None)
            if failed is not None:
                raise failed
            return replies
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _write_per_slot(
        self,
        client: Any,
        ts_field: bytes,
        fields: list[bytes],
        batch: list[_KeyedRow],
        ttl: int,
        owed: OwedOps | None,
    ) -> int:
        """The write on a Redis Cluster: one round trip per node, atomic per row.

        A script may only touch keys of one hash slot, and Feast's keys carry no hash tag
        (adding one would change the layout Feast reads), so the rows are grouped by slot and
        each group is one ``EVALSHA`` of the write script; redis-py's cluster pipeline sends
        every node its share at once. It blocks its ``evalsha`` method, so the command goes
        through ``execute_command``; the scripts are loaded on every primary first, and once
        more after a ``NOSCRIPT`` (a restarted or new node), when the whole batch is sent
        again: rows already written are then skipped by the timestamp rule and the owed
        updates are idempotent, so a retry changes nothing twice.
        """
        by_slot: dict[int, list[_KeyedRow]] = {}
        for item in batch:
            by_slot.setdefault(key_slot(item[0]), []).append(item)
        head: list[Any] = [ts_field, ttl, len(fields), *fields]

        def queue(pipe: Any, sha: Mapping[str, str]) -> int:
            for rows in by_slot.values():
                for start in range(0, len(rows), _ROWS_PER_SCRIPT):
                    self._queue_write(
                        pipe, sha["write"], head, rows[start : start + _ROWS_PER_SCRIPT]
                    )
            self._queue_owed(pipe, sha["owed"], owed)
            return len(pipe)

        calls = sum(-(-len(rows) // _ROWS_PER_SCRIPT) for rows in by_slot.values())
        replies = self._pipelined(client, ("write", "owed"), queue)
        return sum(int(reply) for reply in replies[:calls])

    def _script_sha(self, client: Any, name: str, text: str, reload: bool) -> str:
        """The script's SHA1, loaded once per client on every primary (``SCRIPT LOAD`` goes
        to all of them on a cluster client)."""
        cache_key = f"sha:{name}"
        found = self._scripts.get(cache_key)
        if reload or found is None or found[0] is not client:
            found = self._scripts[cache_key] = (client, client.script_load(text))
        return str(found[1])

    def read_owed(
        self, config: RepoConfig, keys: Sequence[str], limit: int
    ) -> list[list[tuple[str, int]]]:
        """Per sorted set, up to ``limit`` (member, revision) pairs, lowest revision first:
        one pipelined round trip."""
        online = config.online_store
        assert isinstance(online, RedisOnlineStoreConfig)
        client = self._get_client(online)
        with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.zrange(key, 0, limit - 1, withscores=True)
            replies = pipe.execute()
        return [[(_text(member), int(score)) for member, score in reply] for reply in replies]

    def count_owed(self, config: RepoConfig, keys: Sequence[str]) -> int:
        online = config.online_store
        assert isinstance(online, RedisOnlineStoreConfig)
        client = self._get_client(online)
        with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.zcard(key)
            return sum(int(n) for n in pipe.execute())

    def read_rows(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_values: Sequence[Any],
        features: Sequence[str],
        probe: MarkerProbe | None = None,
    ) -> list[dict[str, Any]]:
        """One row per entity value, in order, with the entity column and each feature
        (None where nothing is stored): :meth:`read_raw`, each value decoded by its bytes."""
        entity = table.entity_columns[0].name
        names = list(features)
        rows = []
        raw_rows = self.read_raw(config, table, entity_values, features, probe)
        for value, raw in zip(entity_values, raw_rows, strict=True):
            # map and zip run in C: no Python frame per value but decode_value's own.
            row = dict(zip(names, map(decode_value, raw), strict=True))
            row[entity] = value
            rows.append(row)
        return rows

    def read_raw(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_values: Sequence[Any],
        features: Sequence[str],
        probe: MarkerProbe | None = None,
    ) -> list[list[bytes | None]]:
        """Per entity value, in order, the stored bytes of each feature (None where nothing
        is stored), for a row codec to decode (``plugin.adapters.feast_rows``): one round
        trip, a script call per chunk of rows (a pipeline of ``HMGET``s on a Redis Cluster).
        ``probe``'s key is read first in the same pipeline, before any row (single Redis only:
        :meth:`scripted`)."""
        self._check(config, table)
        online = config.online_store
        assert isinstance(online, RedisOnlineStoreConfig)
        client = self._get_client(online)
        fields = [self._field(table.name, name) for name in features]
        keys = list(map(self._entity_keys(config, table), entity_values))
        if not self.scripted(online):
            if probe is not None:
                raise ValueError("a marker probe needs one pipeline: not on a Redis Cluster")
            with client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hmget(key, fields)
                replies: list[list[bytes | None]] = pipe.execute()
            return replies

        def queue(pipe: Any, sha: Mapping[str, str]) -> int:
            if probe is not None:
                pipe.get(probe.key)
            for start in range(0, len(keys), _ROWS_PER_SCRIPT):
                chunk = keys[start : start + _ROWS_PER_SCRIPT]
                pipe.execute_command("EVALSHA", sha["read"], len(chunk), *chunk, *fields)
            return len(pipe)

        answers = self._pipelined(client, ("read",), queue)
        if probe is not None:
            probe.found = _optional_text(answers.pop(0))
        return [reply for chunk in answers for reply in chunk]

    @staticmethod
    def scripted(online: RedisOnlineStoreConfig) -> bool:
        """Whether a batch can be one script call: not on a Redis Cluster, where the keys of
        one call must share a slot."""
        return online.redis_type != RedisType.redis_cluster


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _optional_text(value: bytes | str | None) -> str | None:
    return None if value is None else _text(value)


@dataclass
class MarkerProbe:
    """A key read with ``GET`` in the same pipeline as a batch's rows (the online state's
    generation marker, ``plugin.streaming.generation``): :meth:`FastRedisOnlineStore.read_rows`
    reads it before the rows, :meth:`~FastRedisOnlineStore.write_rows` after them, and
    ``found`` holds what Redis answered (None: no such key)."""

    key: str
    found: str | None = None


OnlineStoreT = TypeVar("OnlineStoreT")


def online_store_of(
    store: FeatureStore, config_type: type[Any], store_type: type[OnlineStoreT]
) -> OnlineStoreT | None:
    """``store``'s online store when its config is a ``config_type`` and the provider built a
    ``store_type``; None otherwise. The config is checked first so that a store configured
    for another backend never builds its provider here."""
    if not isinstance(store.config.online_store, config_type):
        return None
    online = store._get_provider().online_store
    return online if isinstance(online, store_type) else None


class BatchedRedisPath:
    """The batched path of a :class:`FeatureStore` whose online store is the fast one.

    Looks feature views up once (call :meth:`forget_views` after ``apply``)."""

    def __init__(self, store: FeatureStore, online: FastRedisOnlineStore) -> None:
        self.store = store
        self.online = online
        self._views: dict[str, FeatureView] = {}

    @classmethod
    def of(cls, store: FeatureStore) -> BatchedRedisPath | None:
        """The batched path, or None when the store is configured with another online store."""
        online = online_store_of(store, FastRedisOnlineStoreConfig, FastRedisOnlineStore)
        return None if online is None else cls(store, online)

    def view(self, name: str) -> FeatureView:
        found = self._views.get(name)
        if found is None:
            found = self._views[name] = self.store.get_feature_view(name)
        return found

    def forget_views(self) -> None:
        self._views.clear()

    def write(
        self,
        view: str,
        rows: Iterable[Mapping[str, Any]],
        owed: OwedOps | None = None,
        probe: MarkerProbe | None = None,
    ) -> int:
        return self.online.write_rows(self.store.config, self.view(view), list(rows), owed, probe)

    def write_encoded(
        self,
        view: str,
        features: Sequence[str],
        rows: Sequence[EncodedRow],
        owed: OwedOps | None = None,
        probe: MarkerProbe | None = None,
    ) -> int:
        config = self.store.config
        return self.online.write_encoded(config, self.view(view), features, rows, owed, probe)

    @property
    def one_pipeline(self) -> bool:
        """Whether a read or write is one pipeline that a :class:`MarkerProbe` can join."""
        online = self.store.config.online_store
        assert isinstance(online, RedisOnlineStoreConfig)
        return self.online.scripted(online)

    def read_owed(self, keys: Sequence[str], limit: int) -> list[list[tuple[str, int]]]:
        return self.online.read_owed(self.store.config, keys, limit)

    def count_owed(self, keys: Sequence[str]) -> int:
        return self.online.count_owed(self.store.config, keys)

    def read(
        self,
        view: str,
        features: Sequence[str],
        entity_values: Sequence[Any],
        probe: MarkerProbe | None = None,
    ) -> list[dict[str, Any]]:
        config = self.store.config
        return self.online.read_rows(config, self.view(view), entity_values, features, probe)

    def read_raw(
        self,
        view: str,
        features: Sequence[str],
        entity_values: Sequence[Any],
        probe: MarkerProbe | None = None,
    ) -> list[list[bytes | None]]:
        config = self.store.config
        return self.online.read_raw(config, self.view(view), entity_values, features, probe)
