"""The agent's output path against a real broker: ``_Producer.send_batches`` sends a batch's
dead letters and plan updates as one record batch per topic partition (streams/app.py)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path
from typing import cast
from uuid import uuid4

import pytest
from aiokafka.partitioner import DefaultPartitioner

from plugin.adapters.kafka_io import read_topic
from plugin.localstack import KafkaBroker
from plugin.settings import Settings, load_settings
from plugin.streaming.worker import Outbound
from streams.app import _Producer, faust_app


@pytest.fixture
def output_settings(kafka_broker: KafkaBroker, tmp_path: Path) -> Settings:
    run = uuid4().hex[:8]
    settings = load_settings(
        var_dir=tmp_path / "var",
        kafka={
            "bootstrap_servers": kafka_broker.bootstrap_servers,
            "dead_letter_topic": f"dead-letters-{run}",
            "plans_topic": f"plans-{run}",
            "output_partitions": 3,
        },
    )
    kafka = settings.kafka
    kafka_broker.create_topics({kafka.dead_letter_topic: 3, kafka.plans_topic: 3})
    return settings


def send(settings: Settings, outbound: list[Outbound]) -> None:
    async def run() -> None:
        app = faust_app(settings)
        producer = cast(_Producer, await app.maybe_start_producer())
        try:
            await producer.send_batches(outbound)
        finally:
            await producer.stop()

    asyncio.run(run())


def test_every_message_arrives_once_in_order_on_its_keys_partition(
    output_settings: Settings,
) -> None:
    kafka = output_settings.kafka
    # Plan updates of 300 users, five each (about 180 kB: several record batches per
    # partition at Faust's 16 kB batch size), and dead letters, one without a key.
    plans = [
        Outbound(kafka.plans_topic, f"user-{user}".encode(), f"plan {step} of {user}".encode() * 6)
        for step in range(5)
        for user in range(300)
    ]
    letters = [
        Outbound(kafka.dead_letter_topic, b"user-7", b"bad event 1"),
        Outbound(kafka.dead_letter_topic, None, b"bad event without a key"),
    ]
    send(output_settings, plans + letters)

    partitioner = DefaultPartitioner()
    for topic, sent in ((kafka.plans_topic, plans), (kafka.dead_letter_topic, letters)):
        received = read_topic(output_settings, topic, idle_s=0.5)
        got = sorted((r.key or b"", r.value) for r in received)
        assert got == sorted((m.key or b"", m.value) for m in sent)
        by_key: dict[bytes | None, list[bytes]] = defaultdict(list)
        for record in sorted(received, key=lambda r: (r.partition, r.offset)):
            if record.key is not None:
                # The partition a single keyed send picks, so a user's updates stay together.
                assert record.partition == partitioner(record.key, [0, 1, 2], [0, 1, 2])
            by_key[record.key].append(record.value)
        for key, values in by_key.items():
            assert values == [m.value for m in sent if m.key == key]


def test_a_message_larger_than_a_record_batch_is_refused_by_name(
    output_settings: Settings,
) -> None:
    topic = output_settings.kafka.plans_topic
    with pytest.raises(ValueError, match=f"a message for {topic} has 2,000,006 bytes"):
        send(output_settings, [Outbound(topic, b"user-1", b"x" * 2_000_000)])
