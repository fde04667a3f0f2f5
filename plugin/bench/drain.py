"""The Kafka drain: how fast the worker empties a backlog, against how fast the broker delivers.

Both are measured in one run, on the same tansu, over the same backlog of platform events
(``plugin.data.platform``: interleaved users, each with a stored state, replans on, the plan
table warm in Redis), so that the ratio holds even when the machine's load moves the figures:

* ``raw``: an aiokafka consumer (the client Faust runs on) reading every partition with
  ``getmany`` and doing nothing else: the ceiling;
* ``worker``: the same consumer loop handing each ``getmany`` batch (all partitions, up to
  ``worker.batch_size`` records) to ``StreamWorker.handle`` (validation, Feast reads and
  writes, plan-table lookups, plan updates built) on one batch thread, then committing the
  offsets, as the Faust agent does (``streams/app.py``: the event loop keeps fetching while
  the batch thread works). The Faust agent's own per-message overhead is not in it
  (docs/BENCHMARKS.md has that path).

Both run with the start-up heap frozen out of the garbage collector's scans, as
``streams/runner.py`` does.

``profile=True`` also runs the worker loop under cProfile and sums its time by area
(``plugin.bench.profile``).
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from plugin.bench.profile import summarise
from plugin.localstack.tansu import KafkaBroker
from plugin.streaming.worker import Record, StreamWorker

Echo = Callable[[str], None]
TOPIC = "platform-events"


class Prepared(Protocol):
    """A worker ready to time and the ``(user, payload)`` events it is to drain."""

    worker: StreamWorker
    stream: list[tuple[str, bytes]]


def drain_bench(
    prepare: Callable[[], Prepared],
    broker: KafkaBroker,
    *,
    partitions: int = 4,
    profile: bool = True,
    echo: Echo = print,
) -> dict[str, Any]:
    """Produce the prepared worker's events, then time the raw consumer and the worker loop
    over them (and, with ``profile``, a freshly prepared worker's loop under cProfile)."""
    prepared = prepare()
    events = len(prepared.stream)
    topic = f"{TOPIC}-{time.monotonic_ns()}"
    broker.create_topics({topic: partitions})
    produce_started = time.perf_counter()
    asyncio.run(_produce(broker.bootstrap_servers, topic, prepared.stream))
    produce_seconds = time.perf_counter() - produce_started
    raw = asyncio.run(_consume(broker.bootstrap_servers, topic, events, None, "raw"))
    worker = prepared.worker
    batch = worker.settings.worker.batch_size
    drained = asyncio.run(
        _consume(broker.bootstrap_servers, topic, events, worker.handle, "worker", batch)
    )
    doc: dict[str, Any] = {
        "events": events,
        "partitions": partitions,
        "batch_size": batch,
        "produce_per_s": round(events / produce_seconds, 1),
        "raw_per_s": raw["per_s"],
        "worker_per_s": drained["per_s"],
        "worker_share_of_raw": round(drained["per_s"] / raw["per_s"], 4),
        # CPU seconds of the batch thread in handle: moves far less with the machine's load
        # than the wall-clock rate, so paired runs compare on it too.
        "worker_cpu_us_per_event": round(1e6 * drained["handle_cpu_s"] / events, 1),
        "replans": worker.totals.replans,
        # The generation marker, read in the batches' own round trips when in_store.
        "generation_checks": worker.generation.checks if worker.generation else None,
        "generation_in_store": worker.generation_in_store,
        "seconds_by_step": {
            k: round(getattr(worker.totals.timings, k), 3)
            for k in ("read", "core", "plan", "write")
        },
    }
    echo(
        f"  drain: raw {raw['per_s']:,.0f}/s, worker {drained['per_s']:,.0f}/s "
        f"({100 * doc['worker_share_of_raw']:.1f}% of raw), {doc['replans']} replans, "
        f"{doc['worker_cpu_us_per_event']} CPU us/event on the batch thread"
    )
    if profile:
        again = prepare()
        topic = f"{TOPIC}-{time.monotonic_ns()}"
        broker.create_topics({topic: partitions})
        asyncio.run(_produce(broker.bootstrap_servers, topic, again.stream))
        # The batch thread is profiled: cProfile follows only the thread that enables it.
        profiler = cProfile.Profile()
        handle = again.worker.handle

        def profiled(records: list[Record]) -> Any:
            profiler.enable()
            try:
                return handle(records)
            finally:
                profiler.disable()

        under = asyncio.run(
            _consume(broker.bootstrap_servers, topic, events, profiled, "profile", batch)
        )
        doc["profile"] = {"events_per_s_under_profiler": under["per_s"], **summarise(profiler)}
        top = doc["profile"]["areas"][0]
        echo(f"  drain profile: top area {top['area']} ({100 * top['share']:.0f}%)")
    return doc


async def _produce(bootstrap: str, topic: str, stream: list[tuple[str, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks=1)
    await producer.start()
    try:
        pending = [producer.send(topic, value=value, key=key.encode()) for key, value in stream]
        # send() queues and returns a delivery future; wait for every acknowledgement.
        for delivery in await asyncio.gather(*pending):
            await delivery
    finally:
        await producer.stop()


async def _consume(
    bootstrap: str,
    topic: str,
    expected: int,
    handle: Callable[[list[Record]], Any] | None,
    group: str,
    batch: int = 500,
) -> dict[str, Any]:
    """Read ``expected`` messages from the start; with ``handle``, hand each batch to it and
    commit after it. Timed from the first message received."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"drain-{group}-{time.monotonic_ns()}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        max_poll_records=batch,
    )
    await consumer.start()
    loop = asyncio.get_running_loop()
    seen, started, handle_cpu = 0, 0.0, 0.0

    def timed(records: list[Record]) -> Any:
        nonlocal handle_cpu
        begun = time.thread_time()
        try:
            return handle(records) if handle is not None else None
        finally:
            handle_cpu += time.thread_time() - begun

    gc.collect()
    gc.freeze()
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch") as executor:
            deadline = time.monotonic() + 600
            while seen < expected and time.monotonic() < deadline:
                polled = await consumer.getmany(timeout_ms=500, max_records=batch)
                records = [
                    Record(part.topic, part.partition, m.offset, m.key, m.value, m.timestamp / 1000)
                    for part, messages in polled.items()
                    for m in messages
                ]
                if not records:
                    continue
                if not started:
                    started = time.perf_counter()
                if handle is not None:
                    await loop.run_in_executor(executor, timed, records)
                    await consumer.commit(
                        {
                            part: messages[-1].offset + 1
                            for part, messages in polled.items()
                            if messages
                        }
                    )
                seen += len(records)
        seconds = time.perf_counter() - started if started else 0.0
    finally:
        gc.unfreeze()
        await consumer.stop()
    return {
        "messages": seen,
        "seconds": round(seconds, 3),
        "per_s": round(seen / seconds, 1),
        "handle_cpu_s": round(handle_cpu, 3),
    }
