"""The consumer's fetch wait against event-to-plan latency and idle CPU (``explore bench
fetch-wait``).

tansu answers a fetch only when ``fetch_max_wait_ms`` has passed, even when records arrived
meanwhile (docs/STREAMING.md), so at a paced rate an event waits on average about half that
long before the worker sees it. A shorter wait means more fetches: the cost is CPU in the
worker and in the broker when no events come. For each wait, in one run against one stack,
the latency bench (``plugin.bench.latency``) runs the offered rates with the feedback loop off
and on, then samples the idle CPU use of the worker, tansu and redis-server. The settings
alternate within each repeat, so a change of machine load spreads over all of them.

docs/STREAMING.md states the rule that picks ``worker.fetch_max_wait_ms`` from these rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from plugin.bench.latency import latency_bench
from plugin.bench.report import PHASE_FIGURES
from plugin.bench.stack import BenchStack
from plugin.core.events import WatchEvent

WAITS_MS = (10, 25, 50, 100)


def fetch_wait_sweep(
    stack: BenchStack,
    events: Sequence[WatchEvent],
    *,
    waits_ms: Sequence[int] = WAITS_MS,
    rates: Sequence[float] = (1000.0,),
    seconds: float = 10.0,
    idle_seconds: float = 20.0,
    repeats: int = 1,
    warm_table: bool = False,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """One row per wait, feedback loop (off, on) and repeat: the latency per offered rate, the
    events left without a plan, the idle CPU use, and the worker's seconds per step.
    ``warm_table`` fills the plan table before each run, as a deployment does."""
    rows = []
    for repeat in range(1, repeats + 1):
        for wait in waits_ms:
            for feedback in (False, True):
                run = latency_bench(
                    stack,
                    events,
                    rates=rates,
                    seconds=seconds,
                    backlog=0,
                    fetch_max_wait_ms=wait,
                    feedback=feedback,
                    idle_seconds=idle_seconds,
                    warm_table=warm_table,
                )
                row = sweep_row(run, wait, feedback, repeat)
                rows.append(row)
                if on_row is not None:
                    on_row(row)
    return rows


def sweep_row(run: dict[str, Any], wait: int, feedback: bool, repeat: int) -> dict[str, Any]:
    """One latency run as a flat row of the sweep."""
    phases = [p for p in run["phases"] if p["offered_per_s"] is not None]
    summary = run["worker_summary"]
    batches = summary.get("batches") or 0
    steps = summary.get("seconds_by_step") or {}
    idle = run.get("idle_cpu_percent") or {}
    return {
        "fetch_max_wait_ms": wait,
        "feedback_loop": feedback,
        "repeat": repeat,
        "rates": [{key: phase[key] for key in PHASE_FIGURES} for phase in phases],
        "idle_cpu_percent": idle,
        "batches": batches,
        # With a warm table the worker's plan step never waits for Triton: rank_calls stays 0.
        "plan_cache": {
            key: (summary.get("plan_cache") or {}).get(key)
            for key in ("hits", "misses", "rank_calls")
        },
        "ms_per_batch_by_step": {
            step: round(1000 * value / batches, 2) if batches else None
            for step, value in steps.items()
        },
        # The whole StreamWorker.handle: the steps plus validation, the feedback loop's
        # after-writes step and the output messages.
        "ms_per_batch_handle": round(1000 * summary.get("busy_seconds", 0) / batches, 2)
        if batches
        else None,
    }


def best_wait(rows: Sequence[dict[str, Any]], rate: float, slack_ms: float = 10.0) -> int | None:
    """The rule of docs/STREAMING.md: the largest wait whose median event-to-plan latency at
    ``rate`` with the feedback loop on (the worker's default), averaged over the repeats, is
    within ``slack_ms`` of the lowest such median, and that left no replanning event without
    a plan. A wait delays every event by about half of it, so it moves the median; shorter
    waits than the chosen one buy less than the slack and cost idle CPU. None: no rows."""
    medians: dict[int, list[float]] = {}
    lost: set[int] = set()
    for row in rows:
        if not row["feedback_loop"]:
            continue
        for phase in row["rates"]:
            if phase["offered_per_s"] != rate or phase["p50_ms"] is None:
                continue
            wait = row["fetch_max_wait_ms"]
            medians.setdefault(wait, []).append(phase["p50_ms"])
            if phase["unplanned_events"]:
                lost.add(wait)
    mean = {wait: sum(v) / len(v) for wait, v in medians.items() if wait not in lost}
    if not mean:
        return None
    lowest = min(mean.values())
    return max(wait for wait, value in mean.items() if value <= lowest + slack_ms)
