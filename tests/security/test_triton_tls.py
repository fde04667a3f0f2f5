"""Triton's gRPC endpoint over TLS with an API key: model management and planning from settings.

tritonserver 2.51 serves gRPC with ``--grpc-use-ssl`` and checks a header on chosen protocols
with ``--grpc-restricted-protocol``. The client side is ``settings.triton`` (``ssl``,
``root_certificates``, ``auth_token`` as a ``SecretStr``), used by both ``ModelControl`` and the
``TritonPlanner``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from plugin.core.planning import PlanRequest
from plugin.localstack import TritonServer
from plugin.models.planner import best_of_n_planner
from plugin.models.repository import ModelRepository
from plugin.security import ServerTLS
from plugin.serving.control import ModelControl
from plugin.settings import TritonSettings
from plugin.wiring import triton_planner
from tests.support.workbench import make_workbench

pytestmark = pytest.mark.integration

TOKEN = "tr1ton-" + "k3y" * 8


def test_planning_over_tls_with_an_api_key(
    tls: Any,
    triton_server_factory: Callable[..., TritonServer],
    tmp_path: Path,
) -> None:
    bench = make_workbench(tmp_path, events=0)
    restricted = "health,metadata,model-repository,inference,statistics:api-key"
    server = triton_server_factory(
        bench.settings.models.repository,
        name="triton-tls",
        grpc_tls=ServerTLS(tls.server_cert, tls.server_key),
        # Triton takes the key only on its command line; `explore triton up` never sets one.
        extra_args=[f"--grpc-restricted-protocol={restricted}={TOKEN}"],
    )
    base = bench.settings.triton.model_copy(
        update={
            "http_port": server.http_port,
            "grpc_port": server.grpc_port,
            "metrics_port": server.metrics_port,
            "connect_timeout_s": 3.0,
            "retries": 0,
            # Triton checks a restricted protocol's key in "triton-grpc-protocol-<key>".
            "auth_header": "triton-grpc-protocol-api-key",
        }
    )

    def triton(**fields: Any) -> TritonSettings:
        return TritonSettings.model_validate({**base.model_dump(), **fields})

    secure = triton(ssl=True, root_certificates=tls.ca, auth_token=TOKEN)
    repository = ModelRepository(bench.settings.models.repository)
    # Each wrong client is refused: plaintext, another CA, no key, a wrong key.
    for wrong in (
        triton(),
        triton(ssl=True, root_certificates=tls.rogue_ca, auth_token=TOKEN),
        triton(ssl=True, root_certificates=tls.ca),
        triton(ssl=True, root_certificates=tls.ca, auth_token="not-the-key"),
    ):
        with ModelControl(wrong, repository) as control:
            assert not control.reachable()
    with ModelControl(secure, repository) as control:
        report = control.load()
    assert report.version == 1

    settings = bench.settings.model_copy(update={"triton": secure})
    catalog = bench.workspace.catalog
    requests = [
        PlanRequest("u1", (3, 7), frozenset({3, 7, 11}), datetime(1998, 1, 1, tzinfo=UTC)),
        PlanRequest("u2", (5,), frozenset({5}), datetime(1998, 1, 2, tzinfo=UTC)),
    ]
    with triton_planner(settings, catalog) as planner:
        served = planner.plan(requests)
    local = best_of_n_planner(settings, catalog).plan(requests)

    def rounded(plan: Any) -> Any:
        return dataclasses.replace(plan, scores=tuple(round(s, 4) for s in plan.scores))

    assert [rounded(p) for p in served] == [rounded(p) for p in local]
    # The key is a SecretStr: masked wherever the settings are printed.
    assert TOKEN not in settings.model_dump_json()
    assert "**" in str(secure.auth_token)
