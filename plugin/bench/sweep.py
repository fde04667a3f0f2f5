"""The batch-size sweep: the worker's batched path at one batch size after another.

Same events (``replans``, ``interleaved``), same servers, a fresh Redis database each, and the
plan cache filled first (``batched+table``), so that what changes with the batch size is the
batching of the Feast reads and writes and the core, not how many histories miss the cache
(the planner's own batching is in the planner table). Batch size 1 is the batched code path
with one event per batch: the gap to the naive path is then the fast store and the cache.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from plugin.bench.stack import BenchStack
from plugin.bench.worker import PathResult, run_path
from plugin.bench.workload import Order, build_workload
from plugin.core.events import WatchEvent

SIZES = (1, 10, 50, 100, 250, 500, 1000, 2000)


def sweep(
    stack: BenchStack,
    events: Sequence[WatchEvent],
    *,
    sizes: Sequence[int] = SIZES,
    order: Order = "interleaved",
    limit: int = 20_000,
    seconds: float = 4.0,
    on_result: Callable[[PathResult], None] | None = None,
) -> list[PathResult]:
    """One :class:`PathResult` per batch size."""
    workload = build_workload(events, stack.workspace.catalog, "replans", order, limit)
    results = []
    for size in sizes:
        result = run_path(stack, "batched+table", workload, size, seconds)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def sweep_rows(results: Sequence[PathResult]) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        batches = max(1, -(-r.events // r.batch_size))
        rows.append(
            {
                "batch_size": r.batch_size,
                "events": r.events,
                "events_per_s": round(r.events_per_s, 1),
                "ms_per_batch": round(1000 * r.seconds / batches, 2),
                **{
                    f"{k}_ms_per_batch": round(1000 * v / batches, 2)
                    for k, v in r.seconds_by_step.items()
                },
            }
        )
    return rows
