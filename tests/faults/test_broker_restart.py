"""The Kafka broker restarts under a running worker.

tansu keeps everything in memory: a restart loses the topics, their messages and the
group's committed offsets. What the worker does (docs/ROBUSTNESS.md): it logs the lost
connection and keeps retrying; once the broker is back its member id is unknown, so it rejoins
the group, finds no committed offsets and starts each partition from the earliest offset
(``kafka.auto_offset_reset``). With the topics recreated, as ``explore stack up`` does, it
consumes the new messages exactly once, and the state in Redis, which outlived the broker,
carries on.

The worker is caught up when the broker goes away. A broker lost mid-stream, with acked but
uncommitted offsets in the worker, makes it commit and resume from stale positions on the
recreated topics, skipping new messages: documented there, with the advice to restart the
workers after a broker that lost its log.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from plugin.adapters.kafka_io import event_messages, produce, topic_partitions, wait_for_commits
from plugin.localstack import KafkaBroker, RedisServer, create_topics
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


def test_the_worker_survives_a_broker_restart_and_resumes_on_recreated_topics(
    fault_bench: Workbench, tmp_path: Path
) -> None:
    bench = fault_bench
    before, after = bench.events[:700], bench.events[700:]
    with (
        KafkaBroker(log_path=tmp_path / "tansu.log") as broker,
        RedisServer(log_path=tmp_path / "redis.log") as redis,
    ):
        settings = stack_settings(
            bench, broker.bootstrap_servers, redis.port, tmp_path, worker={"batch_size": 100}
        )
        with WorkerProcess(settings, tmp_path / "worker.log") as worker:
            worker.wait_assigned(timeout_s=120)
            alive = lambda: worker.alive  # noqa: E731
            produced = produce(settings, event_messages(before))
            wait_for_commits(settings, produced.end_offsets, timeout_s=60, alive=alive)

            broker.stop()
            time.sleep(2.0)  # the worker sees the broker gone: fetches and heartbeats fail
            assert worker.alive, worker.log_tail()
            broker.start()
            create_topics(broker.bootstrap_servers, topic_partitions(settings.kafka))
            wait_until(
                lambda: (
                    worker.log_path.read_text(errors="replace").count('"partitions assigned"') >= 2
                ),
                30,
                "the worker rejoined its group",
                alive=alive,
            )
            produced = produce(settings, event_messages(after))
            # New topics, offsets from 0 again, and no commits: all of them must be consumed.
            wait_for_commits(settings, produced.end_offsets, timeout_s=90, alive=alive)
            assert worker.stop() == 0, worker.log_tail()
        stats = worker.stats()
        actual = final_state(settings, bench.users)

    # Every message applied once, none skipped; a message consumed again (at-least-once, if
    # the group rebalanced once more before a commit) was a no-op.
    assert stats["events"] - stats["stale_events"] == len(bench.events)
    assert_matches(actual, reference_state(bench, tmp_path / "reference", bench.events))
    assert worker.log_path.read_text(errors="replace").count('"worker starting"') == 1
