"""The broker disappears under a running worker for a while (``explore stack down``): the
worker backs off quietly and resumes when the broker is back.

Before, aiokafka retried every 100 ms and each failed fetch, metadata request and heartbeat
logged its own error: about 60 lines a second. Now the worker logs one warning when the broker
becomes unreachable, says how often it retries, one line per back-off step (the interval
doubles up to a cap), and one line when the broker answers again
(``streams.broker_watch.BrokerWatch``). The test counts the lines the worker wrote while the
broker was gone, then checks that the worker rejoined and consumed what was produced after.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
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

OUTAGE_S = 12.0
# One line at the outage, one per back-off step (1, 2, 4, 8 s...), one at recovery: a 12 s
# outage needs 5. The bound leaves room for a rebalance line or two.
MAX_LINES = 12


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


def test_the_worker_backs_off_quietly_while_the_broker_is_gone_and_resumes(
    fault_bench: Workbench, tmp_path: Path
) -> None:
    bench = fault_bench
    before, after = bench.events[:500], bench.events[500:]
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
            time.sleep(OUTAGE_S)
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
            wait_for_commits(settings, produced.end_offsets, timeout_s=90, alive=alive)
            assert worker.stop() == 0, worker.log_tail()
        actual = final_state(settings, bench.users)

    log = worker.log_path.read_text(errors="replace")
    during = lines_between(worker.log_path, gone, back)
    rate = len(during) / OUTAGE_S
    print(f"\n{len(during)} log lines in a {OUTAGE_S:.0f} s broker outage ({rate:.1f}/s)")
    for entry in during[:20]:
        print("  ", entry.get("level"), entry.get("logger"), str(entry.get("msg"))[:160])
    assert len(during) <= MAX_LINES, f"{len(during)} lines while the broker was gone"
    assert log.count("broker unreachable at") == 1
    assert log.count("broker reachable again at") == 1
    assert "Traceback" not in log
    assert_matches(actual, reference_state(bench, tmp_path / "reference", bench.events))
