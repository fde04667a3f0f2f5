"""The whole streaming path on real servers: tansu, redis-server and tritonserver.

A slice of MovieLens-100K goes into Kafka with a few malformed messages spread through it; the
Faust worker runs as a child process (as in production) with the Triton planner behind the
Redis plan cache; Feast sits on Redis. Every user's final sequence and plan must equal those
of the embedded replay of the same events (on SQLite, with the same Triton), and every
malformed message must be in the dead-letter topic with its reason.

What may differ between the two drivers is the batching, so plans are compared on everything
but ``as_of`` (the event time of the batch that made the plan) and sequences on everything but
``planned_at`` (the same value): both depend on where batch boundaries fall.

The models are untrained (seeded) at the catalog's real shapes: the path, not the quality, is
under test, and training would cost a minute of a 2-CPU budget.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from plugin.adapters.feast_store import FeastStore
from plugin.adapters.kafka_io import (
    DeadLetter,
    PlanUpdate,
    committed_offsets,
    event_messages,
    produce,
    read_topic,
    topic_partitions,
    wait_for_commits,
)
from plugin.core.events import WatchEvent
from plugin.core.planning import ExplorationPlan
from plugin.core.sequence import UserClusterSequence
from plugin.jobs.replay import replay
from plugin.localstack import KafkaBroker, RedisServer, TritonServer, free_port
from plugin.localstack.worker import WorkerProcess
from plugin.models.repository import ModelRepository
from plugin.serving.control import ModelControl
from plugin.settings import Settings, load_settings
from plugin.wiring import build_planner, build_processor
from tests.support.workbench import Workbench, make_workbench

pytestmark = pytest.mark.integration

EVENTS = 4000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MALFORMED: list[tuple[str | None, bytes]] = [
    ("7", b"{this is not json"),
    ("13", b'{"event_id": "bad-1", "user_id": "13", "item_id": "50", "event_time": 5}'),
    ("21", b'{"event_id": "bad-2", "user_id": "21", "item_id": "50", "event_time": 9,'
           b' "rating": 4, "colour": "red"}'),
]  # fmt: skip


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Workbench:
    """The ml-100k workspace, one untrained published version for its catalog, the events."""
    return make_workbench(tmp_path_factory.mktemp("streaming"), EVENTS)


@pytest.fixture(scope="module")
def triton(bench: Workbench, triton_servers: Callable[..., TritonServer]) -> Iterator[Settings]:
    """A tritonserver serving the published version; the bench's settings pointed at it."""
    server = triton_servers(bench.settings.models.repository, name="triton-streaming")
    triton_settings = bench.settings.triton.model_copy(
        update={
            "http_port": server.http_port,
            "grpc_port": server.grpc_port,
            "metrics_port": server.metrics_port,
        }
    )
    with ModelControl(triton_settings, ModelRepository(bench.settings.models.repository)) as ctl:
        ctl.load()
    yield bench.settings.model_copy(update={"triton": triton_settings})
    server.stop()


@pytest.fixture(scope="module")
def reference(bench: Workbench, triton: Settings, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The embedded replay of the same events: SQLite store, the same Triton, batches of 1000."""
    root = tmp_path_factory.mktemp("reference")
    settings = load_settings(
        **{
            **triton.model_dump(),
            "feast": {"sqlite_path": root / "online.db", "registry_path": root / "registry.db"},
            "planner": {"kind": "triton"},
        }
    )
    planner = build_planner(settings, bench.workspace)
    processor = build_processor(settings, bench.workspace.catalog, planner)
    try:
        replay(bench.events, processor, batch_size=1000, progress=False)
    finally:
        getattr(planner, "close", lambda: None)()
    users = sorted({e.user_id for e in bench.events})
    return processor.store.read_sequences(users), processor.store.read_plans(users)


def stream_settings(
    triton: Settings,
    kafka: KafkaBroker,
    redis: RedisServer,
    tmp_path: Path,
    db: int,
) -> Settings:
    """Fresh topics, group and Redis database for one test, on the session's servers."""
    run = uuid4().hex[:8]
    redis.client(db=db).flushdb()
    settings = load_settings(
        **{
            **triton.model_dump(),
            "kafka": {
                "bootstrap_servers": kafka.bootstrap_servers,
                "events_topic": f"watch-events-{run}",
                "dead_letter_topic": f"dead-letters-{run}",
                "plans_topic": f"plans-{run}",
                "group_id": f"explorer-{run}",
                "partitions": 4,
                "session_timeout_s": 3.0,
            },
            "redis": {"host": redis.host, "port": redis.port, "db": db},
            "feast": {"online_store": "redis", "registry_path": tmp_path / "registry.db"},
            "planner": {"kind": "triton"},
            "worker": {
                "batch_size": 400,
                "batch_within_s": 0.1,
                "plan_timeout_s": 60.0,
                "metrics_port": free_port(),
                "stats_path": tmp_path / "worker-stats.json",
                "log_format": "json",
            },
        }
    )
    kafka.create_topics(topic_partitions(settings.kafka))
    return settings


def with_malformed(events: list[WatchEvent]) -> list[tuple[str | None, bytes]]:
    messages: list[tuple[str | None, bytes]] = list(event_messages(events))
    for index, bad in enumerate(MALFORMED):
        messages.insert((index + 1) * len(messages) // (len(MALFORMED) + 1), bad)
    return messages


def comparable(
    sequences: dict[str, UserClusterSequence], plans: dict[str, ExplorationPlan]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Drop the two batching-dependent timestamps (see the module docstring)."""
    return (
        {u: dataclasses.replace(s, planned_at=None) for u, s in sequences.items()},
        {u: dataclasses.replace(p, as_of=EPOCH) for u, p in plans.items()},
    )


def final_state(settings: Settings, users: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    # A reader of what the worker (another process) wrote: no registration, no catalog rows.
    store = FeastStore(settings)
    return comparable(store.read_sequences(users), store.read_plans(users))


def test_worker_matches_the_embedded_replay_and_dead_letters_malformed_events(
    bench: Workbench,
    triton: Settings,
    reference: Any,
    kafka_broker: KafkaBroker,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    settings = stream_settings(triton, kafka_broker, redis_server, tmp_path, db=4)
    messages = with_malformed(bench.events)
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        worker.wait_assigned(timeout_s=120)
        produced = produce(settings, messages)
        wait_for_commits(settings, produced.end_offsets, timeout_s=180, alive=lambda: worker.alive)
        assert worker.stop() == 0, worker.log_tail()
    stats = worker.stats()

    users = sorted({e.user_id for e in bench.events})
    expected = comparable(*reference)
    assert len(expected[1]) == len(users), "every user of the slice has a plan"
    actual = final_state(settings, users)
    assert actual[0] == expected[0]
    assert actual[1] == expected[1]

    letters = [
        DeadLetter.model_validate_json(r.value)
        for r in read_topic(settings, settings.kafka.dead_letter_topic)
    ]
    assert sorted(letter.raw_payload() for letter in letters) == sorted(m for _, m in MALFORMED)
    reasons = {letter.source.key: letter.reason for letter in letters}
    assert reasons["7"].startswith("not JSON")
    assert reasons["13"] == "event: needs rating or watch_ratio"
    assert reasons["21"] == "colour: Extra inputs are not permitted"
    assert all(letter.source.topic == settings.kafka.events_topic for letter in letters)

    # The plans topic carries every plan written; each user's last update is the Feast plan.
    updates = [
        PlanUpdate.model_validate_json(r.value)
        for r in read_topic(settings, settings.kafka.plans_topic)
    ]
    last = {u.user_id: u for u in updates}
    assert {u: p.cluster_id for u, p in last.items()} == {
        u: p.cluster_id for u, p in actual[1].items()
    }
    assert all(u.trigger is not None and u.trigger.produced_at for u in updates)

    assert stats["events"] == len(messages)
    assert stats["rejected"] == len(MALFORMED)
    assert stats["plans"] == len(updates)
    assert stats["replans_deferred"] == 0
    assert stats["planner"].startswith("best-of-n-v")
    assert stats["plan_cache"]["hits"] + stats["plan_cache"]["misses"] == stats["replans"]
    assert stats["event_to_plan"]["count"] > 0


def test_a_killed_worker_resumes_from_its_commits_without_losing_or_repeating_state(
    bench: Workbench,
    triton: Settings,
    reference: Any,
    kafka_broker: KafkaBroker,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    settings = stream_settings(triton, kafka_broker, redis_server, tmp_path, db=5)
    # Small batches and a paced producer, so that the kill lands mid-stream.
    settings.worker.batch_size = 100
    first = WorkerProcess(settings, tmp_path / "worker-1.log").start()
    try:
        first.wait_assigned(timeout_s=120)
        produced = produce(settings, event_messages(bench.events), rate=2000)
        deadline = time.monotonic() + 60
        while sum(committed_offsets(settings).values()) < len(bench.events) // 4:
            assert time.monotonic() < deadline and first.alive, first.log_tail()
            time.sleep(0.1)
    finally:
        first.kill()
    done_before = sum(committed_offsets(settings).values())
    assert done_before < len(bench.events), "the kill came too late to test anything"

    with WorkerProcess(settings, tmp_path / "worker-2.log") as second:
        wait_for_commits(settings, produced.end_offsets, timeout_s=180, alive=lambda: second.alive)
        assert second.stop() == 0, second.log_tail()
    stats = second.stats()
    # The second worker started at the commits: it never saw what was committed before.
    assert stats["events"] == len(bench.events) - done_before
    users = sorted({e.user_id for e in bench.events})
    assert final_state(settings, users) == comparable(*reference)
