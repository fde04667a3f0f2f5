"""Fixtures of the streaming tests (their helpers are in :mod:`tests.support.streaming`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from plugin.settings import Settings, load_settings
from tests.support.streaming import MemoryStore


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def stream_settings(tmp_path: Path) -> Settings:
    return load_settings(
        var_dir=tmp_path / "var",
        sequence={"history_length": 2, "novelty_window": 4},
        planner={"candidates": 4},
        worker={"metrics_port": 0, "plan_timeout_s": 2.0},
    )
