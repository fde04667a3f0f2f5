"""What a job needs before it starts, checked up front.

A missing piece (the data, a trained model, the Triton install, a server that is not running)
becomes one :class:`~plugin.errors.UserError` that says what to run, instead of a traceback
from deep inside a client library minutes into the job.
"""

from __future__ import annotations

import redis

from plugin.core.planning import Planner
from plugin.data.workspace import Workspace, open_workspace
from plugin.errors import InvalidInput, MissingPrerequisite, ServerUnreachable
from plugin.localstack import TritonInstall, port_open
from plugin.models.repository import ModelRepository
from plugin.serving.control import ModelControl
from plugin.settings import Settings
from plugin.wiring import build_planner, redis_client

START_STACK = "start it with `explore stack up` (or point the settings at a running one)"


def workspace(settings: Settings, rebuild: bool = False, progress: bool = False) -> Workspace:
    """The dataset, its time split and its cluster catalog; a bad or missing file, or an
    unknown dataset, is an :class:`~plugin.errors.InvalidInput` naming it."""
    # A bad file (DatasetError) or an unknown dataset (UnknownDataset) is a UserError already.
    try:
        return open_workspace(settings, rebuild=rebuild, progress=progress)
    except (FileNotFoundError, KeyError) as exc:
        raise InvalidInput(str(exc)) from exc


def planner(settings: Settings, workspace: Workspace, version: int | None = None) -> Planner:
    """The configured planner (:func:`plugin.wiring.build_planner`); no trained version, one
    trained on another catalog, or no Triton to plan with is a
    :class:`~plugin.errors.MissingPrerequisite` saying what to run."""
    try:
        return build_planner(settings, workspace, version)
    except (FileNotFoundError, ValueError) as exc:
        raise MissingPrerequisite(str(exc)) from exc


def require_trained_version(settings: Settings) -> int:
    """The version a planner would serve (published, else the newest trained)."""
    version = ModelRepository(settings.models.repository).default_version()
    if version is None:
        raise MissingPrerequisite(
            f"no trained model version in {settings.models.repository}",
            hint="run `explore train` (or `explore demo`) first",
        )
    return version


def require_triton_install() -> None:
    """The tritonserver that ``make triton`` unpacks (``TRITON_HOME`` moves it)."""
    TritonInstall().check()  # a ServerError is a MissingPrerequisite


def require_triton(settings: Settings) -> None:
    """A Triton server answering at ``settings.triton``."""
    with ModelControl(settings.triton, ModelRepository(settings.models.repository)) as control:
        control.require()  # TritonUnreachable is a ServerUnreachable


def require_redis(settings: Settings) -> None:
    """A redis-server answering at ``settings.redis``."""
    client = redis_client(settings)
    try:
        client.ping()
    except redis.RedisError as exc:
        where = f"{settings.redis.host}:{settings.redis.port}"
        raise ServerUnreachable(f"redis at {where} does not answer ({exc})", START_STACK) from exc
    finally:
        client.close()


def require_kafka(settings: Settings) -> None:
    """At least one of ``kafka.bootstrap_servers`` accepting connections."""
    for broker in settings.kafka.broker_list():
        host, _, port = broker.rpartition(":")
        if port.isdigit() and port_open(host.strip("[]"), int(port), timeout=1.0):
            return
    raise ServerUnreachable(
        f"no Kafka broker answers at {settings.kafka.bootstrap_servers}", START_STACK
    )


def require_online_store(settings: Settings) -> None:
    """The Feast online store with its registry: Redis answering (on the Redis profile) and
    the registry a replay, the demo or ``explore stack up`` writes."""
    if settings.feast.online_store == "redis":
        require_redis(settings)
    registry = settings.feast.registry_path
    if not registry.exists():
        raise MissingPrerequisite(
            f"no Feast registry at {registry}: nothing has written plans to this store yet",
            hint="run `explore replay` or `explore demo` (SQLite), or `explore stack up` "
            "and `explore worker` (Redis)",
        )


def require_worker_stack(settings: Settings) -> None:
    """What ``explore worker`` talks to: Kafka, Redis on the Redis profile, and Triton when it
    plans there."""
    require_kafka(settings)
    if settings.feast.online_store == "redis":
        require_redis(settings)
    if settings.planner.kind == "triton":
        require_triton(settings)
    elif settings.planner.kind == "best-of-n":
        require_trained_version(settings)
