"""What the fault, hostile-input and security tests share: a workspace with one published
(untrained, seeded) model version, the embedded reference replay, and per-test stream settings.

It follows ``tests/streams/test_stream_integration.py``: the path is under test, not model
quality, so the models are untrained at the catalog's real shapes. The worker runs as a child
process (``streams.runner.WorkerProcess``) against servers each test starts itself, so a test
may stop and restart them without disturbing the session's shared servers.

Plans are compared without the two batching-dependent timestamps and with a tolerance on
scores: an alignment score computed in a batch of another shape (Triton's dynamic batcher, the
plan cache's per-history rankings) may differ in its last bits.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any
from uuid import uuid4

from pydantic import SecretStr

from plugin.adapters.feast_store import FeastStore
from plugin.adapters.kafka_io import topic_partitions
from plugin.core.events import WatchEvent
from plugin.core.planning import ExplorationPlan
from plugin.core.sequence import UserClusterSequence
from plugin.data.workspace import Workspace, open_workspace
from plugin.jobs.replay import replay
from plugin.localstack import TritonServer, create_topics, free_port
from plugin.models.repository import ModelRepository
from plugin.serving.control import ModelControl
from plugin.settings import KafkaSettings, Settings, TritonSettings, load_settings
from plugin.wiring import build_planner, build_processor
from tests.support.untrained import write_untrained_version

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
State = tuple[dict[str, Any], dict[str, Any]]


@dataclasses.dataclass
class Workbench:
    """The ml-100k workspace, a published model version and the first ``len(events)`` events."""

    root: Path
    settings: Settings
    workspace: Workspace
    events: list[WatchEvent]

    @property
    def users(self) -> list[str]:
        return sorted({event.user_id for event in self.events})


def make_workbench(root: Path, events: int) -> Workbench:
    """Catalog, one untrained published version (seeded) and the first ``events`` events."""
    settings = load_settings(var_dir=root / "var", models={"repository": root / "models"})
    workspace = open_workspace(settings)
    write_untrained_version(settings, workspace, seed=3)
    sliced = list(islice(workspace.dataset.events(), events))
    return Workbench(root, settings, workspace, sliced)


def reference_state(bench: Workbench, root: Path, events: Iterable[WatchEvent]) -> State:
    """The embedded replay of ``events`` (SQLite, in-process best-of-n, batches of 1000)."""
    settings = load_settings(
        **{
            **bench.settings.model_dump(),
            "feast": {"sqlite_path": root / "online.db", "registry_path": root / "registry.db"},
            "planner": {"kind": "best-of-n"},
        }
    )
    planner = build_planner(settings, bench.workspace)
    processor = build_processor(settings, bench.workspace.catalog, planner)
    replay(events, processor, batch_size=1000, progress=False)
    store = processor.store
    return comparable(store.read_sequences(bench.users), store.read_plans(bench.users))


def comparable(
    sequences: dict[str, UserClusterSequence], plans: dict[str, ExplorationPlan]
) -> State:
    """Drop the sequences' ``planned_at``: it depends on where batch boundaries fall (the
    plans' ``as_of`` too, which :func:`differences` ignores)."""
    return ({u: dataclasses.replace(s, planned_at=None) for u, s in sequences.items()}, plans)


def differences(actual: State, expected: State, tolerance: float = 1e-4) -> list[str]:
    """Sequences exactly; plans exactly but for ``as_of`` and for scores within ``tolerance``."""
    found: list[str] = []
    for name, mine, theirs in (
        ("sequence", actual[0], expected[0]),
        ("plan", actual[1], expected[1]),
    ):
        for user in sorted(set(mine) | set(theirs)):
            a, e = mine.get(user), theirs.get(user)
            if name == "plan" and a is not None and e is not None:
                close = len(a.scores) == len(e.scores) and all(
                    abs(x - y) <= tolerance for x, y in zip(a.scores, e.scores, strict=True)
                )
                a = dataclasses.replace(a, as_of=e.as_of, scores=e.scores if close else a.scores)
            if a != e:
                found.append(f"{name} of user {user}: {_field_diff(a, e)}")
    return found


def assert_matches(actual: State, expected: State) -> None:
    """The final state equals the reference replay's."""
    found = differences(actual, expected)
    assert not found, "\n".join(found[:10])


def _field_diff(actual: Any, expected: Any) -> str:
    if actual is None or expected is None:
        return f"{actual} != {expected}"
    fields = [f.name for f in dataclasses.fields(actual)]
    return "; ".join(
        f"{name}: {getattr(actual, name)} != {getattr(expected, name)}"
        for name in fields
        if getattr(actual, name) != getattr(expected, name)
    )


def final_state(settings: Settings, users: list[str]) -> State:
    # A reader of what the worker (another process) wrote: no registration, no catalog rows.
    store = FeastStore(settings)
    return comparable(store.read_sequences(users), store.read_plans(users))


def fast_failing_triton(ports: dict[str, int]) -> dict[str, Any]:
    """Triton settings for outage tests: one retry, a short timeout, a breaker that opens after
    two failures and half-opens after a second, so an outage shows within a few batches."""
    return {
        **ports,
        "request_timeout_s": 2.0,
        "retries": 1,
        "backoff_initial_s": 0.05,
        "breaker_failures": 2,
        "breaker_reset_s": 1.0,
    }


def stack_settings(
    bench: Workbench,
    bootstrap_servers: str,
    redis_port: int,
    tmp_path: Path,
    *,
    redis_password: SecretStr | None = None,
    planner: str = "best-of-n",
    create: bool = True,
    **sections: dict[str, Any],
) -> Settings:
    """Fresh topics and group on the given broker, Feast on the given Redis; ``sections``
    update the defaults section by section (``worker={"batch_size": 50}``)."""
    run = uuid4().hex[:8]
    tree: dict[str, Any] = {
        **bench.settings.model_dump(),
        "kafka": {
            "bootstrap_servers": bootstrap_servers,
            "events_topic": f"watch-events-{run}",
            "dead_letter_topic": f"dead-letters-{run}",
            "plans_topic": f"plans-{run}",
            "group_id": f"explorer-{run}",
            "partitions": 4,
            "session_timeout_s": 3.0,
        },
        "redis": {"host": "127.0.0.1", "port": redis_port, "password": redis_password},
        "feast": {"online_store": "redis", "registry_path": tmp_path / "registry.db"},
        "planner": {"kind": planner},
        "worker": {
            "batch_size": 200,
            "batch_within_s": 0.1,
            "plan_timeout_s": 30.0,
            "metrics_port": free_port(),
            "stats_path": tmp_path / "worker-stats.json",
            "log_format": "json",
        },
    }
    if "feedback_topic" in KafkaSettings.model_fields:  # the feedback loop's output topic
        tree["kafka"]["feedback_topic"] = f"feedback-{run}"
    for name, values in sections.items():
        tree[name] = {**tree.get(name, {}), **values}
    settings = load_settings(**tree)
    if create:
        create_topics(bootstrap_servers, topic_partitions(settings.kafka))
    return settings


def wait_until(
    condition: Callable[[], bool],
    timeout_s: float,
    what: str,
    alive: Callable[[], bool] | None = None,
    poll_s: float = 0.2,
) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout_s`` or when ``alive`` is false."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if alive is not None and not alive():
            raise AssertionError(f"the worker exited while waiting for: {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout_s:.0f} s: {what}")
        time.sleep(poll_s)


def serve(
    factory: Callable[..., TritonServer], bench: Workbench, name: str, **ports: int
) -> TritonServer:
    """A tritonserver over the bench's repository with the published version loaded."""
    server = factory(bench.settings.models.repository, name=name, **ports)
    settings = triton_settings(bench, server)
    with ModelControl(settings, ModelRepository(bench.settings.models.repository)) as control:
        control.load()
    return server


def triton_settings(bench: Workbench, server: TritonServer) -> TritonSettings:
    return bench.settings.triton.model_copy(
        update={
            "http_port": server.http_port,
            "grpc_port": server.grpc_port,
            "metrics_port": server.metrics_port,
        }
    )


def triton_ports(server: TritonServer) -> dict[str, int]:
    return {
        "http_port": server.http_port,
        "grpc_port": server.grpc_port,
        "metrics_port": server.metrics_port,
    }
