"""The Triton planner's failure handling, without a server: breaker, backoff, fast failure."""

from __future__ import annotations

import time
from typing import Any

import pytest

from plugin.adapters.triton_planner import (
    CircuitBreaker,
    CircuitOpenError,
    PlannerUnavailable,
    RetryPolicy,
    TritonPlanner,
    _name_row,
)
from plugin.core.planning import Planner
from plugin.localstack import free_port
from plugin.settings import TritonSettings, load_settings
from tests.support.serving import CATALOG, CLUSTERS, request


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_and_probes_once() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=3, reset_s=10, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.failure("boom")
    breaker.success()  # a success resets the count
    for _ in range(3):
        assert breaker.allow()
        breaker.failure("boom")
    assert breaker.state == "open" and not breaker.allow()
    clock.now += 9.9
    assert not breaker.allow()
    clock.now += 0.2
    assert breaker.state == "half-open"
    assert breaker.allow()  # the one probe
    assert not breaker.allow()  # everyone else still fails fast
    breaker.failure("still down")  # a failed probe re-opens for another reset period
    assert breaker.state == "open" and breaker.retry_in() == pytest.approx(10)
    clock.now += 10
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed" and breaker.allow() and breaker.allow()


def test_backoff_grows_exponentially_within_its_cap() -> None:
    policy = RetryPolicy(retries=5, initial_s=0.1, maximum_s=0.5)
    for attempt, base in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (5, 0.5)]:
        delays = [policy.delay(attempt) for _ in range(50)]
        assert all(base / 2 <= d <= base for d in delays)


def test_server_row_numbers_become_users() -> None:
    message = "planner version 1: row 1: unknown cluster id 99 in HISTORY"
    assert _name_row(message, ["user a", "user b"]) == (
        "planner version 1: user b: unknown cluster id 99 in HISTORY"
    )


def unreachable_planner(**changes: Any) -> TritonPlanner:
    settings = TritonSettings(
        grpc_port=free_port(),
        connect_timeout_s=2,
        request_timeout_s=2,
        retries=1,
        backoff_initial_s=0.01,
        breaker_failures=2,
        breaker_reset_s=30,
        **changes,
    )
    return TritonPlanner(settings, n=4, temperature=1.5, seed=7, n_clusters=48, label=str)


def test_an_unreachable_server_fails_with_what_to_start() -> None:
    planner = unreachable_planner()
    try:
        assert isinstance(planner, Planner)
        with pytest.raises(PlannerUnavailable, match="explore triton up"):
            planner.connect()
    finally:
        planner.close()


def test_retries_then_the_breaker_fails_fast() -> None:
    planner = unreachable_planner()
    requests = [request("u1", (1, 2))]
    try:
        for _ in range(2):
            with pytest.raises(PlannerUnavailable, match=r"after 2 attempt\(s\)"):
                planner.plan(requests)
        started = time.perf_counter()
        with pytest.raises(CircuitOpenError, match="circuit open after 2 failed calls"):
            planner.plan(requests)
        assert time.perf_counter() - started < 0.5
        assert planner.breaker.state == "open"
    finally:
        planner.close()


def test_build_planner_says_how_to_start_triton(tmp_path: Any) -> None:
    from plugin.wiring import triton_planner

    settings = load_settings(
        var_dir=tmp_path / "var",
        triton={"grpc_port": free_port(), "connect_timeout_s": 2},
        models={"repository": tmp_path / "model_repository"},
    )

    class Catalog:
        version = CATALOG

        def __len__(self) -> int:
            return CLUSTERS

    with pytest.raises(ValueError, match="explore triton up"):
        triton_planner(settings, Catalog())  # type: ignore[arg-type]


def test_settings_check_tls_and_keep_the_token_secret() -> None:
    with pytest.raises(ValueError, match="certificate_chain"):
        TritonSettings(ssl=True, private_key="key.pem")
    with pytest.raises(ValueError, match="ssl is false"):
        TritonSettings(root_certificates="ca.pem")
    with pytest.raises(ValueError, match="must differ"):
        TritonSettings(http_port=9000, grpc_port=9000)
    settings = TritonSettings(auth_token="s3cret")
    assert "s3cret" not in settings.model_dump_json()
    assert settings.headers() == {"triton-api-key": "s3cret"}
