"""Fixtures of the feedback tests (their helpers are in :mod:`tests.support.feedback` and
:mod:`tests.support.streaming`)."""

from __future__ import annotations

import pytest

from tests.support.feedback import MemoryLog, MemoryStore


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def memory_log() -> MemoryLog:
    return MemoryLog()
