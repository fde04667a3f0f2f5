"""Reading a topic's retained messages from the earliest offset to its end (``explore
rebuild``), in batches, without a consumer group: nothing is committed, and the workers' group
is not disturbed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from plugin.adapters.kafka_io import ConsumedRecord, client_options, quiet_kafka
from plugin.errors import MissingPrerequisite
from plugin.settings import Settings


@dataclass(frozen=True)
class RetainedRange:
    """Per partition: the earliest retained offset and the end offset when the read began."""

    beginning: dict[int, int]
    end: dict[int, int]

    @property
    def messages(self) -> int:
        return sum(self.end[p] - self.beginning.get(p, 0) for p in self.end)


class RetainedTopic:
    """One topic's messages from the earliest retained offset to its end: at least up to the
    end offsets read when it opened, then whatever keeps arriving until the topic is idle."""

    def __init__(self, settings: Settings, topic: str, poll_timeout_s: float = 30.0) -> None:
        self.topic = topic
        self.poll_timeout_s = poll_timeout_s
        with quiet_kafka():
            from kafka import KafkaConsumer, TopicPartition

            self._consumer = KafkaConsumer(
                **client_options(settings.kafka),
                enable_auto_commit=False,
                client_id="interest-explorer-rebuild",
            )
        partitions = sorted(self._consumer.partitions_for_topic(topic) or ())
        if not partitions:
            self._consumer.close()
            raise MissingPrerequisite(
                f"topic {topic!r} does not exist on {settings.kafka.bootstrap_servers}",
                hint="the events must still be in Kafka to rebuild from them",
            )
        self._partitions = [TopicPartition(topic, p) for p in partitions]
        self._consumer.assign(self._partitions)
        beginning = self._consumer.beginning_offsets(self._partitions)
        end = self._consumer.end_offsets(self._partitions)
        self.range = RetainedRange(
            {tp.partition: int(beginning[tp]) for tp in self._partitions},
            {tp.partition: int(end[tp]) for tp in self._partitions},
        )
        self._consumer.seek_to_beginning(*self._partitions)

    def batches(self, size: int, idle_s: float = 1.0) -> Iterator[list[ConsumedRecord]]:
        """Batches of up to ``size`` records, each partition in offset order, until every
        partition reached the end offsets read at the start and then no record came for
        ``idle_s``. (The idle wait: tansu 0.6 answers ListOffsets(latest) with the base offset
        of the last record batch, so the records of that batch lie past its "end".) A poll
        that brings nothing for ``poll_timeout_s`` before the end offsets raises TimeoutError.
        """
        end = self.range.end
        reached = {p for p in end if self.range.beginning.get(p, 0) >= end[p]}
        pending: list[ConsumedRecord] = []
        last_record = time.monotonic()
        while True:
            polled = self._consumer.poll(timeout_ms=200, max_records=size)
            now = time.monotonic()
            for tp, messages in polled.items():
                for m in messages:
                    pending.append(
                        ConsumedRecord(m.partition, m.offset, m.key, m.value, m.timestamp)
                    )
                    if m.offset + 1 >= end[tp.partition]:
                        reached.add(tp.partition)
                last_record = now
            while len(pending) >= size:
                yield pending[:size]
                pending = pending[size:]
            if polled:
                continue
            if len(reached) == len(end):
                if now - last_record >= idle_s:
                    break
            elif now - last_record > self.poll_timeout_s:
                missing = {p: end[p] for p in end if p not in reached}
                raise TimeoutError(
                    f"{self.topic}: no records for {self.poll_timeout_s:.0f} s before the end "
                    f"offsets {missing}"
                )
        if pending:
            yield pending

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> RetainedTopic:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
