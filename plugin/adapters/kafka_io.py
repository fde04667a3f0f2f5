"""Kafka at the edges, with kafka-python: producing watch events, reading topics back, offsets.

Also the wire formats of the worker's two output topics (:class:`PlanUpdate`,
:class:`DeadLetter`), so producers, the worker, tests and downstream readers share one
definition.

Watch events are JSON objects (the :class:`~plugin.core.events.WatchEvent` fields), keyed by
``user_id`` so that one user's events stay in one partition, in order.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from plugin.core.events import MAX_PAYLOAD_BYTES, WatchEvent
from plugin.core.planning import ExplorationPlan
from plugin.settings import KafkaSettings, Settings

log = logging.getLogger(__name__)


@contextmanager
def quiet_kafka() -> Iterator[None]:
    """Import and use kafka-python without its ~200 import-time DeprecationWarnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


# -- wire formats ---------------------------------------------------------------------------


def event_payload(event: WatchEvent) -> bytes:
    """The JSON an upstream producer sends for one watch event."""
    return event.model_dump_json(exclude_none=True).encode()


class SourceRecord(BaseModel):
    """Where a message came from: enough to find it again in the events topic."""

    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    offset: int
    key: str | None = None
    produced_at: datetime | None = None


class PlanUpdate(BaseModel):
    """One message of the plans topic, keyed by ``user_id``: the plan as written to Feast.

    ``trigger`` is the newest event of the user in the batch that produced the plan, so a
    consumer can measure event-to-plan latency (``written_at - trigger.produced_at``).
    """

    model_config = ConfigDict(frozen=True)

    user_id: str
    cluster_id: int
    description: str
    history: list[int]
    candidates: list[int]
    scores: list[float]
    model_version: str
    as_of: datetime
    written_at: datetime
    trigger: SourceRecord | None = None

    @classmethod
    def from_plan(
        cls,
        plan: ExplorationPlan,
        description: str,
        written_at: datetime,
        trigger: SourceRecord | None = None,
    ) -> PlanUpdate:
        return cls(
            user_id=plan.user_id,
            cluster_id=plan.cluster_id,
            description=description,
            history=list(plan.history),
            candidates=list(plan.candidates),
            scores=list(plan.scores),
            model_version=plan.model_version,
            as_of=plan.as_of,
            written_at=written_at,
            trigger=trigger,
        )

    def encode(self) -> bytes:
        return self.model_dump_json().encode()


class DeadLetter(BaseModel):
    """One message of the dead-letter topic, keyed like the rejected event.

    ``payload`` is the raw event text exactly as received when it is UTF-8 and at most
    ``MAX_PAYLOAD_BYTES``; otherwise ``payload`` is None and ``payload_base64`` holds the raw
    bytes (cut to that size, with ``truncated`` set).
    """

    model_config = ConfigDict(frozen=True)

    reason: str
    payload: str | None
    payload_base64: str | None = None
    truncated: bool = False
    source: SourceRecord
    rejected_at: datetime

    @classmethod
    def from_raw(
        cls, reason: str, raw: bytes | None, source: SourceRecord, rejected_at: datetime
    ) -> DeadLetter:
        data = raw or b""
        truncated = len(data) > MAX_PAYLOAD_BYTES
        kept = data[:MAX_PAYLOAD_BYTES]
        try:
            text: str | None = kept.decode("utf-8") if not truncated else None
        except UnicodeDecodeError:
            text = None
        return cls(
            reason=reason,
            payload=text,
            payload_base64=base64.b64encode(kept).decode() if text is None else None,
            truncated=truncated,
            source=source,
            rejected_at=rejected_at,
        )

    def raw_payload(self) -> bytes:
        if self.payload is not None:
            return self.payload.encode()
        return base64.b64decode(self.payload_base64 or "")

    def encode(self) -> bytes:
        return self.model_dump_json().encode()


# -- clients --------------------------------------------------------------------------------


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Connection and security options for any kafka-python client (never logged)."""
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.broker_list(),
        "security_protocol": kafka.security_protocol,
    }
    if kafka.sasl_mechanism is not None:
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        if kafka.sasl_password is not None:
            options["sasl_plain_password"] = kafka.sasl_password.get_secret_value()
    if kafka.ssl_cafile is not None:
        options["ssl_cafile"] = str(kafka.ssl_cafile)
    return options


def topic_partitions(kafka: KafkaSettings) -> dict[str, int]:
    """The worker's topics and their partition counts (``explore stack up`` creates them)."""
    return {
        kafka.events_topic: kafka.partitions,
        kafka.dead_letter_topic: kafka.output_partitions,
        kafka.plans_topic: kafka.output_partitions,
        kafka.feedback_topic: kafka.output_partitions,  # FeedbackRecord (plugin.core.feedback)
    }


@dataclass
class ProduceReport:
    """What :func:`produce` sent: counts, speed, and the end offset of each partition."""

    events: int = 0
    seconds: float = 0.0
    rate_limit: float | None = None
    end_offsets: dict[int, int] = field(default_factory=dict)
    failures: int = 0

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "seconds": round(self.seconds, 3),
            "events_per_second": round(self.events_per_second, 1),
            "rate_limit": self.rate_limit,
            "failures": self.failures,
            "end_offsets": {str(p): o for p, o in sorted(self.end_offsets.items())},
        }


def produce(
    settings: Settings,
    messages: Iterable[tuple[str | None, bytes]],
    rate: float | None = None,
    topic: str | None = None,
    on_progress: Any = None,
) -> ProduceReport:
    """Send ``(key, value)`` messages to the events topic, at ``rate`` per second or as fast
    as possible; returns after every message is acknowledged (acks=all).

    The end offsets come from the broker's acknowledgements, not from a ListOffsets call:
    tansu 0.6 answers ListOffsets(latest) with the base offset of the last record batch.
    """
    with quiet_kafka():
        from kafka import KafkaProducer

        producer = KafkaProducer(
            **client_options(settings.kafka),
            acks="all",
            linger_ms=5,
            retries=5,
            client_id="interest-explorer-produce",
        )
    target = topic or settings.kafka.events_topic
    report = ProduceReport(rate_limit=rate)
    lock = threading.Lock()

    def delivered(metadata: Any) -> None:
        with lock:
            end = metadata.offset + 1
            if end > report.end_offsets.get(metadata.partition, 0):
                report.end_offsets[metadata.partition] = end

    def failed(exc: BaseException) -> None:
        with lock:
            report.failures += 1
        log.error("produce failed: %s", exc)

    started = time.perf_counter()
    try:
        for index, (key, value) in enumerate(messages):
            if rate:
                ahead = started + index / rate - time.perf_counter()
                if ahead > 0:
                    time.sleep(ahead)
            future = producer.send(
                target, key=key.encode() if key is not None else None, value=value
            )
            future.add_callback(delivered)
            future.add_errback(failed)
            report.events += 1
            if on_progress is not None:
                on_progress(1)
        producer.flush()
    finally:
        producer.close()
    report.seconds = time.perf_counter() - started
    if report.failures:
        raise RuntimeError(f"{report.failures} of {report.events} messages were not delivered")
    return report


def event_messages(events: Iterable[WatchEvent]) -> Iterator[tuple[str, bytes]]:
    """Watch events as ``(user_id, JSON)`` messages."""
    for event in events:
        yield event.user_id, event_payload(event)


@dataclass(frozen=True)
class ConsumedRecord:
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int


def read_topic(
    settings: Settings, topic: str, idle_s: float = 1.0, timeout_s: float = 30.0
) -> list[ConsumedRecord]:
    """Every message of ``topic`` from the beginning, without a consumer group: reads until
    nothing new arrived for ``idle_s`` seconds (or ``timeout_s`` passed)."""
    with quiet_kafka():
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(
            **client_options(settings.kafka),
            enable_auto_commit=False,
            client_id="interest-explorer-read",
        )
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        records: list[ConsumedRecord] = []
        deadline = time.monotonic() + timeout_s
        last_new = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last_new < idle_s:
            batch = consumer.poll(timeout_ms=200)
            for messages in batch.values():
                for m in messages:
                    records.append(
                        ConsumedRecord(m.partition, m.offset, m.key, m.value, m.timestamp)
                    )
                last_new = time.monotonic()
        return records
    finally:
        consumer.close()


def list_topics(settings: Settings) -> dict[str, int]:
    """Every topic of the cluster but internal ones, with its partition count."""
    with quiet_kafka():
        from kafka.admin import KafkaAdminClient

        admin = KafkaAdminClient(
            **client_options(settings.kafka), client_id="interest-explorer-admin"
        )
    try:
        names = sorted(t for t in admin.list_topics() if not t.startswith("__"))
        return {m["name"]: len(m["partitions"]) for m in admin.describe_topics(names)}
    finally:
        admin.close()


def committed_offsets(settings: Settings, topic: str | None = None) -> dict[int, int]:
    """The worker group's committed offset per partition of the events topic (0 if none)."""
    name = topic or settings.kafka.events_topic
    with quiet_kafka():
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(
            **client_options(settings.kafka),
            group_id=settings.kafka.group_id,
            enable_auto_commit=False,
            client_id="interest-explorer-offsets",
        )
    try:
        partitions = sorted(consumer.partitions_for_topic(name) or set())
        return {p: consumer.committed(TopicPartition(name, p)) or 0 for p in partitions}
    finally:
        consumer.close()


def wait_for_commits(
    settings: Settings,
    end_offsets: Mapping[int, int],
    timeout_s: float,
    poll_s: float = 0.5,
    alive: Any = None,
) -> dict[int, int]:
    """Block until the worker group committed at least ``end_offsets``; the final commits.

    ``alive`` (a callable) is checked on each poll: a worker that died fails fast.
    Raises TimeoutError with the remaining lag otherwise.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        committed = committed_offsets(settings)
        behind = {p: end - committed.get(p, 0) for p, end in end_offsets.items()}
        if all(lag <= 0 for lag in behind.values()):
            return committed
        if alive is not None and not alive():
            raise RuntimeError(f"the worker exited with messages left: lag {behind}")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"worker did not commit in {timeout_s:.0f} s: lag {behind}")
        time.sleep(poll_s)
