"""Kafka over SSL from settings: kafka-python (producer, reader, admin) and Faust's aiokafka.

tansu 0.6.0 has ``--cert``/``--key`` flags, but its CLI refuses the two together, and with
``--cert`` alone (key in the same PEM) no TLS handshake completed in our tries, so the broker
cannot serve TLS itself here.
The test puts a TLS terminator in front of it instead (the way a TLS proxy or a cloud load
balancer fronts a broker): tansu listens on one port and advertises the terminator's, so
every client connection, metadata-directed ones included, goes through TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from plugin.adapters.kafka_io import client_options, produce, quiet_kafka, read_topic
from plugin.localstack import KafkaBroker, free_port, port_open
from plugin.settings import Settings, load_settings
from streams.app import credentials

pytestmark = pytest.mark.integration


class TlsTerminator:
    """Accepts TLS on 127.0.0.1:``port`` and pipes the plaintext to 127.0.0.1:``upstream``."""

    def __init__(self, upstream: int, context: ssl.SSLContext) -> None:
        self.upstream = upstream
        self.context = context
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: asyncio.base_events.Server | None = None

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(Exception):
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    def start(self) -> TlsTerminator:
        self.thread.start()
        start = asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=self.context)
        self.server = asyncio.run_coroutine_threadsafe(start, self.loop).result(timeout=10)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


class BrokerBehindTls(KafkaBroker):
    """tansu advertising the terminator's port: clients reach it only through TLS."""

    def __init__(self, advertised_port: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.advertised_port = advertised_port

    def command(self) -> list[str]:
        argv = super().command()
        at = argv.index("--advertised-listener-url") + 1
        argv[at] = f"tcp://{self.host}:{self.advertised_port}"
        return argv

    def is_ready(self) -> bool:
        # The metadata probe would follow the advertised (TLS) address in plaintext.
        return port_open(self.host, self.port)


@pytest.fixture
def broker_behind_tls(tls: Any, tmp_path: Path) -> Iterator[int]:
    """The TLS port of a tansu behind a terminator with the test CA's server certificate."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.server_cert, tls.server_key)
    listen = free_port()
    terminator = TlsTerminator(listen, context)
    with BrokerBehindTls(terminator.port, port=listen, log_path=tmp_path / "tansu.log"):
        terminator.start()
        try:
            yield terminator.port
        finally:
            terminator.stop()


def ssl_settings(port: int, cafile: Path, topic: str) -> Settings:
    return load_settings(
        kafka={
            "bootstrap_servers": f"127.0.0.1:{port}",
            "security_protocol": "SSL",
            "ssl_cafile": cafile,
            "events_topic": topic,
        }
    )


def test_clients_and_the_worker_consumer_speak_ssl_from_settings(
    tls: Any, broker_behind_tls: int
) -> None:
    topic = f"tls-{uuid4().hex[:8]}"
    settings = ssl_settings(broker_behind_tls, tls.ca, topic)
    with quiet_kafka():
        from kafka.admin import KafkaAdminClient, NewTopic
        from kafka.errors import KafkaConnectionError, KafkaTimeoutError

        admin = KafkaAdminClient(**client_options(settings.kafka), request_timeout_ms=10_000)
        try:
            admin.create_topics([NewTopic(topic, 2, 1)])
        finally:
            admin.close()

    messages = [(f"u{i}", f'{{"n": {i}}}'.encode()) for i in range(20)]
    produce(settings, messages)
    assert sorted(r.value for r in read_topic(settings, topic, idle_s=0.5)) == sorted(
        value for _, value in messages
    )

    # The worker's consumer: Faust turns the same credentials into aiokafka arguments.
    from aiokafka import AIOKafkaConsumer
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    auth = credentials_to_aiokafka_auth(credentials(settings.kafka))
    assert auth["security_protocol"] == "SSL"

    async def consume() -> list[bytes]:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=settings.kafka.bootstrap_servers,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            **auth,
        )
        await consumer.start()
        try:
            found: list[bytes] = []
            while len(found) < len(messages):
                batch = await asyncio.wait_for(consumer.getmany(timeout_ms=500), timeout=20)
                found += [m.value for records in batch.values() for m in records]
            return found
        finally:
            await consumer.stop()

    assert sorted(asyncio.run(consume())) == sorted(value for _, value in messages)

    # A client that trusts another CA, or speaks plaintext, gets nowhere.
    rogue = ssl_settings(broker_behind_tls, tls.rogue_ca, topic)
    plaintext = load_settings(kafka={"bootstrap_servers": f"127.0.0.1:{broker_behind_tls}"})
    for refused in (rogue, plaintext):
        with quiet_kafka(), pytest.raises((KafkaConnectionError, KafkaTimeoutError)):
            KafkaAdminClient(**client_options(refused.kafka), bootstrap_timeout_ms=3000)
