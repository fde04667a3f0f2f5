"""The hostile-event corpus: ``corpus.jsonl`` plus cases too large or too binary for a text file.

Each JSONL line is one case: ``case`` (its name), ``category``, ``key`` and ``value`` (the Kafka
key and the raw message text) and ``reason``, the start of the dead-letter reason the worker
must give. Tokens are filled in for the stream at hand, so one corpus serves the in-memory unit
tests and the real worker on MovieLens:

* ``@USER@`` a user who already has state, ``@ITEM@`` / ``@OTHER_ITEM@`` items the catalog
  knows, ``@TIME@`` an epoch time after the user's last event: had the worker accepted a case,
  it would have changed the user's state.

Lines with ``"expect": "no-op"`` are duplicates of the user's last applied event
(``duplicate_of: "last"``, with ``change`` applied to its fields): a replay is what
at-least-once delivery produces, so it is applied as a no-op, never dead-lettered.
"""

from __future__ import annotations

import gzip
import json
import random
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from plugin.adapters.kafka_io import event_payload
from plugin.core.events import WatchEvent

CORPUS = Path(__file__).with_name("corpus.jsonl")
CATEGORIES = (
    "wrong_type",
    "missing_field",
    "huge",
    "odd_unicode",
    "bad_rating",
    "bad_time",
    "unknown_item",
    "wrong_key",
    "not_json",
    "duplicate",
)


@dataclass(frozen=True)
class HostileCase:
    """One message: its key and raw value, and the reason prefix (None: a harmless no-op)."""

    name: str
    category: str
    key: bytes | None
    value: bytes | None
    reason: str | None


@dataclass(frozen=True)
class Target:
    """Who the corpus is aimed at: a user with state, and items the catalog knows."""

    user: str
    item: str
    other_item: str
    last_event: WatchEvent  # the user's last applied event
    now: datetime

    @property
    def after(self) -> datetime:
        """A moment after the user's watermark (and in the past of ``now``)."""
        return self.last_event.event_time + timedelta(hours=1)

    def fill(self, text: str) -> str:
        return (
            text.replace("@USER@", self.user)
            .replace("@OTHER_ITEM@", self.other_item)
            .replace("@ITEM@", self.item)
            .replace("@TIME@", str(int(self.after.timestamp())))
        )


def hostile_cases(target: Target) -> list[HostileCase]:
    """Every case of the corpus file and the generated ones, aimed at ``target``."""
    cases = []
    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if entry.get("expect") == "no-op":
            cases.append(_duplicate(entry, target))
            continue
        key = entry["key"]
        cases.append(
            HostileCase(
                name=entry["case"],
                category=entry["category"],
                key=target.fill(key).encode() if key is not None else None,
                value=target.fill(entry["value"]).encode("utf-8", "surrogatepass"),
                reason=target.fill(entry["reason"]),
            )
        )
    return cases + generated_cases(target)


def _duplicate(entry: dict[str, object], target: Target) -> HostileCase:
    fields = json.loads(event_payload(target.last_event))
    change = entry.get("change") or {}
    assert isinstance(change, dict)
    fields.update(
        {name: target.fill(str(v)) if isinstance(v, str) else v for name, v in change.items()}
    )
    return HostileCase(
        name=str(entry["case"]),
        category=str(entry["category"]),
        key=target.user.encode(),
        value=json.dumps(fields).encode(),
        reason=None,
    )


def generated_cases(target: Target) -> list[HostileCase]:
    """Cases built in code: megabyte-class payloads, binary data, deep nesting, clock-relative
    times."""
    user = target.user.encode()

    def event_text(**fields: object) -> bytes:
        base: dict[str, object] = {
            "event_id": "h-gen",
            "user_id": target.user,
            "item_id": target.item,
            "event_time": int(target.after.timestamp()),
            "rating": 5,
        }
        base.update(fields)
        return json.dumps(base).encode()

    rng = random.Random(7)
    too_large = "payload larger than 16384 bytes"
    return [
        HostileCase("payload_of_20_kib", "huge", user, event_text(context={"n": "x" * 20_000}),
                    too_large),
        HostileCase("payload_of_512_kib", "huge", user, b"[" + b"1," * 262_144 + b"1]", too_large),
        HostileCase("key_of_64_kib", "huge", b"k" * 65_536, event_text(),
                    "key: '" + "k" * 64),
        HostileCase("nested_10k_arrays", "not_json", user, b"[" * 10_000, "not JSON: nested"),
        HostileCase("nested_2500_objects", "not_json", user, b'{"a": ' * 2_500, "not JSON: nested"),
        HostileCase("random_binary", "not_json", user, rng.randbytes(512), "not JSON: "),
        HostileCase("invalid_utf8_in_a_string", "not_json", user,
                    event_text(event_id="h-@").replace(b"h-@", b"h-\xff\xfe"), "not JSON: "),
        HostileCase("gzip_compressed_event", "not_json", user, gzip.compress(event_text()),
                    "not JSON: "),
        HostileCase("tombstone", "not_json", user, None, "not JSON: "),
        HostileCase("a_day_ahead_of_the_clock", "bad_time", user,
                    event_text(event_time=(target.now + timedelta(days=1)).isoformat()),
                    "event_time: in the future"),
        HostileCase("ten_minutes_ahead_of_the_clock", "bad_time", user,
                    event_text(event_time=(target.now + timedelta(minutes=10)).timestamp()),
                    "event_time: in the future"),
    ]  # fmt: skip


def category_counts(cases: list[HostileCase]) -> Counter[str]:
    return Counter(case.category for case in cases)
