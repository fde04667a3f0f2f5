"""The local Triton server and its model management (``explore triton ...``, ``explore models
...``, and the Triton part of ``explore stack up``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from plugin.errors import InvalidInput
from plugin.localstack import RunDirectory, TritonServer, UpResult, default_log_path
from plugin.models.repository import ModelRepository
from plugin.serving.control import LoadReport, ModelControl
from plugin.settings import Settings

SERVER_NAME = "triton"


def repository(settings: Settings) -> ModelRepository:
    """The model repository of ``models.repository``: versions, manifests, the pointer."""
    return ModelRepository(settings.models.repository)


@contextmanager
def model_control(settings: Settings) -> Iterator[ModelControl]:
    """Triton's model management on ``settings.triton``. What it refuses (no server, a version
    that failed its gate, unloading a model the planner needs) is a one-line user error."""
    # TritonUnreachable, PublishError and ModelControlError are UserErrors already.
    try:
        with ModelControl(settings.triton, repository(settings)) as control:
            yield control
    except FileNotFoundError as exc:
        raise InvalidInput(str(exc)) from exc


@dataclass
class PublishedLoad:
    """What loading the published version found: no version published (``version`` None),
    the version already serving, or the load's report."""

    version: int | None
    already_serving: bool = False
    report: LoadReport | None = None

    def as_dict(self) -> dict[str, Any] | None:
        if self.version is None:
            return None
        if self.report is None:
            return {"version": self.version, "already_serving": self.already_serving}
        return self.report.as_dict()


def load_published(settings: Settings) -> PublishedLoad:
    """Make Triton serve the published version, unless it already does."""
    pointer = repository(settings).published()
    if pointer is None:
        return PublishedLoad(None)
    with model_control(settings) as control:
        if control.serving_version() == pointer.version:
            return PublishedLoad(pointer.version, already_serving=True)
        return PublishedLoad(pointer.version, report=control.load())


def local_triton(settings: Settings) -> TritonServer:
    """The detached tritonserver of ``explore triton up`` and ``explore stack up``: 127.0.0.1,
    the settings' ports, explicit model control, its log under ``<var_dir>/logs``."""
    if settings.triton.host != "127.0.0.1":
        raise InvalidInput(
            f"the local Triton runs on 127.0.0.1; triton.host is {settings.triton.host!r} "
            "(EXPLORE_TRITON__HOST)"
        )
    root = settings.models.repository
    root.mkdir(parents=True, exist_ok=True)
    return TritonServer(
        root,
        http_port=settings.triton.http_port,
        grpc_port=settings.triton.grpc_port,
        metrics_port=settings.triton.metrics_port,
        log_verbose=settings.triton.log_verbose,
        name=SERVER_NAME,
        log_path=default_log_path(SERVER_NAME, settings.var_dir),
        start_timeout=settings.triton.start_timeout_s,
    )


@dataclass
class TritonUp:
    """The detached server (started now or already running), and the published version's
    load when asked for."""

    server: UpResult
    load: PublishedLoad | None

    def as_dict(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "server": self.server.state.endpoints,
            "started": self.server.started,
        }
        if self.load is not None:
            payload["load"] = self.load.as_dict()
        return payload


def triton_up(settings: Settings, load: bool = True) -> TritonUp:
    """Start tritonserver detached (idempotent) and, with ``load``, serve the published
    version."""
    result = local_triton(settings).up(RunDirectory.default(settings.var_dir))
    return TritonUp(result, load_published(settings) if load else None)
