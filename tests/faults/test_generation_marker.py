"""The generation marker on a real redis-server (plugin.streaming.generation): what a worker
claims at start, and what makes its per-batch check fail."""

from __future__ import annotations

import pytest
import redis

from plugin.localstack import RedisServer
from plugin.streaming.generation import GenerationGuard, GenerationMarker, StateLost

pytestmark = pytest.mark.integration


@pytest.fixture
def marker(redis_server: RedisServer) -> GenerationMarker:
    client = redis_server.client(db=9)
    client.flushdb()
    return GenerationMarker(client, "explore:generation:test")


def test_workers_starting_on_an_empty_store_agree_on_one_generation(
    marker: GenerationMarker,
) -> None:
    first = GenerationGuard.claim(marker, lambda: False)
    second = GenerationGuard.claim(marker, lambda: True)  # the marker exists: offsets are fine
    assert first.expected == second.expected == marker.read()
    first.check()
    second.check()
    assert first.checks == 1


def test_a_flushed_store_fails_the_check_and_says_what_happened(
    marker: GenerationMarker, redis_server: RedisServer
) -> None:
    guard = GenerationGuard.claim(marker, lambda: False)
    redis_server.client(db=9).flushdb()  # FLUSHALL, on this test's database only
    with pytest.raises(StateLost, match=r"online state lost: generation marker .* is gone"):
        guard.check()


def test_a_marker_written_by_a_rebuild_is_another_generation(marker: GenerationMarker) -> None:
    guard = GenerationGuard.claim(marker, lambda: False)
    marker.replace("rebuild")
    with pytest.raises(StateLost, match="changed to"):
        guard.check()
    assert GenerationGuard.claim(marker, lambda: True).expected == marker.read()


def test_a_start_without_a_marker_but_with_committed_offsets_is_refused(
    marker: GenerationMarker,
) -> None:
    with pytest.raises(StateLost, match=r"committed offsets.*explore rebuild"):
        GenerationGuard.claim(marker, lambda: True)
    assert marker.read() is None, "a refused start must not create a marker"


def test_a_redis_that_does_not_answer_is_an_outage_not_a_loss() -> None:
    # Retried as a failed batch (streams.app), never taken for lost state.
    down = RedisServer()
    client = redis.Redis(port=down.port, socket_connect_timeout=0.5)
    guard = GenerationGuard(GenerationMarker(client, "k"), "x")
    with pytest.raises(redis.ConnectionError):
        guard.check()
