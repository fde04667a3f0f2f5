"""The worker's hot path without Kafka: CPU per row of the store's codec, per plain event, and
per event of ``StreamWorker.handle`` (issue 15).

Run it from a checkout with that checkout first on the path, so that a second worktree of an
older commit measures its own code (the older code must have the APIs used here, which main
has had since the third pass):

    cd /tmp/hb-before && PYTHONPATH=$PWD nice -n 5 .venv/bin/python \\
        /work/wt-12/scripts/measure_hot_path.py --out /tmp/hot-before.json

Figures are the thread's CPU time (``time.thread_time``), which moves less with the machine's
load than the wall clock; compare two codes run back to back, alternating.

* rows: 500 primed platform states (20 recent clusters of 500) and their plans through
  ``FeastStore`` on a private redis-server: ``write_sequences``, ``write_plans``,
  ``read_sequences``, CPU us per row (the 25th percentile of ``--calls`` calls);
* event: the fast path's ``fast_event`` over 500 platform payloads (best of 5);
* handle: the drain's prepared worker (1M users, 500 clusters, replans on, the plan table warm)
  over ``--events`` events, the first batch untimed, ``--repeats`` times.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import subprocess
import tempfile
import time
import timeit
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

import plugin
from plugin.adapters.feast_store import FeastStore
from plugin.bench.feast_profiles import on_redis
from plugin.bench.machine import describe_machine
from plugin.bench.platform import _Lab, primed_states, sample_plans
from plugin.core.fast_events import fast_event
from plugin.data.platform import PlatformShape, PlatformWorkload
from plugin.localstack.redis import RedisServer
from plugin.settings import Settings
from plugin.streaming.worker import Record

ROWS = 500


def cpu_per_call(call: Callable[[], object], calls: int) -> float:
    """The 25th percentile of ``calls`` calls' thread CPU seconds."""
    spent = []
    for _ in range(calls):
        begun = time.thread_time()
        call()
        spent.append(time.thread_time() - begun)
    return sorted(spent)[len(spent) // 4]


def rows(settings: Settings, redis: RedisServer, calls: int) -> dict[str, float]:
    store = FeastStore(on_redis(settings, Path(tempfile.mkdtemp()) / "registry.db"))
    store.apply()
    rng = np.random.default_rng(15)
    ids = [f"u{n}" for n in range(ROWS)]
    states = primed_states(ids, 500, settings.sequence.novelty_window, rng)
    plans = sample_plans(states, settings.planner.candidates, 500, rng)
    revisions = {state.user_id: state.revision_us for state in states}
    store.write_sequences(states)
    read = store.read_sequences(ids)
    if any(read[state.user_id] != state for state in states):
        raise AssertionError("a state did not read back as written")
    measured = {
        "write_sequences": lambda: store.write_sequences(states),
        "write_plans": lambda: store.write_plans(plans, lambda c: f"topic {c}", revisions),
        "read_sequences": lambda: store.read_sequences(ids),
    }
    return {
        f"{name}_cpu_us_per_row": round(1e6 * cpu_per_call(call, calls) / ROWS, 2)
        for name, call in measured.items()
    }


def event() -> dict[str, float]:
    workload = PlatformWorkload(PlatformShape(users=1_000_000, clusters=500, seed=15))
    payloads = [payload for _, payload in itertools.islice(workload.events(ROWS), ROWS)]
    now = datetime.now(UTC)
    if any(fast_event(payload, now) is None for payload in payloads):
        raise AssertionError("a platform payload left the fast path")
    seconds = min(
        timeit.repeat(lambda: [fast_event(p, now) for p in payloads], number=20, repeat=5)
    )
    return {"fast_event_us_per_payload": round(1e6 * seconds / 20 / ROWS, 2)}


def handle(lab: _Lab, events: int) -> dict[str, Any]:
    prepared = lab.prepared_worker(1_000_000, 500, events)
    worker = prepared.worker
    now = time.time()
    records = [
        Record("watch-events", n % 4, n, user.encode(), payload, now)
        for n, (user, payload) in enumerate(prepared.stream)
    ]
    batch = worker.settings.worker.batch_size
    worker.handle(records[:batch])  # untimed: connections, scripts and caches warm
    gc.collect()
    gc.freeze()  # as streams/runner.py does
    try:
        cpu, wall = time.thread_time(), time.perf_counter()
        for start in range(batch, len(records), batch):
            worker.handle(records[start : start + batch])
        cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    finally:
        gc.unfreeze()
    timed = len(records) - batch
    timings = worker.totals.timings
    return {
        "events": timed,
        "cpu_us_per_event": round(1e6 * cpu / timed, 1),
        "events_per_s": round(timed / wall, 1),
        "seconds_by_step": {
            step: round(getattr(timings, step), 3) for step in ("read", "core", "plan", "write")
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the JSON to write")
    parser.add_argument("--events", type=int, default=20_000, help="events per handle run")
    parser.add_argument("--repeats", type=int, default=2, help="handle runs")
    parser.add_argument("--calls", type=int, default=30, help="calls per row figure")
    args = parser.parse_args()
    source = Path(plugin.__file__).parent.parent
    commit = subprocess.run(
        ["git", "-C", str(source), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    settings = Settings()
    doc: dict[str, Any] = {
        "code": {"checkout": str(source), "commit": commit},
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": describe_machine(),
    }
    with RedisServer(name="hot-path-redis") as redis:
        address = {"host": redis.host, "port": redis.port}
        settings = settings.model_copy(update={"redis": settings.redis.model_copy(update=address)})
        doc["rows"] = rows(settings, redis, args.calls)
        doc["event"] = event()
        lab = _Lab(settings, redis, settings.var_dir / "bench" / "hot-path", seed=15)
        doc["handle"] = [handle(lab, args.events) for _ in range(args.repeats)]
    doc["machine_at_end"] = describe_machine()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"code {commit} at {source}")
    for name, value in {**doc["rows"], **doc["event"]}.items():
        print(f"  {name:36s} {value:8.2f}")
    for n, run in enumerate(doc["handle"], 1):
        steps = " / ".join(f"{s:.2f}" for s in run["seconds_by_step"].values())
        print(
            f"  handle run {n}: {run['cpu_us_per_event']:6.1f} CPU us/event, "
            f"{run['events_per_s']:8,.0f} events/s, read/core/plan/write s {steps}"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
