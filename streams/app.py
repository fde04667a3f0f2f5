"""The Faust app: one agent that turns watch-event micro-batches into sequences and plans.

Topics (names and partition counts from ``settings.kafka``)
------------------------------------------------------------
* events (``watch-events``), keyed by ``user_id``: JSON watch events; the input.
* dead letters (``watch-events-dead-letter``): a :class:`~plugin.adapters.kafka_io.DeadLetter`
  for every rejected event, with its raw payload, reason and source offset.
* plans (``exploration-plans``), keyed by ``user_id``: a
  :class:`~plugin.adapters.kafka_io.PlanUpdate` for every plan written to Feast.
* feedback (``exploration-feedback``), keyed by ``user_id``: a
  :class:`~plugin.core.feedback.FeedbackRecord` for every plan a user answered.

Delivery: at-least-once in, effectively-once out
-------------------------------------------------
The agent reads with ``stream.noack_take``, which, unlike ``take``, never acks by itself (plain
``take`` acks the buffered events in a ``finally`` when the generator is closed, so an agent
that crashed or was cancelled mid-batch would mark unprocessed events as done). Per batch:

1. run :meth:`StreamWorker.handle` in a dedicated thread, so the event loop keeps serving the
   consumer (heartbeats, fetches) while Feast and the planner work: one Feast read, one
   planner call, plans written, then the sequences that confirm them in one Feast write;
2. send the dead letters and plan updates, one record batch per topic partition, and wait until
   the broker has them;
3. only then ack every event of the batch. Faust commits acked offsets every
   ``worker.commit_interval_s``.

Steps 2 and 3 of batch N run while batch N+1 is handled (step 1), never further ahead: batch
N+1's output is sent only once batch N is delivered and acked, so acks and output stay in
order and at most one handled batch waits for the broker (docs/BENCHMARKS.md, "The Faust
agent path": the broker's round trip was in series with every batch).

Deferred replans are repaired without waiting for the user: every ``worker.repair_interval_s``
a timer runs :meth:`StreamWorker.repair` on the same batch thread (so never at once with a
batch), rounds following at once while they are full, and sends the plan updates it made. A
repair has no offsets to ack; a failed round is logged and tried again at the next tick.

Every batch and repair round checks the online state's generation marker
(:mod:`plugin.streaming.generation`): when Redis lost its data the worker logs one line and
exits with status 65 at once, acking nothing, until ``explore rebuild`` restored the state.

A crash anywhere before step 3 leaves the batch unacked: it is consumed again after a restart
and the core's watermarks make the second application a no-op (plans and output messages may
repeat; they are identical). A batch that keeps failing (Feast down) is retried with backoff;
after ``worker.process_retries`` the process exits at once, without running Faust's shutdown,
because Faust would restart the agent and commit later offsets past the unacked batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn, cast

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from plugin.settings import KafkaSettings, Settings
from plugin.streaming.generation import EXIT_STATE_LOST, StateLost
from plugin.streaming.worker import BatchReport, Outbound, Record, StreamWorker
from streams.batching import micro_batches
from streams.broker_watch import BrokerWatch

log = logging.getLogger(__name__)

# Exit status when a batch failed ``process_retries`` times (EX_SOFTWARE).
EXIT_BATCH_FAILED = 70
# A batch's output must reach the broker before the batch is acked. Faust's producer keeps
# retrying for 20 minutes while a broker is gone, the agent blocked behind it; past this bound
# the worker exits unacked instead, as after a failed batch, and a restart starts clean
# (docs/ROBUSTNESS.md: a broker that lost its topics also gets stale offsets committed if the
# blocked batch is acked later).
PUBLISH_TIMEOUT_S = 30.0


def credentials(kafka: KafkaSettings) -> Any:
    """Faust broker credentials for the configured security protocol (None: plaintext)."""
    context = None
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        cafile = str(kafka.ssl_cafile) if kafka.ssl_cafile is not None else None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    if kafka.security_protocol.startswith("SASL"):
        password = kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=password,
            ssl_context=context,
            mechanism=kafka.sasl_mechanism,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Faust hard-codes fetch_max_wait_ms=1500, and a broker may hold a fetch that long
        # before answering (tansu does: p50 event-to-plan latency 450 ms at 1500 ms, 30 ms
        # at 100 ms). aiokafka reads the value when the consumer starts, which is later.
        app = cast(StreamApp, self.app)
        consumer._fetch_max_wait_ms = app.fetch_max_wait_ms
        if app.broker_watch is not None:  # its retry interval backs off in an outage
            app.broker_watch.clients.append(consumer)
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Producer(faust_aiokafka.Producer):
    def _new_producer(self, transactional_id: str | None = None) -> Any:
        producer = super()._new_producer(transactional_id)
        watch = cast(StreamApp, self.app).broker_watch
        if watch is not None:
            watch.clients.append(producer)
        return producer

    async def send_batches(self, outbound: Sequence[Outbound]) -> None:
        """Send ``outbound`` and return once the broker has every message.

        One record batch per topic partition, each key's partition picked by the producer's
        own partitioner as a single send would, and one future per record batch. Per-message
        ``send`` (a future, a sensor call and a metadata check each) cost as much of the
        event loop as taking the events did (docs/BENCHMARKS.md, "The Faust agent path")."""
        client = self._ensure_producer()
        choose = self.partitioner
        assert choose is not None  # Faust sets the default one when the producer is made
        by_partition: dict[tuple[str, int], list[Outbound]] = defaultdict(list)
        partitions: dict[str, list[int]] = {}
        for message in outbound:
            # A record batch takes any first message, so the producer's own bound is checked
            # here, before anything is sent, as a single send would.
            size = len(message.value) + len(message.key or b"")
            if size > self.max_request_size:
                raise ValueError(
                    f"a message for {message.topic} has {size:,} bytes, more than "
                    f"producer_max_request_size ({self.max_request_size:,})"
                )
            if message.topic not in partitions:
                partitions[message.topic] = sorted(await client.partitions_for(message.topic))
            known = partitions[message.topic]
            partition = choose(message.key, known, known)
            by_partition[message.topic, partition].append(message)
        delivered = []
        for (topic, partition), messages in by_partition.items():
            batch = client.create_batch()
            for message in messages:
                # Full: send it and start the next (which takes the message: it is empty).
                while batch.append(key=message.key, value=message.value, timestamp=None) is None:
                    delivered.append(await client.send_batch(batch, topic, partition=partition))
                    batch = client.create_batch()
            delivered.append(await client.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*delivered)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer
    Producer = _Producer


class StreamApp(faust.App):
    """A Faust app whose Kafka consumer uses ``fetch_max_wait_ms`` from the settings."""

    fetch_max_wait_ms = 1500
    broker_watch: BrokerWatch | None = None

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)


def faust_app(settings: Settings) -> StreamApp:
    """The Faust app object with the worker's settings; topics must already exist."""
    kafka, worker = settings.kafka, settings.worker
    app = StreamApp(
        kafka.group_id,
        broker=[f"kafka://{server}" for server in kafka.broker_list()],
        broker_credentials=credentials(kafka),
        # Group joins wait about half the session timeout; heartbeats must be well inside it.
        broker_session_timeout=kafka.session_timeout_s,
        broker_heartbeat_interval=kafka.session_timeout_s / 4,
        broker_commit_interval=worker.commit_interval_s,
        consumer_auto_offset_reset=kafka.auto_offset_reset,
        key_serializer="raw",
        value_serializer="raw",
        # No web server (the CLI default binds 0.0.0.0:6066); metrics have their own port.
        web_enabled=False,
        # Topics are created up front with explicit partition counts (tansu cannot add
        # partitions), and the leader-election topic is not needed without tables.
        topic_allow_declare=False,
        topic_disable_leader=True,
        datadir=str(settings.var_dir / "faust"),
        autodiscover=False,
    )
    app.fetch_max_wait_ms = worker.fetch_max_wait_ms
    app.broker_watch = BrokerWatch(kafka.broker_list())
    return app


def record_of(event: Any) -> Record:
    message = event.message
    return Record(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        timestamp=message.timestamp,
    )


def build_app(
    settings: Settings, worker: StreamWorker, stats_path: Path | None = None
) -> faust.App:
    """The Faust app with the batch agent around ``worker``, which comes fully assembled
    (``plugin.wiring.build_worker``: planners, store, feedback loop); the agent sends its output
    (dead letters, plan updates, feedback records) to the topics the worker names, and keeps
    its JSON summary in ``stats_path`` (default ``settings.worker_stats_path``)."""
    kafka, config = settings.kafka, settings.worker
    app = faust_app(settings)
    topic_args: dict[str, Any] = {"key_type": bytes, "value_type": bytes}
    events = app.topic(kafka.events_topic, partitions=kafka.partitions, **topic_args)
    # One thread: batches are applied strictly one after another, as the core requires.
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch")
    metrics = worker.metrics
    summary = stats_path or settings.worker_stats_path

    async def handle(records: list[Record]) -> BatchReport:
        loop = asyncio.get_running_loop()
        for attempt in range(config.process_retries + 1):
            try:
                return await loop.run_in_executor(executor, worker.handle, records)
            except StateLost as exc:  # no retry: the store must be rebuilt first
                _exit_state_lost(worker, summary, exc, records)
            except Exception as exc:
                metrics.batch_failures.inc()
                if attempt == config.process_retries:
                    _exit_unacked(records, exc)
                delay = config.retry_backoff_s * 2**attempt
                log.warning(
                    "batch failed, retrying: %s",
                    exc,
                    extra={"attempt": attempt + 1, "retry_in_s": delay, "events": len(records)},
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def deliver(outbound: Sequence[Outbound]) -> None:
        # Straight to the producer, not through ``Topic.send``: the payloads are bytes
        # already, and Faust's per-message channel path cost about 0.4 ms a message
        # (docs/BENCHMARKS.md), a third of a batch's time at 1,000 events/s.
        producer = cast(_Producer, await app.maybe_start_producer())
        await asyncio.wait_for(producer.send_batches(outbound), timeout=PUBLISH_TIMEOUT_S)

    async def settle(
        stream: Any, batch: Sequence[Any], records: list[Record], report: BatchReport
    ) -> None:
        """Deliver a handled batch's output, then ack its events (steps 2 and 3)."""
        try:
            # Delivered before the batch is acked: a dead letter is never lost to a crash.
            await deliver(report.outbound)
        except Exception as exc:  # the broker is gone, or refused the output
            _exit_unacked(records, exc, "could not deliver a batch's output")
        for event in batch:
            await stream.ack(event)
        observe_lag(records)

    def observe_lag(records: list[Record]) -> None:
        last: dict[int, Record] = {}
        for record in records:
            last[record.partition] = record
        now = time.time()
        for partition, record in last.items():
            labels = {"topic": record.topic, "partition": str(partition)}
            tp = next((tp for tp in app.consumer.assignment() if tp.partition == partition), None)
            if tp is not None:
                behind = app.consumer.highwater(tp) - (record.offset + 1)
                metrics.consumer_lag.labels(**labels).set(max(0, behind))
            if record.timestamp is not None:
                metrics.consumer_lag_seconds.labels(**labels).set(max(0.0, now - record.timestamp))

    @app.agent(events, name="watch-events")
    async def process_watch_events(stream: Any) -> None:
        # The batch whose output is on its way to the broker while the next one is handled.
        settling: asyncio.Task[None] | None = None
        try:
            batches = micro_batches(
                stream, config.batch_size, config.batch_within_s, config.batch_poll_s
            )
            async for batch in batches:
                records = [record_of(event) for event in batch]
                report = await handle(records)
                if settling is not None:
                    await settling  # acks stay in order: batch N before batch N+1
                settling = asyncio.create_task(settle(stream, batch, records, report))
        finally:
            if settling is not None:  # stopping: a delivered batch is acked, so not replayed
                await settling
            worker.settle()  # the last batch's feedback aggregates, before the summary
            worker.write_stats(summary)

    @app.timer(interval=config.repair_interval_s)
    async def repair_owed_replans() -> None:
        if worker.owed is None:
            return
        loop = asyncio.get_running_loop()
        while True:
            try:
                report = await loop.run_in_executor(executor, worker.repair)
            except StateLost as exc:
                _exit_state_lost(worker, summary, exc)
            except Exception as exc:  # Redis or the planner away: the next tick tries again
                log.warning("repair round failed, retrying at the next tick: %s", exc)
                return
            if report is None:
                return
            if report.outbound:
                try:
                    await deliver(report.outbound)
                except Exception as exc:  # plans are in Feast already; the topic is a copy
                    log.warning("could not send repaired plan updates: %s", exc)
            if not report.more:
                return

    # A lost broker: one line per back-off step instead of aiokafka's error per retry.
    watch = app.broker_watch
    if watch is not None:
        for handler in logging.getLogger().handlers:
            handler.addFilter(watch)

        @app.timer(interval=1.0)
        async def probe_broker() -> None:
            await watch.probe()

    ticks = 0

    @app.timer(interval=1.0)
    async def refresh_stats() -> None:
        nonlocal ticks
        worker.write_stats(summary)
        ticks += 1
        if ticks % 30 == 0:  # a heartbeat in the logs; the details are in /metrics
            snapshot = worker.snapshot()
            log.info(
                "progress",
                extra={
                    key: snapshot[key]
                    for key in ("events", "rejected", "plans", "replans_deferred", "plan_cache")
                },
            )

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        assigned = args[0] if args else kwargs.get("assigned", ())
        worker.assigned = sorted(f"{tp.topic}:{tp.partition}" for tp in assigned)
        log.info("partitions assigned", extra={"partitions": worker.assigned})
        worker.write_stats(summary)

    return app


def _exit_state_lost(
    worker: StreamWorker, summary: Path, exc: StateLost, records: list[Record] | None = None
) -> NoReturn:
    """The online store lost its data: one log line, the reason in the summary, and exit at
    once with :data:`EXIT_STATE_LOST`, acking nothing (plugin.streaming.generation)."""
    extra: dict[str, Any] = {"exit_status": EXIT_STATE_LOST}
    if records:
        extra["first_offsets"] = {r.partition: r.offset for r in reversed(records)}
    log.critical("%s", exc, extra=extra)
    worker.state_lost = str(exc)
    with contextlib.suppress(OSError):  # the summary is a courtesy; the exit is what matters
        worker.write_stats(summary)
    logging.shutdown()
    os._exit(EXIT_STATE_LOST)


def _exit_unacked(
    records: list[Record], exc: BaseException, why: str = "batch failed after all retries"
) -> NoReturn:
    """Give up on a batch without acking it: exit now, skipping Faust's graceful stop."""
    log.critical(
        "%s; exiting without committing it: %s",
        why,
        str(exc) or type(exc).__name__,
        extra={
            "events": len(records),
            "first_offsets": {r.partition: r.offset for r in reversed(records)},
        },
        exc_info=exc,
    )
    logging.shutdown()
    os._exit(EXIT_BATCH_FAILED)
