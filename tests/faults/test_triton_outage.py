"""Triton goes down for a while: sequences keep flowing, replans wait, and catch up after.

Phases, one worker process throughout (the plan cache is off, so every replan needs Triton):

A. Triton up: events are applied and planned.
B. Triton stopped: events are still applied and committed, within the replan deadline, and
   the replans stay pending in the users' states (the breaker then fails them fast).
C. Triton back on the same ports: new events plan again.
D. B's events once more (a producer's retry, say): all stale, so no state moves, but each of
   those users' pending replan is made, by D's batches or, where they met the breaker, by the
   repair loop (the record of owed replans drains).

The final state equals the embedded replay of A+B+C (duplicates harmless), and the worker
never exited.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from plugin.adapters.feast_store import FeastStore
from plugin.adapters.kafka_io import event_messages, produce, wait_for_commits
from plugin.localstack import KafkaBroker, RedisServer, TritonServer
from plugin.localstack.worker import WorkerProcess
from tests.support.workbench import (
    Workbench,
    assert_matches,
    fast_failing_triton,
    final_state,
    reference_state,
    serve,
    stack_settings,
    wait_until,
)

pytestmark = pytest.mark.integration


def test_replans_wait_for_triton_and_catch_up_without_a_crash_loop(
    fault_bench: Workbench,
    kafka_broker: KafkaBroker,
    triton_server_factory: Callable[..., TritonServer],
    tmp_path: Path,
) -> None:
    bench = fault_bench
    triton = serve(triton_server_factory, bench, "triton-outage-1")
    ports = {
        "http_port": triton.http_port,
        "grpc_port": triton.grpc_port,
        "metrics_port": triton.metrics_port,
    }
    third = len(bench.events) // 3
    phase_a, phase_b, phase_c = (
        bench.events[:third],
        bench.events[third : 2 * third],
        bench.events[2 * third :],
    )
    with RedisServer(log_path=tmp_path / "redis.log") as redis:
        settings = stack_settings(
            bench,
            kafka_broker.bootstrap_servers,
            redis.port,
            tmp_path,
            planner="triton",
            triton=fast_failing_triton(ports),
            cache={"enabled": False},
            worker={"batch_size": 100, "plan_timeout_s": 3.0},
        )
        store = FeastStore(settings)
        shards = [f"{settings.kafka.events_topic}:{p}" for p in range(settings.kafka.partitions)]
        with WorkerProcess(settings, tmp_path / "worker.log") as worker:
            worker.wait_assigned(timeout_s=120)
            alive = lambda: worker.alive  # noqa: E731
            produced = produce(settings, event_messages(phase_a))
            wait_for_commits(settings, produced.end_offsets, timeout_s=60, alive=alive)
            assert worker.stats()["replans_deferred"] == 0

            triton.stop()
            produced = produce(settings, event_messages(phase_b))
            wait_for_commits(settings, produced.end_offsets, timeout_s=60, alive=alive)
            # The summary is refreshed every second.
            wait_until(lambda: worker.stats()["replans_deferred"] > 0, 5, "deferred replans")
            # Sequences moved on while Triton was down; their replans are pending.
            stored = final_state(settings, bench.users)[0]
            last_b = {e.user_id: e.event_id for e in phase_b}
            assert all(stored[u].last_event_id == e for u, e in last_b.items())
            pending = [u for u in last_b if not stored[u].plan_is_current(2)]
            assert pending

            serve(triton_server_factory, bench, "triton-outage-2", **ports)
            produce(settings, event_messages(phase_c))
            produced = produce(settings, event_messages(phase_b))  # D: B again
            wait_for_commits(settings, produced.end_offsets, timeout_s=90, alive=alive)
            # D's replans may meet the breaker the repair loop's first probes opened while the
            # model was still loading: those are recorded, and repaired within the bound.
            wait_until(lambda: store.count_owed(shards) == 0, 30, "owed replans repaired", alive)
            assert worker.stop() == 0, worker.log_tail()
            stats = worker.stats()  # written once more at shutdown
        actual = final_state(settings, bench.users)

    expected = reference_state(bench, tmp_path / "reference", phase_a + phase_b + phase_c)
    assert_matches(actual, expected)
    # Every distinct event applied once; the re-sent ones were all no-ops.
    assert stats["events"] - stats["stale_events"] == len(bench.events)
    assert stats["stale_events"] >= len(phase_b)
    log = worker.log_path.read_text(errors="replace")
    assert log.count('"worker starting"') == 1, "the worker never restarted"
    assert "replans left pending" in log
