"""Fixtures for the serving tests: a repository of small untrained versions, and a Triton
serving them (the models and requests are in :mod:`tests.support.serving`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from plugin.localstack import TritonServer
from plugin.models.repository import ModelRepository
from plugin.serving.control import ModelControl
from plugin.settings import TritonSettings
from tests.support.serving import client_settings, write_version


@pytest.fixture(scope="session")
def served_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository with versions 1 (seed 1) and 2 (seed 2), version 1 published."""
    root = tmp_path_factory.mktemp("serving") / "model_repository"
    assert write_version(root, seed=1) == 1
    assert write_version(root, seed=2) == 2
    repository = ModelRepository(root)
    repository.prepare_serving(1)
    repository.record_published(1)
    return root


@pytest.fixture(scope="module")
def triton(
    triton_servers: Callable[..., TritonServer], served_root: Path
) -> Iterator[tuple[TritonServer, TritonSettings]]:
    """A real tritonserver over ``served_root`` with version 1 loaded, and settings for it."""
    server = triton_servers(served_root, name="triton-serving")
    settings = client_settings(server)
    with ModelControl(settings, ModelRepository(served_root)) as control:
        control.activate(1)
    yield server, settings
    server.stop()


@pytest.fixture
def control(
    triton: tuple[TritonServer, TritonSettings], served_root: Path
) -> Iterator[ModelControl]:
    """Model control on the session's Triton; version 1 serves when the test starts."""
    _, settings = triton
    with ModelControl(settings, ModelRepository(served_root)) as ctl:
        repository = ModelRepository(served_root)
        pointer = repository.published()
        if ctl.serving_version() != 1 or pointer is None or pointer.version != 1:
            ctl.activate(1)
            repository.record_published(1)
        yield ctl
