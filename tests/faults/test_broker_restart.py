"""The Kafka broker goes away under a running worker and comes back (``explore stack down``,
then ``up``).

tansu keeps everything in memory: a restart loses the topics, their messages and the
group's committed offsets. What the worker does (docs/ROBUSTNESS.md): it logs the lost
connection once and backs off (``streams.broker_watch.BrokerWatch``: one warning, one line per
back-off step as the interval doubles up to a cap, one line when the broker answers again;
before, aiokafka's retries logged about 60 lines a second). Once the broker is back its member
id is unknown, so it rejoins the group, finds no committed offsets and starts each partition
from the earliest offset (``kafka.auto_offset_reset``). With the topics recreated, as
``explore stack up`` does, it consumes the new messages exactly once, and the state in Redis,
which outlived the broker, carries on.

The worker is caught up when the broker goes away. A broker lost mid-stream, with acked but
uncommitted offsets in the worker, makes it commit and resume from stale positions on the
recreated topics, skipping new messages: documented there, with the advice to restart the
workers after a broker that lost its log.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from plugin.adapters.kafka_io import event_messages, produce, topic_partitions, wait_for_commits
from plugin.localstack import KafkaBroker, RedisServer, create_topics
from plugin.localstack.worker import WorkerProcess
from tests.support.workbench import (
    State,
    Workbench,
    assert_matches,
    final_state,
    reference_state,
    stack_settings,
    wait_until,
)

pytestmark = pytest.mark.integration

# One line at the outage, one per back-off step (1, 2, 4, 8 s...), one at recovery: a 12 s
# outage needs 5. The bound leaves room for a rebalance line or two.
MAX_OUTAGE_LINES = 12


@dataclass
class Restart:
    """What a run through a broker restart left behind."""

    worker: WorkerProcess
    stats: dict[str, Any]
    actual: State
    gone: float  # epoch seconds the broker stopped
    back: float  # and started again


def run_through_broker_restart(
    bench: Workbench, tmp_path: Path, caught_up_after: int, outage_s: float
) -> Restart:
    """Produce the first ``caught_up_after`` events, wait for their commits, stop the broker
    for ``outage_s``, start it with its topics recreated, produce the rest and wait again."""
    before, after = bench.events[:caught_up_after], bench.events[caught_up_after:]
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

            gone = time.time()
            broker.stop()
            time.sleep(outage_s)  # the worker sees the broker gone: fetches and heartbeats fail
            assert worker.alive, worker.log_tail()
            broker.start()
            back = time.time()
            create_topics(broker.bootstrap_servers, topic_partitions(settings.kafka))
            wait_until(
                lambda: (
                    worker.log_path.read_text(errors="replace").count('"partitions assigned"') >= 2
                ),
                60,
                "the worker rejoined its group",
                alive=alive,
            )
            produced = produce(settings, event_messages(after))
            # New topics, offsets from 0 again, and no commits: all of them must be consumed.
            wait_for_commits(settings, produced.end_offsets, timeout_s=90, alive=alive)
            assert worker.stop() == 0, worker.log_tail()
        stats = worker.stats()
        actual = final_state(settings, bench.users)
    return Restart(worker, stats, actual, gone, back)


def lines_between(log_path: Path, start: float, end: float) -> list[dict[str, object]]:
    """The worker's JSON log lines stamped within [start, end] (epoch seconds); a line that
    is not JSON (a traceback, say) is counted wherever it is."""
    found: list[dict[str, object]] = []
    for line in log_path.read_text(errors="replace").splitlines():
        try:  # a progress bar may leave terminal escapes before the JSON
            entry = json.loads(line[line.find("{") :])
        except ValueError:
            found.append({"msg": line})
            continue
        stamp = entry.get("ts")
        if isinstance(stamp, str) and start <= datetime.fromisoformat(stamp).timestamp() <= end:
            found.append(entry)
    return found


def test_the_worker_survives_a_broker_restart_and_resumes_on_recreated_topics(
    fault_bench: Workbench, tmp_path: Path
) -> None:
    run = run_through_broker_restart(fault_bench, tmp_path, caught_up_after=700, outage_s=2.0)
    # Every message applied once, none skipped; a message consumed again (at-least-once, if
    # the group rebalanced once more before a commit) was a no-op.
    assert run.stats["events"] - run.stats["stale_events"] == len(fault_bench.events)
    reference = reference_state(fault_bench, tmp_path / "reference", fault_bench.events)
    assert_matches(run.actual, reference)
    assert run.worker.log_path.read_text(errors="replace").count('"worker starting"') == 1


def test_the_worker_backs_off_quietly_while_the_broker_is_gone_and_resumes(
    fault_bench: Workbench, tmp_path: Path
) -> None:
    outage_s = 12.0
    run = run_through_broker_restart(fault_bench, tmp_path, caught_up_after=500, outage_s=outage_s)
    log = run.worker.log_path.read_text(errors="replace")
    during = lines_between(run.worker.log_path, run.gone, run.back)
    rate = len(during) / outage_s
    print(f"\n{len(during)} log lines in a {outage_s:.0f} s broker outage ({rate:.1f}/s)")
    for entry in during[:20]:
        print("  ", entry.get("level"), entry.get("logger"), str(entry.get("msg"))[:160])
    assert len(during) <= MAX_OUTAGE_LINES, f"{len(during)} lines while the broker was gone"
    assert log.count("broker unreachable at") == 1
    assert log.count("broker reachable again at") == 1
    assert "Traceback" not in log
    reference = reference_state(fault_bench, tmp_path / "reference", fault_bench.events)
    assert_matches(run.actual, reference)
