"""Deferred replans are repaired without waiting for the users (docs/ROBUSTNESS.md).

One worker process, the plan cache on (so a batch whose planner call fails still plans its
cached histories):

A. Triton up: the first events are applied and planned.
B. Triton stopped: the next events are applied and committed; replans of histories the cache
   does not hold are deferred and recorded as owed, in Redis with the states.
C. Triton back on the same ports, and a few events from a handful of users only. Every other
   user sends nothing more.

Within the stated bound (``worker.repair_interval_s`` plus a few planner calls after Triton
answers again) every user's sequence and plan, for all users and not only those of C, equal
the embedded replay's of A+B+C, and the record of owed replans is empty.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from plugin.adapters.feast_store import FeastStore
from plugin.adapters.kafka_io import event_messages, produce, wait_for_commits
from plugin.core.events import WatchEvent
from plugin.localstack import KafkaBroker, RedisServer, TritonServer
from plugin.localstack.worker import WorkerProcess
from tests.support.workbench import (
    Workbench,
    differences,
    fast_failing_triton,
    final_state,
    reference_state,
    serve,
    stack_settings,
    triton_ports,
    wait_until,
)

pytestmark = pytest.mark.integration


def bench_events(bench: Workbench) -> list[WatchEvent]:
    return list(bench.workspace.dataset.events())


REPAIR_INTERVAL_S = 1.0
# After Triton is ready: one repair interval, the breaker's reset, and a few rounds of
# repair_batch users each (one state read, one planner call, one write), on 2 busy CPUs.
BOUND_S = 20.0


def test_deferred_replans_are_repaired_for_users_who_send_nothing_more(
    fault_bench: Workbench,
    kafka_broker: KafkaBroker,
    triton_server_factory: Callable[..., TritonServer],
    tmp_path: Path,
) -> None:
    # Every MovieLens user: A holds each one's first two events, B their next two, and C one
    # more event of three users only.
    by_user: dict[str, list[WatchEvent]] = {}
    for item in bench_events(fault_bench):
        by_user.setdefault(item.user_id, []).append(item)
    firsts = {u: sorted(es, key=lambda e: e.order_key)[:5] for u, es in by_user.items()}
    late_users = sorted(firsts)[:3]
    phase_a = [e for es in firsts.values() for e in es[:2]]
    phase_b = [e for es in firsts.values() for e in es[2:4]]
    phase_c = [firsts[u][4] for u in late_users]
    bench = dataclasses.replace(fault_bench, events=phase_a + phase_b + phase_c)
    triton = serve(triton_server_factory, bench, "triton-repair-1")
    ports = triton_ports(triton)
    expected = reference_state(bench, tmp_path / "reference", phase_a + phase_b + phase_c)
    with RedisServer(log_path=tmp_path / "redis.log") as redis:
        settings = stack_settings(
            bench,
            kafka_broker.bootstrap_servers,
            redis.port,
            tmp_path,
            planner="triton",
            triton=fast_failing_triton(ports),
            cache={"enabled": True, "key_prefix": f"repair-{tmp_path.name}"},
            worker={
                "batch_size": 100,
                "plan_timeout_s": 3.0,
                "repair_interval_s": REPAIR_INTERVAL_S,
                "repair_batch": 200,
            },
        )
        store = FeastStore(settings)
        shards = [f"{settings.kafka.events_topic}:{p}" for p in range(settings.kafka.partitions)]
        with WorkerProcess(settings, tmp_path / "worker.log") as worker:
            worker.wait_assigned(timeout_s=120)
            alive = lambda: worker.alive  # noqa: E731
            produced = produce(settings, event_messages(phase_a))
            wait_for_commits(settings, produced.end_offsets, timeout_s=60, alive=alive)

            triton.stop()
            produced = produce(settings, event_messages(phase_b))
            wait_for_commits(settings, produced.end_offsets, timeout_s=60, alive=alive)
            owed = store.count_owed(shards)
            stored = final_state(settings, bench.users)[0]
            stale = [u for u in bench.users if u in stored and not stored[u].plan_is_current(2)]
            # Some replans could not be made, and each of those users is recorded.
            assert owed > 0 and set(stale) <= set(store.read_owed(shards, 10_000))
            wait_until(lambda: worker.stats().get("plan_cache") is not None, 5, "stats")
            cached_while_down = worker.stats()["plan_cache"]["planned_without_planner"]

            serve(triton_server_factory, bench, "triton-repair-2", **ports)
            back = time.monotonic()
            produced = produce(settings, event_messages(phase_c))
            wait_for_commits(settings, produced.end_offsets, timeout_s=60, alive=alive)
            found: list[str] = []

            def repaired() -> bool:
                found[:] = differences(final_state(settings, bench.users), expected)
                return not found and store.count_owed(shards) == 0

            try:
                wait_until(repaired, BOUND_S * 2, "every user repaired", alive, poll_s=0.25)
            except TimeoutError:
                raise AssertionError("\n".join(found[:10])) from None
            seconds = time.monotonic() - back
            assert worker.stop() == 0, worker.log_tail()
            stats = worker.stats()  # written once more at shutdown

    users = len(bench.users)
    print(
        f"repair: {users} users compared, {len(stale)} stale after the outage "
        f"({owed} owed), all equal {seconds:.1f} s after Triton was back; "
        f"{cached_while_down} planned from the cache while it was down"
    )
    assert seconds <= BOUND_S, f"repaired in {seconds:.1f} s, over the {BOUND_S} s bound"
    assert stats["repairs"]["planned"] > 0
    # Most users sent nothing after the outage: the repair, not their events, planned them.
    assert len(set(stale) - set(late_users)) > len(late_users)
    log = worker.log_path.read_text(errors="replace")
    assert log.count('"worker starting"') == 1, "the worker never restarted"
    assert "deferred replans repaired" in log
