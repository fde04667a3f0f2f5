"""A private stack: redis-server, tansu and tritonserver attached to this process on free
127.0.0.1 ports, stopped when the ``with`` block ends. ``explore demo --stack`` and the
benchmarks (:func:`plugin.bench.stack.bench_stack`) both run on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

from plugin.adapters.kafka_io import topic_partitions
from plugin.localstack import KafkaBroker, LocalServer, RedisServer, TritonServer
from plugin.models.repository import ModelRepository
from plugin.serving.control import LoadReport, ModelControl
from plugin.settings import Settings


@dataclass
class PrivateStack:
    """The settings pointing at the running servers, the redis-server (None without it), the
    model version Triton serves and its load (None without Triton), and each server's
    start-up seconds and pid (``redis``, ``tansu``, ``triton``: what a bench samples the CPU
    use of)."""

    settings: Settings
    redis: RedisServer | None = None
    version: int | None = None
    load: LoadReport | None = None
    startup: dict[str, float] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)


@contextmanager
def private_stack(
    settings: Settings,
    name: str,
    *,
    redis: bool = True,
    kafka: bool = True,
    triton: bool = True,
    version: int | None = None,
) -> Iterator[PrivateStack]:
    """Start, each when asked for, redis-server, tansu with the worker's topics, and
    tritonserver over ``models.repository`` serving ``version`` (None: the published one) with
    the settings' planner switched to it. Servers and logs are named ``<name>-redis`` and so
    on, logs under ``<var_dir>/logs``."""
    running = PrivateStack(settings)
    logs = settings.var_dir / "logs"
    update: dict[str, Any] = {}
    with ExitStack() as stack:
        if redis:
            running.redis = stack.enter_context(
                RedisServer(name=f"{name}-redis", log_path=logs / f"{name}-redis.log")
            )
            running.startup["redis_s"] = _seconds(running.redis)
            _note_pid(running, "redis", running.redis)
            # The private redis-server has no password and no TLS, whatever the settings say.
            update["redis"] = settings.redis.model_copy(
                update={
                    "host": running.redis.host,
                    "port": running.redis.port,
                    "password": None,
                    "ssl": False,
                }
            )
        if kafka:
            broker = stack.enter_context(
                KafkaBroker(name=f"{name}-tansu", log_path=logs / f"{name}-tansu.log")
            )
            broker.create_topics(topic_partitions(settings.kafka))
            running.startup["tansu_s"] = _seconds(broker)
            _note_pid(running, "tansu", broker)
            update["kafka"] = settings.kafka.model_copy(
                update={"bootstrap_servers": broker.bootstrap_servers}
            )
        if triton:
            server = stack.enter_context(_triton_server(settings, name))
            running.startup["triton_s"] = _seconds(server)
            _note_pid(running, "triton", server)
            update.update(_on_triton(settings, server))
        running.settings = settings.model_copy(update=update)
        if triton:
            _serve(running, version)
        yield running


def _note_pid(running: PrivateStack, name: str, server: LocalServer) -> None:
    if server.pid is not None:
        running.pids[name] = server.pid


def _seconds(server: LocalServer) -> float:
    return round(server.startup_seconds or 0.0, 2)


def _triton_server(settings: Settings, name: str) -> TritonServer:
    return TritonServer(
        settings.models.repository,
        name=f"{name}-triton",
        log_path=settings.var_dir / "logs" / f"{name}-triton.log",
        log_verbose=settings.triton.log_verbose,
        start_timeout=settings.triton.start_timeout_s,
    )


def _on_triton(settings: Settings, server: TritonServer) -> dict[str, Any]:
    """The settings' sections that point the clients and the planner at ``server``."""
    ports = {
        "host": server.host,
        "http_port": server.http_port,
        "grpc_port": server.grpc_port,
        "metrics_port": server.metrics_port,
    }
    return {
        "triton": settings.triton.model_copy(update=ports),
        "planner": settings.planner.model_copy(update={"kind": "triton"}),
    }


def _serve(running: PrivateStack, version: int | None) -> None:
    """Load ``version`` (None: the published one) of every model on the stack's Triton."""
    repository = ModelRepository(running.settings.models.repository)
    with ModelControl(running.settings.triton, repository) as control:
        running.load = control.load(version=version)
    running.version = running.load.version
    running.startup["model_load_s"] = round(sum(s.seconds for s in running.load.steps), 2)
