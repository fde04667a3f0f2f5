"""Planner plans/s: the in-process and the Triton planner, and the plan cache in front of it.

Each cell (planner x batch size x concurrency) runs for a fixed time: ``concurrency`` threads
each call ``planner.plan(batch)`` in a loop on batches drawn from a fixed pool of synthetic
requests (K-cluster histories and novelty windows of the configured sizes, seeded). The
Triton planner is the real client (gRPC, retries, breaker) against a real server; the
server's own figures for the interval (rows per batch, queue and compute time per request)
come from its /metrics.
"""

from __future__ import annotations

import os
import random
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import torch

from plugin.core.planning import ExplorationPlan, PlanRequest
from plugin.data.workspace import open_workspace
from plugin.jobs.precompute import precompute_plans
from plugin.jobs.private_stack import private_stack
from plugin.models.planner import best_of_n_planner
from plugin.models.repository import ModelRepository
from plugin.serving.control import ModelControl
from plugin.serving.server_metrics import difference, scrape
from plugin.settings import Settings
from plugin.wiring import cached_planner, ranking_cache, triton_planner

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
        # Most recent first, the history leading: a version whose window term weighs the
        # window by recency needs the order, not only the set.
        recent = history + tuple(seen)
        out.append(PlanRequest(f"u{index}", history, frozenset(recent), EPOCH, window=recent))
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
    """Settings pointing at a Triton that serves the published version, and load figures:
    ``running`` is the settings' server, ``own`` a private one started for the run."""
    if server == "running":
        with ModelControl(config.triton, ModelRepository(config.models.repository)) as ctl:
            ctl.require()
            yield config, {"server": "running", "serving": ctl.ready_versions()}
        return
    with private_stack(config, "bench-planner", redis=False, kafka=False) as stack:
        steps = stack.load.steps if stack.load is not None else []
        loads = [
            {"model": s.model, "versions": list(s.versions), "seconds": round(s.seconds, 3)}
            for s in steps
        ]
        info = {"server": "own", "startup_s": stack.startup["triton_s"], "loads": loads}
        yield stack.settings, info


def scrape_metrics(config: Settings) -> dict[str, Any]:
    """The Triton server's /metrics now ({} when it does not answer)."""
    url = f"http://{config.triton.host}:{config.triton.metrics_port}/metrics"
    try:
        return {"metrics": scrape(url)}
    except OSError:
        return {}


def server_figures(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The planner model's rows per batch and queue/compute ms between two scrapes."""
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


# Cells of the short planner grid `explore bench all` runs: (planner, batch, concurrency).
ALL_CELLS: tuple[tuple[str, int, int], ...] = (
    ("in-process", 64, 1),
    ("triton", 1, 1),
    ("triton", 1, 16),
    ("triton", 64, 1),
    ("triton", 64, 4),
    ("cache (all hits)", 64, 1),
)


def planner_grid(
    stack: Any,
    cells: Sequence[tuple[str, int, int]] = ALL_CELLS,
    seconds: float = 2.0,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Plans/s of each cell on the bench stack's Triton; ``cache (all hits)`` is the Redis
    plan cache in front of it, filled first (what the worker meets once the table is full)."""
    torch.set_num_threads(1)  # like each Triton stub; see docs/TRITON.md
    config: Settings = stack.settings
    catalog = stack.workspace.catalog
    pool = synthetic_requests(
        4096, len(catalog), config.sequence.history_length, config.sequence.novelty_window
    )
    remote = triton_planner(config, catalog)
    planners: dict[str, tuple[PlanFn, Callable[[], dict[str, Any]] | None]] = {
        "triton": (remote.plan, lambda: scrape_metrics(config))
    }
    kinds = {cell[0] for cell in cells}
    if "in-process" in kinds:
        planners["in-process"] = (best_of_n_planner(config, catalog, stack.version).plan, None)
    if "cache (all hits)" in kinds:
        arm = stack.arm("planner-cache")
        precompute_plans(arm, stack.workspace, remote, "all", ranking_cache(arm))
        cached = cached_planner(arm, remote)
        assert cached is not None  # the arm's cache is on, and Triton's planner ranks
        planners["cache (all hits)"] = (cached.plan, None)
    rows = []
    try:
        for name, batch, concurrency in cells:
            plan, metrics = planners[name]
            before = metrics() if metrics else None
            row = {"planner": name, **measure(plan, pool, batch, concurrency, seconds)}
            if metrics is not None and before is not None:
                row.update(server_figures(before, metrics()))
            rows.append(row)
            if on_row is not None:
                on_row(row)
    finally:
        remote.close()
    return rows


PLANNER_KINDS = ("in-process", "triton")


def planner_bench(
    config: Settings,
    kinds: Sequence[str],
    batches: Sequence[int],
    concurrencies: Sequence[int],
    seconds: float,
    server: str = "own",
    torch_threads: int = 1,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """``explore bench planner``: plans/s and call latency of each planner in ``kinds`` for
    every batch size x concurrency, the in-process planner on ``torch_threads`` threads
    (0: torch's default) and Triton ``own`` (a private server) or ``running`` (the settings').
    The document: ``meta`` and one row per cell in ``results``."""
    if not kinds or set(kinds) - set(PLANNER_KINDS):
        raise ValueError(f"planners are in-process and/or triton, not {', '.join(kinds)!r}")
    if server not in ("own", "running"):
        raise ValueError(f"the Triton server is own or running, not {server!r}")
    # One thread by default, like each Triton model stub (torch_threads in config.pbtxt):
    # spinning intra-op workers on a busy small box are what slows torch most.
    if torch_threads > 0:
        torch.set_num_threads(torch_threads)
    catalog = open_workspace(config).catalog
    pool = synthetic_requests(
        4096, len(catalog), config.sequence.history_length, config.sequence.novelty_window
    )
    results: list[dict[str, Any]] = []
    meta: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "torch_threads": torch.get_num_threads(),
        "cpus": len(os.sched_getaffinity(0)),
        "n": config.planner.candidates,
        "clusters": len(catalog),
        "seconds_per_cell": seconds,
    }

    def grid(name: str, plan: PlanFn, scraped: Callable[[], dict[str, Any]] | None) -> None:
        for size in batches:
            for callers in concurrencies:
                before = scraped() if scraped else None
                row = {"planner": name, **measure(plan, pool, size, callers, seconds)}
                if scraped and before is not None:
                    row.update(server_figures(before, scraped()))
                results.append(row)
                if on_row is not None:
                    on_row(row)

    if "in-process" in kinds:
        local = best_of_n_planner(config, catalog)
        meta["version"] = local.model_version
        grid("in-process", local.plan, None)
    if "triton" in kinds:
        with triton_endpoint(config, server) as (endpoint, info):
            meta["triton"] = info
            remote = triton_planner(endpoint, catalog)
            try:
                grid("triton", remote.plan, lambda: scrape_metrics(endpoint))
            finally:
                remote.close()
    return {"meta": meta, "results": results}
