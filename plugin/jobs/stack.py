"""The detached local stack (``explore stack up|down|status``): tansu (Kafka), redis-server
(Feast's online store and the plan cache) and tritonserver on 127.0.0.1, recorded under
``<var_dir>/run`` so that any shell can ask for their status or stop them.

``stack up`` also writes ``<var_dir>/run/stack.env`` so other shells can ``source`` the same
settings, and ``<var_dir>/run/feature_store.yaml`` for ``feast serve``.

The stack's Redis is durable: its append-only file (``appendfsync everysec``) lives in
``<var_dir>/run/redis/`` and survives ``stack down``/``stack up`` and a crash of the server;
only ``--reset`` deletes it. A ``stack up`` that fails part-way stops the servers it started
before the error reaches the user, so no half stack is left behind.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from plugin.adapters.feast_store import FeastStore
from plugin.adapters.kafka_io import committed_offsets, list_topics, topic_partitions
from plugin.errors import InvalidInput
from plugin.jobs.serving import PublishedLoad, load_published, local_triton
from plugin.localstack import (
    KafkaBroker,
    LocalServer,
    RedisServer,
    RunDirectory,
    ServerState,
    UpResult,
    create_topics,
    default_log_path,
)
from plugin.localstack.redis import remove_redis_files
from plugin.settings import Settings

log = logging.getLogger(__name__)

LOCAL_HOSTS = ("127.0.0.1", "localhost")
STACK_SERVERS = ("triton", "redis", "tansu")  # stop order; start order is the reverse


def with_stack_store(settings: Settings) -> Settings:
    """The same settings on the Redis online store (the stack's profile)."""
    feast = settings.feast.model_copy(update={"online_store": "redis"})
    return settings.model_copy(update={"feast": feast})


def kafka_local_port(settings: Settings) -> int:
    """The port of the single local broker in ``kafka.bootstrap_servers``."""
    brokers = settings.kafka.broker_list()
    host, _, port = brokers[0].rpartition(":") if len(brokers) == 1 else ("", "", "")
    if host not in LOCAL_HOSTS or not port.isdigit():
        raise InvalidInput(
            "the local stack runs one broker on 127.0.0.1; kafka.bootstrap_servers is "
            f"{settings.kafka.bootstrap_servers!r} (EXPLORE_KAFKA__BOOTSTRAP_SERVERS)"
        )
    return int(port)


def redis_data_dir(settings: Settings) -> Path:
    """``<var_dir>/run/redis``: the stack's Redis files (the append-only file, any dump.rdb)."""
    return settings.var_dir / "run" / "redis"


def reset_redis(settings: Settings) -> list[Path]:
    """Stop the stack's redis-server if it runs and delete its files (the AOF folder, any
    ``dump.rdb``), so that its next start is empty; the paths deleted."""
    RunDirectory.default(settings.var_dir).stop("redis")
    return remove_redis_files(redis_data_dir(settings))


def stack_env_path(settings: Settings) -> Path:
    """``<var_dir>/run/stack.env``: the exports another shell sources to reach the stack."""
    return settings.var_dir / "run" / "stack.env"


def stack_exports(settings: Settings) -> dict[str, str]:
    """The settings another shell needs to talk to this stack (no secrets)."""
    return {
        "EXPLORE_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "EXPLORE_REDIS__PORT": str(settings.redis.port),
        "EXPLORE_FEAST__ONLINE_STORE": "redis",
        "EXPLORE_TRITON__HTTP_PORT": str(settings.triton.http_port),
        "EXPLORE_TRITON__GRPC_PORT": str(settings.triton.grpc_port),
        "EXPLORE_TRITON__METRICS_PORT": str(settings.triton.metrics_port),
    }


def write_serving_config(settings: Settings) -> Path:
    """``<var_dir>/run/feature_store.yaml``: the Redis profile with this stack's connection and
    registry, for the Feast CLI (``feast serve``). It may hold the Redis password: mode 0600."""
    document = yaml.safe_load((settings.feast.repo_path / "feature_store.redis.yaml").read_text())
    document["registry"] = str(settings.feast.registry_path.resolve())
    document["online_store"]["connection_string"] = settings.redis.connection_string()
    path = settings.var_dir / "run" / "feature_store.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@dataclass
class StackUp:
    """What ``stack up`` did: each server (started or already running), the topics, the
    published version's load on Triton, and the files it wrote for other shells."""

    settings: Settings
    servers: list[UpResult]
    topics: dict[str, int]
    triton_models: PublishedLoad | None
    serving_config: Path
    env_path: Path

    def as_dict(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "servers": {r.state.name: r.state.endpoints for r in self.servers},
            "topics": self.topics,
        }
        if self.triton_models is not None:
            payload["triton_models"] = self.triton_models.as_dict()
        return payload


def stack_servers(settings: Settings, triton: bool = True) -> list[LocalServer]:
    """The stack's servers in start order: tansu, the durable redis-server, tritonserver."""
    servers: list[LocalServer] = [
        KafkaBroker(
            port=kafka_local_port(settings), log_path=default_log_path("tansu", settings.var_dir)
        ),
        RedisServer(
            port=settings.redis.port,
            password=settings.redis.password,
            data_dir=redis_data_dir(settings),
            log_path=default_log_path("redis", settings.var_dir),
        ),
    ]
    if triton:
        servers.append(local_triton(settings))
    return servers


def stack_up(settings: Settings, triton: bool = True, reset: bool = False) -> StackUp:
    """Start tansu, redis-server and (with ``triton``) tritonserver detached (idempotent),
    create the topics, register the Feast repo on Redis, load the published model version on
    Triton, and write the files other shells and ``feast serve`` use.

    Redis reloads its append-only file from ``<var_dir>/run/redis``; ``reset`` first stops it
    and deletes those files, so the stack starts with an empty store. When a step fails, the
    servers this call started are stopped again (those already running are left alone) and
    the error is raised."""
    settings = with_stack_store(settings)
    if settings.redis.host not in LOCAL_HOSTS:
        raise InvalidInput(
            f"the local stack runs redis on 127.0.0.1; redis.host is {settings.redis.host!r}"
        )
    run_dir = RunDirectory.default(settings.var_dir)
    servers = stack_servers(settings, triton)
    if reset:
        reset_redis(settings)
    started: list[UpResult] = []
    try:
        for server in servers:
            started.append(server.up(run_dir))
        topics = topic_partitions(settings.kafka)
        create_topics(settings.kafka.bootstrap_servers, topics)
        FeastStore(settings).apply()
        models = load_published(settings) if triton else None
        env_path = stack_env_path(settings)
        env_path.parent.mkdir(parents=True, exist_ok=True)
        env_path.write_text(
            "".join(f"export {key}={value}\n" for key, value in stack_exports(settings).items())
        )
        serving_config = write_serving_config(settings)
    except BaseException:
        # Ctrl-C included: a half stack would hold the ports, and the next `stack up` would
        # report it "already running" without the steps that failed here.
        for result in reversed(started):
            if result.started:
                log.info("stack up failed: stopping %s again", result.state.name)
                run_dir.stop(result.state.name)
        raise
    return StackUp(settings, started, topics, models, serving_config, env_path)


@dataclass
class StackDown:
    """What ``stack down`` stopped (each server with its last state, None when it was not
    running) and, with ``--reset``, the Redis files it deleted."""

    servers: list[tuple[str, ServerState | None]]
    removed: list[Path] = field(default_factory=list)


def stack_down(settings: Settings, reset: bool = False) -> StackDown:
    """Stop the stack's servers (idempotent): each name with the state it had, None when it
    was not running. Kafka topics live in memory and go with tansu; Redis keeps its data in
    ``<var_dir>/run/redis`` unless ``reset`` deletes it."""
    run_dir = RunDirectory.default(settings.var_dir)
    stopped = [(name, run_dir.stop(name)) for name in STACK_SERVERS]
    removed = remove_redis_files(redis_data_dir(settings)) if reset else []
    return StackDown(stopped, removed)


@dataclass
class StackStatus:
    """Which servers run, the topics and the worker group's committed offsets (when tansu
    runs), and the worker's latest summary (when it wrote one)."""

    servers: dict[str, ServerState | None]
    topics: dict[str, int] | None = None
    committed: dict[int, int] = field(default_factory=dict)
    worker: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "servers": {n: s.endpoints if s else None for n, s in self.servers.items()}
        }
        if self.topics is not None:
            payload["kafka"] = {
                "topics": self.topics,
                "committed": {str(p): o for p, o in self.committed.items()},
            }
        if self.worker is not None:
            payload["worker"] = self.worker
        return payload


def stack_status(settings: Settings) -> StackStatus:
    """``stack status``: the servers in start order, Kafka's view, the worker's summary."""
    run_dir = RunDirectory.default(settings.var_dir)
    status = StackStatus({name: run_dir.status(name) for name in reversed(STACK_SERVERS)})
    if status.servers.get("tansu"):
        status.topics = list_topics(settings)
        if settings.kafka.events_topic in status.topics:
            status.committed = committed_offsets(settings)
    path = settings.worker_stats_path
    if path.exists():
        status.worker = json.loads(path.read_text())
    return status
