"""The real servers a benchmark runs against: redis-server, tritonserver and (for the latency
bench) tansu, attached, on free 127.0.0.1 ports, stopped when the run ends: the private stack
``explore demo --stack`` runs on too.

Each arm of a benchmark gets its own Redis database (flushed first) and Feast registry, so the
naive and the batched path start from the same empty state on the same servers.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plugin.bench.feast_profiles import on_redis
from plugin.data.workspace import Workspace
from plugin.errors import MissingPrerequisite
from plugin.jobs.private_stack import private_stack
from plugin.models.fit import matching_version
from plugin.settings import Settings


class BenchSetupError(MissingPrerequisite, RuntimeError):
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
    pids: dict[str, int] = field(default_factory=dict)  # redis, tansu, triton
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
    tansu with the worker's topics (:func:`plugin.jobs.private_stack.private_stack`); yield a
    :class:`BenchStack`."""
    version = serving_version(settings, workspace) if triton else None
    with private_stack(settings, "bench", kafka=kafka, triton=triton, version=version) as stack:
        run_dir = settings.var_dir / "bench" / "run"
        yield BenchStack(
            stack.settings,
            workspace,
            run_dir,
            stack.version,
            stack.redis,
            stack.startup,
            dict(stack.pids),
        )


def close_planner(planner: Any) -> None:
    """Close a planner chain (deadline -> cache -> Triton client), whatever it holds."""
    seen: set[int] = set()
    while planner is not None and id(planner) not in seen:
        seen.add(id(planner))
        close = getattr(planner, "close", None)
        if callable(close):
            close()
        planner = getattr(planner, "planner", None)
