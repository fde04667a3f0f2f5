"""The real servers a benchmark runs against: redis-server, tritonserver and (for the latency
bench) tansu, attached, on free 127.0.0.1 ports, stopped when the run ends.

Each arm of a benchmark gets its own Redis database (flushed first) and Feast registry, so the
naive and the batched path start from the same empty state on the same servers.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plugin.bench.feast_profiles import on_redis
from plugin.data.workspace import Workspace
from plugin.settings import Settings


class BenchSetupError(RuntimeError):
    """The bench cannot start: the message says what to run first."""


@dataclass
class BenchStack:
    """Settings pointing at the running servers, and the model version Triton serves."""

    settings: Settings
    workspace: Workspace
    run_dir: Path
    version: int | None
    redis: Any
    startup: dict[str, float]
    _next_db: int = 1

    def arm(
        self,
        name: str,
        *,
        standard: bool = False,
        cache: bool = True,
        feedback: bool = False,
        batch_size: int | None = None,
    ) -> Settings:
        """Settings for one arm: a fresh Redis database, registry and feedback log; ``standard``
        puts Feast on its own Redis store (the SDK path) instead of the repo's fast one;
        ``feedback`` keeps the worker's feedback loop on (``plugin.core.feedback``)."""
        if self._next_db > 15:
            self._next_db = 1  # databases are flushed before reuse
        db = self._next_db
        self._next_db += 1
        self.redis.client(db=db).flushdb()
        arm_dir = self.run_dir / name
        registry = arm_dir / "registry.db"
        registry.unlink(missing_ok=True)
        config = on_redis(self.settings, registry, standard=standard, db=db)
        worker: dict[str, Any] = {"metrics_port": 0, "stats_path": arm_dir / "worker-stats.json"}
        if batch_size is not None:
            worker["batch_size"] = batch_size
        shutil.rmtree(arm_dir / "feedback", ignore_errors=True)
        return config.model_copy(
            update={
                "cache": config.cache.model_copy(update={"enabled": cache}),
                "worker": config.worker.model_copy(update=worker),
                "feedback": config.feedback.model_copy(
                    update={"enabled": feedback, "log_dir": arm_dir / "feedback"}
                ),
            }
        )


def serving_version(settings: Settings, workspace: Workspace) -> int:
    """The newest gated model version trained on this workspace's catalog and data."""
    from plugin.models.fit import matching_version

    version = matching_version(workspace, settings)
    if version is None:
        raise BenchSetupError(
            "no trained model version matches the current catalog: run `explore train` "
            "(or `explore demo`) first"
        )
    return version


@contextmanager
def bench_stack(
    settings: Settings, workspace: Workspace, *, kafka: bool = False, triton: bool = True
) -> Iterator[BenchStack]:
    """Start redis-server, tritonserver (serving the matching version) and, with ``kafka``,
    tansu with the worker's topics; yield a :class:`BenchStack`."""
    from plugin.adapters.kafka_io import topic_partitions
    from plugin.localstack import KafkaBroker, RedisServer, TritonServer
    from plugin.models.repository import ModelRepository
    from plugin.serving.control import ModelControl

    run_dir = settings.var_dir / "bench" / "run"
    logs = settings.var_dir / "logs"
    version = serving_version(settings, workspace) if triton else None
    startup: dict[str, float] = {}
    with ExitStack() as stack:
        redis = stack.enter_context(
            RedisServer(name="bench-redis", log_path=logs / "bench-redis.log")
        )
        startup["redis_s"] = round(redis.startup_seconds or 0.0, 2)
        update: dict[str, Any] = {
            "redis": settings.redis.model_copy(
                update={"host": redis.host, "port": redis.port, "password": None, "ssl": False}
            ),
            "var_dir": settings.var_dir,
        }
        if kafka:
            broker = stack.enter_context(
                KafkaBroker(name="bench-tansu", log_path=logs / "bench-tansu.log")
            )
            broker.create_topics(topic_partitions(settings.kafka))
            startup["tansu_s"] = round(broker.startup_seconds or 0.0, 2)
            update["kafka"] = settings.kafka.model_copy(
                update={"bootstrap_servers": broker.bootstrap_servers}
            )
        if triton:
            server = stack.enter_context(
                TritonServer(
                    settings.models.repository,
                    name="bench-triton",
                    log_path=logs / "bench-triton.log",
                    start_timeout=settings.triton.start_timeout_s,
                )
            )
            startup["triton_s"] = round(server.startup_seconds or 0.0, 2)
            update["triton"] = settings.triton.model_copy(
                update={
                    "host": "127.0.0.1",
                    "http_port": server.http_port,
                    "grpc_port": server.grpc_port,
                    "metrics_port": server.metrics_port,
                }
            )
            update["planner"] = settings.planner.model_copy(update={"kind": "triton"})
        own = settings.model_copy(update=update)
        if triton:
            with ModelControl(own.triton, ModelRepository(own.models.repository)) as control:
                report = control.load(version=version)
            startup["model_load_s"] = round(sum(step.seconds for step in report.steps), 2)
        yield BenchStack(own, workspace, run_dir, version, redis, startup)


def close_planner(planner: Any) -> None:
    """Close a planner chain (deadline -> cache -> Triton client), whatever it holds."""
    seen: set[int] = set()
    while planner is not None and id(planner) not in seen:
        seen.add(id(planner))
        close = getattr(planner, "close", None)
        if callable(close):
            close()
        planner = getattr(planner, "planner", None)
