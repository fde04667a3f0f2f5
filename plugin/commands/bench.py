"""`explore bench planner`: plans/s of the in-process and the Triton planner, side by side.

Each cell of the grid (planner x batch size x concurrency) runs for a fixed time: ``concurrency``
threads each call ``planner.plan(batch)`` in a loop on batches drawn from a fixed pool of
synthetic requests (K-cluster histories and novelty windows of the configured sizes, seeded).
The Triton planner is the real client (gRPC, retries, breaker) against a real server: by
default a private one started over the model repository on free ports with the published
version loaded, or the one ``explore triton up`` runs (``--server running``). For Triton the
server's own figures for the interval (rows per batch, queue and compute time per request)
come from its /metrics.
"""

from __future__ import annotations

import json
import random
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from plugin.commands.triton import fail, settings, text_table, warn
from plugin.planning import ExplorationPlan, PlanRequest
from plugin.settings import Settings

bench_app = typer.Typer(help="Benchmarks: print a table and write JSON.", no_args_is_help=True)

PlanFn = Callable[[Sequence[PlanRequest]], list[ExplorationPlan]]
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def synthetic_requests(
    count: int, n_clusters: int, k: int, window: int, seed: int = 0
) -> list[PlanRequest]:
    """Requests with K distinct history clusters and a novelty window that contains them."""
    rng = random.Random(seed)
    out = []
    for index in range(count):
        history = tuple(rng.sample(range(n_clusters), k))
        others = [c for c in range(n_clusters) if c not in history]
        seen = rng.sample(others, min(len(others) - 1, max(0, window - k)))
        out.append(PlanRequest(f"u{index}", history, frozenset(history + tuple(seen)), EPOCH))
    return out


def measure(
    plan: PlanFn, pool: Sequence[PlanRequest], batch: int, concurrency: int, seconds: float
) -> dict[str, Any]:
    """Run ``concurrency`` threads calling ``plan`` on ``batch``-sized slices for ``seconds``."""
    batches = [list(pool[i : i + batch]) for i in range(0, len(pool) - batch + 1, batch)]
    for warm in batches[: max(2, concurrency)]:
        plan(warm)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start_gate = threading.Barrier(concurrency + 1)
    deadline = 0.0

    def worker(offset: int) -> None:
        local: list[float] = []
        start_gate.wait()
        i = offset
        while time.perf_counter() < deadline:
            chunk = batches[i % len(batches)]
            i += concurrency
            began = time.perf_counter()
            try:
                plan(chunk)
            except Exception as exc:
                with lock:
                    errors.append(repr(exc))
                break
            local.append(time.perf_counter() - began)
        with lock:
            latencies.extend(local)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    start_gate.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    calls = len(latencies)
    ordered = sorted(latencies)
    return {
        "batch": batch,
        "concurrency": concurrency,
        "calls": calls,
        "plans": calls * batch,
        "seconds": round(elapsed, 3),
        "plans_per_s": round(calls * batch / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(statistics.median(ordered) * 1000, 2) if ordered else None,
        "p99_ms": round(ordered[int(0.99 * (calls - 1))] * 1000, 2) if ordered else None,
        "errors": errors[:3],
    }


@contextmanager
def triton_endpoint(config: Settings, server: str) -> Iterator[tuple[Settings, dict[str, Any]]]:
    """Settings pointing at a Triton that serves the published version, and load figures."""
    from plugin.models.repository import ModelRepository
    from plugin.servers import TritonServer, default_log_path
    from plugin.serving.control import ModelControl

    repo = ModelRepository(config.models.repository)
    if server == "running":
        with ModelControl(config.triton, repo) as ctl:
            ctl.require()
            yield config, {"server": "running", "serving": ctl.ready_versions()}
        return
    triton = TritonServer(
        config.models.repository,
        name="triton-bench",
        log_path=default_log_path("triton-bench", config.var_dir),
        log_verbose=config.triton.log_verbose,
        start_timeout=config.triton.start_timeout_s,
    )
    with triton:
        own = config.model_copy(
            update={
                "triton": config.triton.model_copy(
                    update={
                        "http_port": triton.http_port,
                        "grpc_port": triton.grpc_port,
                        "metrics_port": triton.metrics_port,
                    }
                )
            }
        )
        with ModelControl(own.triton, repo) as ctl:
            report = ctl.load()
        loads = [
            {"model": s.model, "versions": list(s.versions), "seconds": round(s.seconds, 3)}
            for s in report.steps
        ]
        yield (
            own,
            {
                "server": "own",
                "startup_s": round(triton.startup_seconds or 0.0, 2),
                "loads": loads,
            },
        )


def _parse_sizes(values: Sequence[str], name: str) -> list[int]:
    sizes = []
    for value in values:
        for part in value.split(","):
            if not part.strip().isdigit() or int(part) < 1:
                fail(f"{name} must be positive integers, got {part!r}")
            sizes.append(int(part))
    return sizes


@bench_app.command("planner")
def bench_planner(
    planners: Annotated[
        str, typer.Option(help="comma-separated: in-process, triton")
    ] = "in-process,triton",
    batch: Annotated[list[str] | None, typer.Option(help="plan requests per call")] = None,
    concurrency: Annotated[list[str] | None, typer.Option(help="concurrent callers")] = None,
    seconds: Annotated[float, typer.Option(help="measured seconds per cell")] = 5.0,
    server: Annotated[
        str, typer.Option(help="own: start a private Triton | running: use settings.triton")
    ] = "own",
    torch_threads: Annotated[
        int,
        typer.Option(help="torch threads of the in-process planner (0: torch's default)"),
    ] = 1,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="JSON output (default var/bench/planner.json)")
    ] = None,
) -> None:
    """Planner throughput (plans/s) and call latency, in-process vs Triton."""
    import torch

    from plugin.wiring import best_of_n_planner, open_workspace, triton_planner

    # One thread by default, like each Triton model stub (torch_threads in config.pbtxt):
    # spinning intra-op workers on a busy small box are what slows torch most.
    if torch_threads > 0:
        torch.set_num_threads(torch_threads)
    config = settings()
    kinds = [k.strip() for k in planners.split(",") if k.strip()]
    if not kinds or set(kinds) - {"in-process", "triton"}:
        fail(f"--planners takes in-process and/or triton, got {planners!r}")
    if server not in ("own", "running"):
        fail(f"--server is own or running, got {server!r}")
    batches = _parse_sizes(batch or ["1", "64"], "--batch")
    concurrencies = _parse_sizes(concurrency or ["1", "32"], "--concurrency")
    workspace = open_workspace(config)
    catalog = workspace.catalog
    pool = synthetic_requests(
        4096, len(catalog), config.sequence.history_length, config.sequence.novelty_window
    )
    results: list[dict[str, Any]] = []
    meta: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "torch_threads": torch.get_num_threads(),
        "cpus": _cpus(),
        "n": config.planner.candidates,
        "clusters": len(catalog),
        "seconds_per_cell": seconds,
    }

    def grid(name: str, plan: PlanFn, after: Callable[[], dict[str, Any]] | None) -> None:
        for size in batches:
            for callers in concurrencies:
                before = after() if after else None
                row = {"planner": name, **measure(plan, pool, size, callers, seconds)}
                if after and before is not None:
                    row.update(_server_figures(before, after()))
                results.append(row)
                typer.echo(
                    f"{name:10} batch {size:3} x {callers:2}: {row['plans_per_s']:>9,.0f} plans/s"
                )

    try:
        if "in-process" in kinds:
            local = best_of_n_planner(config, catalog)
            meta["version"] = local.model_version
            grid("in-process", local.plan, None)
        if "triton" in kinds:
            with triton_endpoint(config, server) as (endpoint, info):
                meta["triton"] = info
                remote = triton_planner(endpoint, catalog)
                try:
                    grid("triton", remote.plan, lambda: _scrape(endpoint))
                finally:
                    remote.close()
    except (FileNotFoundError, ValueError, ConnectionError, RuntimeError) as exc:
        fail(str(exc))
    columns = ("planner", "batch", "concurrency", "plans_per_s", "p50_ms", "p99_ms")
    extra = ("rows/batch", "queue ms", "compute ms")
    typer.echo(text_table([{c: r.get(c) for c in (*columns, *extra)} for r in results]))
    for row in results:
        if row["errors"]:
            warn(f"{row['planner']} batch {row['batch']} x {row['concurrency']}: {row['errors']}")
    path = json_path or config.var_dir / "bench" / "planner.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    typer.echo(f"wrote {path}")


def _scrape(config: Settings) -> dict[str, Any]:
    from plugin.serving.metrics import scrape

    url = f"http://{config.triton.host}:{config.triton.metrics_port}/metrics"
    try:
        return {"metrics": scrape(url)}
    except OSError:
        return {}


def _server_figures(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    from plugin.serving.metrics import difference

    if "metrics" not in before or "metrics" not in after:
        return {}
    planner = [
        m
        for (model, _), m in difference(after["metrics"], before["metrics"]).items()
        if model == "planner"
    ]
    if not planner:
        return {}
    m = planner[0]
    return {
        "rows/batch": round(m.avg_batch_rows, 1),
        "queue ms": round(m.avg_queue_ms, 3),
        "compute ms": round(m.avg_compute_ms, 3),
    }


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))
