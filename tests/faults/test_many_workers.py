"""Several workers in one group, on one host, with the same settings (docs/ROBUSTNESS.md).

Two workers share 4 partitions and one settings tree: the same metrics port and the same stats
file, as two ``explore worker`` runs on one host would. The second serves its metrics on a
free port and writes its summary beside the first's, without a traceback. Mid-stream the first
is SIGKILLed; its partitions go to the second, a third joins, and the group finishes the
stream. Every user's final sequence and plan equal the embedded replay's: redelivered events
are no-ops, and each partition has one owner at a time.
"""

from __future__ import annotations

import dataclasses
import re
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path

import pytest

from plugin.adapters.kafka_io import committed_offsets, event_messages, produce, wait_for_commits
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

EVENTS = 6000


def test_two_workers_one_killed_a_third_joining_end_equal_to_the_replay(
    fault_bench: Workbench, kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    events = list(islice(fault_bench.workspace.dataset.events(), EVENTS))
    bench = dataclasses.replace(fault_bench, events=events)
    expected = reference_state(bench, tmp_path / "reference", events)
    with RedisServer(log_path=tmp_path / "redis.log") as redis:
        settings = stack_settings(
            bench,
            kafka_broker.bootstrap_servers,
            redis.port,
            tmp_path,
            worker={"batch_size": 100},
        )
        first = WorkerProcess(settings, tmp_path / "worker-1.log").start()
        second = WorkerProcess(settings, tmp_path / "worker-2.log").start()
        third = WorkerProcess(settings, tmp_path / "worker-3.log")
        try:
            first.wait_assigned(timeout_s=120)
            second.wait_assigned(timeout_s=120)
            assert second.own_stats_file != first.own_stats_file
            # Produced from a thread at a pace, so that the kill lands mid-stream.
            producing = ThreadPoolExecutor(max_workers=1).submit(
                produce, settings, event_messages(events), rate=600
            )
            deadline = time.monotonic() + 60
            while sum(committed_offsets(settings).values()) < len(events) // 4:
                assert time.monotonic() < deadline and first.alive, first.log_tail()
                time.sleep(0.1)
            first.kill()
            done_before = sum(committed_offsets(settings).values())
            assert done_before < len(events), "the kill came too late to test anything"
            third.start()
            third.wait_assigned(timeout_s=60)
            produced = producing.result(timeout=60)
            alive = lambda: second.alive and third.alive  # noqa: E731
            wait_for_commits(settings, produced.end_offsets, timeout_s=90, alive=alive)
            # The survivors share the partitions once the group settled.
            wait_until(
                lambda: (
                    len(second.stats().get("assigned", [])) + len(third.stats()["assigned"])
                    == settings.kafka.partitions
                ),
                30,
                "the partitions split between the two live workers",
            )
            assert second.stop() == 0, second.log_tail()
            assert third.stop() == 0, third.log_tail()
        finally:
            for worker in (first, second, third):
                worker.kill()
        actual = final_state(settings, bench.users)

    assert_matches(actual, expected)
    logs = [w.log_path.read_text(errors="replace") for w in (first, second, third)]
    assert not any("Traceback" in log for log in logs), "a worker logged a traceback"
    ports = [re.search(r'"metrics": "127\.0\.0\.1:(\d+)"', log) for log in logs]
    # Whichever of the two started second found the port taken and served on a free one.
    assert all(ports) and ports[0] and ports[1] and ports[0].group(1) != ports[1].group(1)
    assert sum("metrics port taken" in log for log in logs[:2]) == 1
    print(
        f"many workers: {len(bench.users)} users compared, {len(events)} events, "
        f"{done_before} committed before the kill"
    )
