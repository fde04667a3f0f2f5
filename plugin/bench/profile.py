"""Where the batched worker's time goes: cProfile over ``StreamWorker.handle``, summed by area.

cProfile slows Python function calls (by about 1.5-2x here), so the absolute seconds are
inflated; the shares are what to read. The area of a function comes from its module: the Feast
SDK, redis-py, the fast store, the core rules, event validation, metrics, waiting for the
planner thread (the Triton call and the plan cache run there, outside this profile), and the
rest.

A built-in (``sorted``, ``dict.get``, ``bytes.join``, a C parser's method) has no module, so
its own time goes to the areas of its callers, split as cProfile measured it per caller: a
``sorted`` called by the best-of-n select counts in the plan table. Only what built-ins called
by built-ins or by unlisted modules spend stays in "other".
"""

from __future__ import annotations

import cProfile
import pstats
from collections.abc import Sequence
from typing import Any

from plugin.bench.stack import BenchStack
from plugin.bench.worker import run_path
from plugin.bench.workload import Kind, Order, build_workload
from plugin.core.events import WatchEvent
from plugin.streaming.worker import StreamWorker

# First match wins: (area, substrings of the function's file or name).
AREAS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("waiting for the planner thread", ("method 'acquire'", "threading.py")),
    (
        "fast Redis store (encode/decode)",
        ("fast_redis_online_store", "feast_value_codec", "feast_rows"),
    ),
    ("plan table (lookups, best-of-n select)", ("plan_cache", "plugin/core/planning.py")),
    ("Feast SDK (DataFrame/Arrow/proto, registry)", ("/feast/", "/pandas/", "/pyarrow/")),
    ("redis-py and the socket", ("/redis/", "_socket", "hiredis")),
    ("protobuf", ("google/protobuf", "_message.Message", "upb")),
    (
        "event validation (JSON, pydantic)",
        ("plugin/core/events.py", "plugin/core/fast_events.py", "pydantic", "/json/"),
    ),
    ("core rules (sequence.py, dataclasses)", ("plugin/core/sequence.py", "dataclasses.py")),
    ("Feast adapter (rows <-> states)", ("plugin/adapters/feast_store.py",)),
    ("worker bookkeeping and metrics", ("streams/", "prometheus_client", "kafka_io", "worker.py")),
)


def _is_builtin(function: tuple[str, int, str]) -> bool:
    return function[0] == "~"  # cProfile's file name for C functions and methods


def area_of(function: tuple[str, int, str]) -> str:
    filename, _, name = function
    text = f"{filename}:{name}"
    for area, needles in AREAS:
        if any(needle in text for needle in needles):
            return area
    return "other"


def _label(function: tuple[str, int, str]) -> str:
    filename, line, name = function
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
    return f"{filename}:{line}({name})" if line else name


def summarise(profile: cProfile.Profile, top: int = 15) -> dict[str, Any]:
    """Seconds by area (own time), and the top functions by own and by cumulative time."""
    stats = pstats.Stats(profile)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in raw.values())
    areas: dict[str, float] = {}
    for function, (_, _, own, _, callers) in raw.items():
        area = area_of(function)
        if area == "other" and _is_builtin(function) and callers:
            # A built-in's time, per caller (each caller's entry holds the own time of the
            # calls it made), goes to that caller's area.
            for caller, (_, _, own_from_caller, _) in callers.items():
                target = "other" if _is_builtin(caller) else area_of(caller)
                areas[target] = areas.get(target, 0.0) + own_from_caller
            continue
        areas[area] = areas.get(area, 0.0) + own
    by_own = sorted(raw.items(), key=lambda item: item[1][2], reverse=True)[:top]
    by_cumulative = sorted(raw.items(), key=lambda item: item[1][3], reverse=True)[:top]
    return {
        "profiled_seconds": round(total, 3),
        "areas": [
            {"area": area, "seconds": round(seconds, 3), "share": round(seconds / total, 3)}
            for area, seconds in sorted(areas.items(), key=lambda item: -item[1])
        ],
        "top_own": [
            {"function": _label(f), "calls": e[1], "own_s": round(e[2], 3)} for f, e in by_own
        ],
        "top_cumulative": [
            {"function": _label(f), "calls": e[1], "cumulative_s": round(e[3], 3)}
            for f, e in by_cumulative
        ],
    }


def profile_worker(
    stack: BenchStack,
    events: Sequence[WatchEvent],
    *,
    path: str = "batched",
    kind: Kind = "replans",
    order: Order = "interleaved",
    limit: int = 10_000,
    top: int = 15,
) -> dict[str, Any]:
    """Profile ``path`` (``batched`` or ``batched-sdk``) over one workload's timed events."""
    workload = build_workload(events, stack.workspace.catalog, kind, order, limit)
    profile = cProfile.Profile()

    def start(worker: StreamWorker) -> None:
        profile.enable()

    try:
        result = run_path(
            stack, path, workload, stack.settings.worker.batch_size, 60.0, before_timing=start
        )
    finally:
        profile.disable()
    return {
        "path": path,
        "workload": kind,
        "order": order,
        "events": result.events,
        "events_per_s_under_profiler": round(result.events_per_s, 1),
        **summarise(profile, top),
    }
