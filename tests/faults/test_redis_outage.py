"""Redis (Feast's online store and the plan cache) goes down mid-stream and comes back.

While it is down every batch fails and is retried with backoff (``worker.process_retries``);
nothing of a failed batch is acked, so the group's committed offsets must never pass the state
that is durably in Redis. The check is exact: Redis is shut down with ``SHUTDOWN SAVE``, the
offsets are read at the end of the outage, and the saved snapshot is opened on a second,
private redis-server: every event below a committed offset must be reflected there. Then Redis
restarts on the same port from its snapshot, the worker resumes without a restart of its own,
and the final state equals the embedded replay's.

The Redis in this test has a password: the worker's log and process arguments must never show
it, connection errors during the outage included.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import SecretStr

from plugin.adapters.feast_store import FeastStore
from plugin.adapters.kafka_io import (
    committed_offsets,
    event_messages,
    produce,
    read_topic,
    wait_for_commits,
)
from plugin.core.events import WatchEvent
from plugin.localstack import KafkaBroker, RedisServer
from plugin.localstack.worker import WorkerProcess
from tests.support.workbench import (
    Workbench,
    assert_matches,
    final_state,
    reference_state,
    stack_settings,
    wait_until,
)

pytestmark = pytest.mark.integration

PASSWORD = "outage-" + "s3cr3t" * 4


class SnapshotRedis(RedisServer):
    """redis-server that saves to, and loads from, ``<data_dir>/dump.rdb`` (only on SHUTDOWN
    SAVE: no save points), like a production Redis with persistence."""

    def __init__(self, data_dir: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir

    def command(self) -> list[str]:
        return [*super().command(), "--dir", str(self.data_dir), "--dbfilename", "dump.rdb"]


def test_no_offset_passes_unwritten_state_and_the_worker_recovers(
    fault_bench: Workbench, kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    bench = fault_bench
    secret = SecretStr(PASSWORD)
    data = tmp_path / "redis-data"
    server = SnapshotRedis(data, password=secret, log_path=tmp_path / "redis.log").start()
    port = server.port
    settings = stack_settings(
        bench,
        kafka_broker.bootstrap_servers,
        port,
        tmp_path,
        redis_password=secret,
        # Small batches so that some are written before the outage and some after; enough
        # retries (0.1 s doubling) to outlast it.
        worker={"batch_size": 50, "process_retries": 12, "retry_backoff_s": 0.1},
    )
    half = len(bench.events) // 2
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        worker.wait_assigned(timeout_s=120)
        assert worker.process is not None
        assert PASSWORD.encode() not in Path(f"/proc/{worker.process.pid}/cmdline").read_bytes()
        produce(settings, event_messages(bench.events[:half]), rate=1500)
        wait_until(
            lambda: sum(committed_offsets(settings).values()) >= half // 3,
            60,
            "some batches committed before the outage",
            alive=lambda: worker.alive,
        )

        # Down: snapshot and exit at once; then the rest of the stream arrives.
        with contextlib.suppress(redis.ConnectionError):
            server.client().shutdown(save=True)
        wait_until(lambda: not server.running, 10, "redis-server exited")
        produced = produce(settings, event_messages(bench.events[half:]))
        wait_until(
            lambda: "batch failed, retrying" in worker.log_path.read_text(errors="replace"),
            30,
            "a batch failed against the stopped Redis",
            alive=lambda: worker.alive,
        )
        time.sleep(1.0)  # more failed tries and commit intervals
        assert worker.alive, worker.log_tail()
        during = committed_offsets(settings)

        # What is durable: the snapshot, opened by a private server on another port.
        copy = tmp_path / "snapshot"
        copy.mkdir()
        shutil.copy(data / "dump.rdb", copy / "dump.rdb")
        with SnapshotRedis(copy, password=secret, log_path=tmp_path / "inspect.log") as spare:
            inspect = settings.model_copy(
                update={"redis": settings.redis.model_copy(update={"port": spare.port})}
            )
            durable = FeastStore(inspect).read_sequences(bench.users)
        committed_events = [
            WatchEvent.model_validate_json(r.value)
            for r in read_topic(settings, settings.kafka.events_topic, idle_s=0.5)
            if r.offset < during.get(r.partition, 0)
        ]
        assert committed_events, "the outage came before any commit"
        assert len(committed_events) < len(bench.events), "everything was committed already"
        behind = [
            e.event_id
            for e in committed_events
            if e.user_id not in durable
            or (durable[e.user_id].watermark() or (e.event_time, "")) < e.order_key
        ]
        assert not behind, f"committed but not in Redis: {behind[:5]}"

        # Back, from the snapshot, on the same port: the worker catches up by itself.
        server = SnapshotRedis(
            data, port=port, password=secret, log_path=tmp_path / "redis.log"
        ).start()
        wait_for_commits(settings, produced.end_offsets, timeout_s=120, alive=lambda: worker.alive)
        assert worker.stop() == 0, worker.log_tail()
        actual = final_state(settings, bench.users)
    finally:
        worker.kill()
        server.stop()

    log = worker.log_path.read_text(errors="replace")
    assert log.count('"worker starting"') == 1, "the worker never restarted"
    assert PASSWORD not in log
    assert_matches(actual, reference_state(bench, tmp_path / "reference", bench.events))
