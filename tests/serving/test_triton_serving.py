"""The planner on a real tritonserver: identical plans, bad input, model management, metrics.

One server (session fixture ``triton``) serves the repository ``served_root``; each test
starts with version 1 serving and published (fixture ``control``).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from plugin.adapters.triton_planner import TritonPlanner, TritonPlannerError
from plugin.bench.planner import synthetic_requests
from plugin.cli.app import app
from plugin.localstack import TritonServer, free_port
from plugin.models.planner import BestOfNPlanner
from plugin.models.repository import ModelRepository, version_label
from plugin.serving.contract import PLANNER_MODEL, planner_inputs, triton_dtype
from plugin.serving.control import ModelControl
from plugin.serving.server_metrics import scrape
from plugin.settings import TritonSettings
from tests.support.serving import CATALOG, CLUSTERS, request, write_version

pytestmark = pytest.mark.integration
Served = tuple[TritonServer, TritonSettings]


def reference(root: Path, version: int) -> BestOfNPlanner:
    trained = ModelRepository(root).load(version)
    return BestOfNPlanner(trained.novelty, trained.alignment, 16, 1.5, 7, trained.label)


def remote(root: Path, settings: TritonSettings) -> TritonPlanner:
    repository = ModelRepository(root)

    def label(version: int) -> str:
        return version_label(version, repository.manifest(version)["catalog_version"])

    return TritonPlanner(settings, n=16, temperature=1.5, seed=7, n_clusters=48, label=label)


@pytest.fixture
def planner(triton: Served, served_root: Path, control: ModelControl) -> Iterator[TritonPlanner]:
    client = remote(served_root, triton[1])
    try:
        yield client
    finally:
        client.close()


def mixed_requests() -> list[Any]:
    requests = synthetic_requests(300, CLUSTERS, k=2, window=20, seed=3)
    return [
        *requests,
        *requests[:5],  # duplicate histories and users
        request("short", (4,)),
        request("long", (9, 8, 7)),  # longer than K: the seed covers the whole history
        request("no-window", (5, 6), set()),
        request("narrow", (11, 12), set(range(CLUSTERS)) - {30, 31, 32}),  # 3 novel
    ]


def test_triton_plans_equal_in_process_plans(planner: TritonPlanner, served_root: Path) -> None:
    requests = mixed_requests()
    planner.connect()
    assert planner.model_version == f"best-of-n-v1-{CATALOG[:8]}"
    expected = reference(served_root, 1).plan(requests)
    assert planner.plan(requests) == expected
    assert planner.plan(requests, n=4) == reference(served_root, 1).plan(requests, n=4)
    assert len(planner.plan([requests[-1]])[0].candidates) == 3


def test_n_and_temperature_left_to_the_served_version_give_its_plans(
    triton: Served, served_root: Path, control: ModelControl
) -> None:
    """N=0 and TEMPERATURE=0 on the wire: the BLS planner uses the version's own values (for a
    version trained without the search, the planner defaults n=16, T=1.5, weight 1)."""
    requests = mixed_requests()
    repository = ModelRepository(served_root)

    def label(version: int) -> str:
        return version_label(version, repository.manifest(version)["catalog_version"])

    with TritonPlanner(
        triton[1], n=None, temperature=None, seed=7, n_clusters=48, label=label
    ) as planner:
        assert planner.plan(requests) == reference(served_root, 1).plan(requests)


def test_requests_split_over_concurrent_triton_requests_give_the_same_plans(
    triton: Served, served_root: Path, control: ModelControl
) -> None:
    requests = mixed_requests()
    small = triton[1].model_copy(update={"max_rows_per_request": 7})
    with remote(served_root, small) as planner:
        assert planner.plan(requests) == reference(served_root, 1).plan(requests)


def test_rank_equals_the_in_process_ranking(planner: TritonPlanner, served_root: Path) -> None:
    histories = [(1, 2), (3,), (1, 2), (47, 0, 5)]
    rankings = planner.rank(histories)
    assert rankings == reference(served_root, 1).rank(histories)
    assert sorted(rankings[0].order) == list(range(48))


def test_plan_async_from_another_event_loop(planner: TritonPlanner, served_root: Path) -> None:
    requests = synthetic_requests(64, CLUSTERS, k=2, window=20, seed=4)
    batches = [requests[i : i + 8] for i in range(0, 64, 8)]

    async def all_batches() -> list[Any]:
        return await asyncio.gather(*(planner.plan_async(b) for b in batches))

    results = asyncio.run(all_batches())
    assert [p for batch in results for p in batch] == reference(served_root, 1).plan(requests)


async def _infer_raw(settings: TritonSettings, arrays: dict[str, np.ndarray]) -> Any:
    import tritonclient.grpc.aio as triton_aio

    client = triton_aio.InferenceServerClient(f"{settings.host}:{settings.grpc_port}")
    try:
        inputs = []
        for name, array in arrays.items():
            tensor = triton_aio.InferInput(name, list(array.shape), triton_dtype(array))
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        return await client.infer(PLANNER_MODEL, inputs)
    finally:
        await client.close()


def test_bad_requests_fail_alone_with_clear_messages(triton: Served, control: ModelControl) -> None:
    from tritonclient.utils import InferenceServerException

    settings = triton[1]
    good = planner_inputs([(3, 5)], [(3, 5)], n=4, temperature=1.5, seed=7)
    bad = {
        "unknown id": (planner_inputs([(3, 480)], [()], 4, 1.5, 7), "unknown cluster id 480"),
        "empty history": (planner_inputs([()], [()], 4, 1.5, 7), "HISTORY is empty"),
        "n too large": (planner_inputs([(3,)], [()], 49, 1.5, 7), r"N=49 is out of range"),
        "n negative": (planner_inputs([(3,)], [()], -1, 1.5, 7), r"N=-1 is out of range"),
        "cold": (planner_inputs([(3,)], [()], 4, -1.0, 7), "TEMPERATURE=-1.0 must be"),
    }

    async def everything() -> list[Any]:
        calls = [_infer_raw(settings, good)]
        for arrays, _ in bad.values():
            calls += [_infer_raw(settings, arrays), _infer_raw(settings, good)]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(everything())
    goods, bads = [results[0], *results[2::2]], results[1::2]
    for result in goods:
        assert not isinstance(result, BaseException), result
        assert result.as_numpy("CANDIDATES").shape == (1, 4)
    for (case, (_, message)), result in zip(bad.items(), bads, strict=True):
        assert isinstance(result, InferenceServerException), case
        assert result.status() == "StatusCode.INVALID_ARGUMENT", case
        assert re.search(message, result.message()), (case, result.message())
        assert result.message().startswith("planner version 1: row 0:"), result.message()


def test_the_adapter_names_the_bad_user_and_keeps_the_circuit_closed(
    planner: TritonPlanner,
) -> None:
    good, bad = request("fine", (3, 5)), request("broken", (3, 480))
    with pytest.raises(TritonPlannerError, match="user broken: unknown cluster id 480"):
        planner.plan([good, bad])
    assert planner.breaker.state == "closed"
    assert planner.plan([good])[0].user_id == "fine"


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, served_root: Path, triton: Served) -> Any:
    """Run `explore ...` in-process against the session's server and repository."""
    settings = triton[1]
    monkeypatch.setenv("EXPLORE_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("EXPLORE_MODELS__REPOSITORY", str(served_root))
    monkeypatch.setenv("EXPLORE_TRITON__HTTP_PORT", str(settings.http_port))
    monkeypatch.setenv("EXPLORE_TRITON__GRPC_PORT", str(settings.grpc_port))
    monkeypatch.setenv("EXPLORE_TRITON__METRICS_PORT", str(settings.metrics_port))
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, result.output
        return str(result.output)

    return run


def test_publish_load_rollback_cycle(
    cli: Any, control: ModelControl, triton: Served, served_root: Path, tmp_path: Path
) -> None:
    requests = synthetic_requests(50, CLUSTERS, k=2, window=20, seed=5)
    with remote(served_root, triton[1]) as planner:
        before = planner.plan(requests)
        assert {p.model_version for p in before} == {f"best-of-n-v1-{CATALOG[:8]}"}

        out = cli("models", "publish", "2")
        assert "published version 2 (loaded on Triton)" in out
        assert "rollback target: 1" in out
        assert control.ready_versions() == {"novelty": [2], "alignment": [2], "planner": [2]}
        after = planner.plan(requests)
        assert after == reference(served_root, 2).plan(requests)
        assert {p.model_version for p in after} == {f"best-of-n-v2-{CATALOG[:8]}"}
        assert after != before  # other weights, other plans

        listing = tmp_path / "list.json"
        cli("models", "list", "--json", str(listing))
        roles = {row["version"]: row["role"] for row in json.loads(listing.read_text())["versions"]}
        assert roles[2] == "published" and roles[1] == "previous #1"

        out = cli("models", "rollback")
        assert "rolled back to version 1 (loaded on Triton)" in out
        assert control.serving_version() == 1
        assert planner.plan(requests) == before
    pointer = ModelRepository(served_root).published()
    assert pointer is not None and pointer.version == 1


def test_publishing_a_gate_failure_is_refused(
    cli: Any, control: ModelControl, served_root: Path
) -> None:
    version = write_version(served_root, seed=3, passed=False)
    out = cli("models", "publish", str(version), code=2)
    assert f"version {version} failed its quality gate" in out
    assert control.serving_version() == 1
    assert not (served_root / "planner" / str(version)).exists()


def test_a_bad_model_is_survived(
    cli: Any, control: ModelControl, triton: Served, served_root: Path
) -> None:
    version = write_version(served_root, seed=4)
    (served_root / "alignment" / str(version) / "weights.pt").write_bytes(b"not a checkpoint")
    out = cli("models", "publish", str(version), code=2)
    assert f"loading version {version} failed" in out
    assert "planner version 1 still serves" in out
    assert control.ready_versions() == {"novelty": [1], "alignment": [1], "planner": [1]}
    pointer = ModelRepository(served_root).published()
    assert pointer is not None and pointer.version == 1
    with remote(served_root, triton[1]) as planner:
        requests = [request("u", (1, 2))]
        assert planner.plan(requests) == reference(served_root, 1).plan(requests)


def test_models_the_planner_needs_cannot_be_unloaded(cli: Any, control: ModelControl) -> None:
    out = cli("models", "unload", "novelty", code=2)
    assert "refusing to unload novelty: the planner (version 1) needs it" in out
    cli("models", "unload", "planner")
    assert "planner" not in control.ready_versions()
    cli("models", "load", "planner")  # its dependencies are still loaded
    assert control.serving_version() == 1
    cli("models", "unload", "planner")
    cli("models", "unload", "alignment")
    out = cli("models", "load", "planner", code=2)
    assert "the planner needs alignment version 1 loaded first" in out
    out = cli("models", "load")
    assert "loaded version 1" in out
    assert control.ready_versions() == {"novelty": [1], "alignment": [1], "planner": [1]}


def test_triton_metrics_are_readable(
    cli: Any, planner: TritonPlanner, triton: Served, tmp_path: Path
) -> None:
    server = triton[0]
    key = (PLANNER_MODEL, "1")
    before = scrape(server.metrics_url)
    planner.plan(synthetic_requests(32, CLUSTERS, k=2, window=20, seed=6))
    # The backend reports a request's statistics after its response has gone out: wait.
    deadline = time.monotonic() + 5
    while True:
        after = scrape(server.metrics_url)
        delta = after[key].minus(before.get(key))
        if delta.inferences >= 32 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert delta.success >= 1 and delta.inferences >= 32
    assert delta.request_us > 0 and delta.queue_us > 0 and delta.compute_us > 0
    assert after[("novelty", "1")].executions >= 1
    path = tmp_path / "metrics.json"
    out = cli("triton", "metrics", "--json", str(path))
    assert "queue ms" in out and "compute ms" in out
    rows = {(r["model"], r["version"]): r for r in json.loads(path.read_text())["metrics"]}
    assert rows[(PLANNER_MODEL, "1")]["requests"] >= 1


def test_triton_up_status_down(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, served_root: Path, control: ModelControl
) -> None:
    ports = [free_port() for _ in range(3)]
    monkeypatch.setenv("EXPLORE_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("EXPLORE_MODELS__REPOSITORY", str(served_root))
    for name, port in zip(("HTTP", "GRPC", "METRICS"), ports, strict=True):
        monkeypatch.setenv(f"EXPLORE_TRITON__{name}_PORT", str(port))
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, result.output
        return str(result.output)

    assert "not reachable" in run("triton", "status", code=1)
    try:
        out = run("triton", "up")
        assert "triton: started" in out and "loading published version 1" in out
        again = run("triton", "up")
        assert "already running" in again and "published version 1 already serves" in again
        status = tmp_path / "status.json"
        run("triton", "status", "--json", str(status))
        state = json.loads(status.read_text())
        ready = {(m["name"], m["state"]) for m in state["models"]}
        assert ready == {("novelty", "READY"), ("alignment", "READY"), ("planner", "READY")}
        assert (tmp_path / "var" / "logs" / "triton.log").stat().st_size > 0
    finally:
        out = run("triton", "down")
    assert "triton: stopped" in out
    assert "triton: not running" in run("triton", "down")
