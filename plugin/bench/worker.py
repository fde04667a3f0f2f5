"""Worker events/s: the batched path against the naive per-event path, same events and servers.

Every path runs :meth:`plugin.streaming.worker.StreamWorker.handle`, the function the Faust
agent runs for each batch (validate the records, read the users' states from Feast, apply the
core, plan, write plans and states), over the real servers of a
:class:`~plugin.bench.stack.BenchStack`.
Only Kafka is left out here; the latency bench (``plugin.bench.latency``) adds it.

Paths
-----
``naive``
    :class:`NaivePerEventPath`: one record per ``handle`` call, Feast's standard Redis store
    (the SDK's ``write_to_online_store`` and ``get_online_features``), the Triton client without
    the plan cache. Per event: one Feast read, one Feast write of the state, and per replan one
    Triton call and one Feast write of the plan.
``batched-sdk``
    The worker as ``explore worker`` assembles it (``plugin.wiring.build_worker``: plan cache,
    replan deadline, Triton), in batches of ``worker.batch_size``, on Feast's standard store.
``batched``
    The same on the repo's Redis profile, the fast online store
    (``plugin.adapters.fast_redis_online_store``): what the worker runs now.
``batched+table``
    ``batched`` with the plan cache filled first (``explore precompute``: the paper's lookup
    table), so no replan reaches Triton.
``batched+feedback``
    ``batched`` with the feedback loop on (``plugin.core.feedback``: records logged to Parquet,
    online aggregates, fresh transitions), as the Faust worker runs by default. The other
    paths leave it off, so that every path does the same work as the naive one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from plugin.adapters.plan_cache import all_histories, precompute
from plugin.bench.stack import BenchStack, close_planner
from plugin.bench.workload import Kind, Order, Workload, build_workload, records
from plugin.core.events import WatchEvent
from plugin.observability.metrics import WorkerMetrics
from plugin.settings import Settings
from plugin.streaming.worker import Record, StreamWorker
from plugin.wiring import build_planner, build_processor, build_worker

PATHS = ("naive", "batched-sdk", "batched", "batched+table", "batched+feedback")


@dataclass
class PathResult:
    """One path on one workload."""

    path: str
    workload: str
    order: str
    batch_size: int
    events: int
    seconds: float
    replans: int
    plans: int
    users: int
    seconds_by_step: dict[str, float] = field(default_factory=dict)
    cache_hit_rate: float | None = None
    planner_calls: int | None = None

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "events_per_s": round(self.events_per_s, 1)}


class NaivePerEventPath:
    """The baseline a first implementation would be: every event on its own.

    Each record goes through ``StreamWorker.handle`` alone, over a processor whose store is
    Feast's standard Redis store and whose planner is the bare Triton client: one Feast read and
    one Feast write per event, and one Triton call plus one more Feast write per replan. No
    batching, no plan cache, no deadline thread.
    """

    def __init__(self, settings: Settings, stack: BenchStack) -> None:
        catalog = stack.workspace.catalog
        self.planner = build_planner(settings, stack.workspace)
        processor = build_processor(settings, catalog, self.planner)
        self.worker = StreamWorker(processor, catalog, settings, WorkerMetrics())

    def handle(self, batch: Sequence[Record]) -> None:
        for record in batch:
            self.worker.handle([record])

    def close(self) -> None:
        close_planner(self.planner)


def batched_worker(settings: Settings) -> StreamWorker:
    """The worker as ``explore worker`` builds it (metrics server off), with the feedback
    loop when ``settings.feedback.enabled``."""
    return build_worker(settings, WorkerMetrics())


def _precompute(worker: StreamWorker, stack: BenchStack) -> None:
    cache = worker.cache
    if cache is None:
        return
    histories = all_histories(len(stack.workspace.catalog), stack.settings.sequence.history_length)
    precompute(cache.planner, cache.cache, histories, stack.settings.cache.precompute_batch, "all")


def run_path(
    stack: BenchStack,
    path: str,
    workload: Workload,
    batch_size: int,
    max_seconds: float,
    before_timing: Callable[[StreamWorker], None] | None = None,
) -> PathResult:
    """Drive one path over the workload's events (priming first, untimed) until they run out
    or ``max_seconds`` have passed; the timed part's figures."""
    name = f"{path}-{workload.name}-{workload.order}-b{batch_size}"
    if path == "naive":
        settings = stack.arm(name, standard=True, cache=False, batch_size=1)
        naive = NaivePerEventPath(settings, stack)
        worker, close = naive.worker, naive.close
        handle: Callable[[Sequence[Record]], Any] = naive.handle
    else:
        settings = stack.arm(
            name,
            standard=path == "batched-sdk",
            feedback=path == "batched+feedback",
            batch_size=batch_size,
        )
        worker = batched_worker(settings)
        handle, close = worker.handle, lambda: close_planner(worker.processor.planner)
    try:
        for start in range(0, len(workload.priming), 500):
            worker.handle(records(workload.priming[start : start + 500]))
        if path == "batched+table":
            _precompute(worker, stack)
        if before_timing is not None:
            before_timing(worker)
        return _timed(worker, handle, path, workload, batch_size, max_seconds)
    finally:
        close()


def _timed(
    worker: StreamWorker,
    handle: Callable[[Sequence[Record]], Any],
    path: str,
    workload: Workload,
    batch_size: int,
    max_seconds: float,
) -> PathResult:
    before = _totals(worker)
    timed = records(workload.events, first_offset=len(workload.priming))
    # The naive path handles its records one by one; 50 at a time only bounds the clock checks.
    step = 50 if path == "naive" else batch_size
    done = 0
    started = time.perf_counter()
    while done < len(timed):
        chunk = timed[done : done + step]
        handle(chunk)
        done += len(chunk)
        if time.perf_counter() - started >= max_seconds:
            break
    seconds = time.perf_counter() - started
    after = _totals(worker)
    cache = worker.cache.stats if worker.cache is not None else None
    hits = (cache.hits - before["hits"]) if cache else 0
    misses = (cache.misses - before["misses"]) if cache else 0
    return PathResult(
        path=path,
        workload=workload.name,
        order=workload.order,
        batch_size=1 if path == "naive" else batch_size,
        events=done,
        seconds=round(seconds, 3),
        replans=after["replans"] - before["replans"],
        plans=after["plans"] - before["plans"],
        users=len({r.key for r in timed[:done]}),
        seconds_by_step={
            k: round(after[k] - before[k], 3) for k in ("read", "core", "plan", "write")
        },
        cache_hit_rate=round(hits / (hits + misses), 3) if hits + misses else None,
        planner_calls=(after["replans"] - before["replans"]) if path == "naive" else None,
    )


def _totals(worker: StreamWorker) -> dict[str, Any]:
    t = worker.totals
    cache = worker.cache.stats if worker.cache is not None else None
    return {
        "replans": t.replans,
        "plans": t.plans,
        "read": t.timings.read,
        "core": t.timings.core,
        "plan": t.timings.plan,
        "write": t.timings.write,
        "hits": cache.hits if cache else 0,
        "misses": cache.misses if cache else 0,
    }


def worker_bench(
    stack: BenchStack,
    events: Sequence[WatchEvent],
    *,
    paths: Sequence[str] = PATHS,
    kinds: Sequence[Kind] = ("sequence-only", "replans"),
    orders: Sequence[Order] = ("interleaved",),
    limit: int = 20_000,
    naive_seconds: float = 8.0,
    batched_seconds: float = 30.0,
    on_result: Callable[[PathResult], None] | None = None,
) -> list[PathResult]:
    """Every path on every workload; see the module docstring."""
    results = []
    batch_size = stack.settings.worker.batch_size
    for order in orders:
        for kind in kinds:
            workload = build_workload(events, stack.workspace.catalog, kind, order, limit)
            for path in paths:
                if kind == "sequence-only" and path == "batched+table":
                    continue  # nothing is replanned: the table changes nothing
                seconds = naive_seconds if path == "naive" else batched_seconds
                result = run_path(stack, path, workload, batch_size, seconds)
                results.append(result)
                if on_result is not None:
                    on_result(result)
    return results


def ratios(results: Sequence[PathResult]) -> list[dict[str, Any]]:
    """events/s of each batched path over the naive path, per workload and order."""
    out = []
    naive = {(r.workload, r.order): r for r in results if r.path == "naive"}
    for r in results:
        base = naive.get((r.workload, r.order))
        if r.path != "naive" and base is not None and base.events_per_s:
            out.append(
                {
                    "workload": r.workload,
                    "order": r.order,
                    "path": r.path,
                    "naive_events_per_s": round(base.events_per_s, 1),
                    "events_per_s": round(r.events_per_s, 1),
                    "ratio": round(r.events_per_s / base.events_per_s, 1),
                }
            )
    return out
