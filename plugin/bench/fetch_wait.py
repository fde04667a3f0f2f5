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
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """One row per wait, feedback loop (off, on) and repeat: the latency per offered rate, the
    events left without a plan, the idle CPU use, and the worker's seconds per step."""
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
        "rates": [
            {
                key: phase[key]
                for key in (
                    "offered_per_s",
                    "produced_per_s",
                    "planned_events",
                    "repaired_events",
                    "no_plan_owed_events",
                    "unplanned_events",
                    "p50_ms",
                    "p95_ms",
                    "p99_ms",
                    "max_ms",
                )
            }
            for phase in phases
        ],
        "idle_cpu_percent": idle,
        "batches": batches,
        "ms_per_batch_by_step": {
            step: round(1000 * value / batches, 2) if batches else None
            for step, value in steps.items()
        },
    }


def best_wait(rows: Sequence[dict[str, Any]], rate: float, bound_ms: float) -> int | None:
    """The rule of docs/STREAMING.md: the largest wait whose p99 at ``rate``, feedback loop on,
    is under ``bound_ms`` in every repeat with no replanning event left without a plan (the
    largest, because a longer wait costs less idle CPU); None when no wait meets it."""
    verdict: dict[int, bool] = {}
    for row in rows:
        if not row["feedback_loop"]:
            continue
        for phase in row["rates"]:
            if phase["offered_per_s"] != rate:
                continue
            p99 = phase["p99_ms"]
            ok = p99 is not None and p99 < bound_ms and not phase["unplanned_events"]
            wait = row["fetch_max_wait_ms"]
            verdict[wait] = verdict.get(wait, True) and ok
    meeting = [wait for wait, ok in verdict.items() if ok]
    return max(meeting) if meeting else None
