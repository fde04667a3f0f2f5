"""Prometheus metrics of the streaming worker, and exact latency percentiles for reports.

Every :class:`WorkerMetrics` owns its registry, so tests and several workers in one process
never collide. ``serve`` exposes it on 127.0.0.1 by default. Names follow Prometheus habits:
counters end in ``_total``, durations are seconds.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client import values as prometheus_values

# Fields of a WatchEvent: a rejection names one of these, or something a client made up.
_EVENT_FIELDS = frozenset(
    {"event", "event_id", "user_id", "item_id", "event_time", "rating", "watch_ratio", "context"}
)
# Buckets from 1 ms to 60 s: batch, planner and store calls, and event-to-plan latency.
_SECONDS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
_BATCH_SIZES = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10_000)


class BatchHistogram(Histogram):
    """A :class:`Histogram` that also takes a batch's samples in one call.

    Why: the worker observed its event-to-state and event-to-plan latencies one event at a
    time, a locked update and a bucket scan per event: about 8% of a batch in the drain
    profile. :meth:`observe_many` sorts the batch into the buckets with ``bisect`` and adds
    each bucket's count once; the exported series equal one ``observe`` per sample.
    """

    def observe_many(self, amounts: Iterable[float]) -> None:
        """``observe`` every amount (no exemplars), one update per bucket touched."""
        self._raise_if_not_observable()
        bounds = self._upper_bounds
        counts: dict[int, int] = {}
        total = 0.0
        for amount in amounts:
            if amount != amount:  # NaN: in the sum, in no bucket, as ``observe`` does
                total += amount
                continue
            # The first bound at or above the amount: the bucket ``observe`` picks.
            index = bisect.bisect_left(bounds, amount)
            counts[index] = counts.get(index, 0) + 1
            total += amount
        if total or counts:
            self._sum.inc(total)
        for index, count in counts.items():
            self._buckets[index].inc(count)


def rejection_kind(reason: str) -> str:
    """A low-cardinality label for a rejection reason (the full text goes to the dead letter).

    ``rating: must be a finite number`` -> ``invalid_rating``; unknown field names collapse
    into ``invalid_other`` so a hostile client cannot grow the label set.
    """
    head = reason.split(":", 1)[0].strip()
    if head.startswith("not JSON"):
        return "not_json"
    if head.startswith("payload larger"):
        return "too_large"
    if head == "not a JSON object":
        return "not_object"
    if head == "key":
        return "key_mismatch"
    field = head.split(".", 1)[0]
    return f"invalid_{field}" if field in _EVENT_FIELDS else "invalid_other"


class LatencyRecorder:
    """The most recent ``capacity`` samples, for exact percentiles in reports (thread-safe)."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._samples: deque[float] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self.count = 0  # every sample ever added, kept or not

    def extend(self, samples: Iterable[float]) -> None:
        values = list(samples)
        with self._lock:
            self._samples.extend(values)
            self.count += len(values)

    def quantile(self, q: float) -> float | None:
        """The nearest-rank q-quantile of the kept samples, in seconds; None when empty."""
        with self._lock:
            ordered = sorted(self._samples)
        return _nearest_rank(ordered, q) if ordered else None

    def summary(self) -> dict[str, Any]:
        """Count, p50, p90, p99 and max of the kept samples, in milliseconds."""
        with self._lock:
            ordered = sorted(self._samples)
        if not ordered:
            return {"count": 0}
        return {
            "count": len(ordered),
            **{
                f"p{round(q * 100)}_ms": round(_nearest_rank(ordered, q) * 1000, 2)
                for q in (0.5, 0.9, 0.99)
            },
            "max_ms": round(ordered[-1] * 1000, 2),
        }


def _nearest_rank(ordered: list[float], q: float) -> float:
    rank = math.ceil(q * len(ordered))
    return ordered[min(len(ordered), max(1, rank)) - 1]


REJECTION_KINDS = (
    "not_json",
    "too_large",
    "not_object",
    "key_mismatch",
    *sorted(f"invalid_{field}" for field in _EVENT_FIELDS),
    "invalid_other",
)


@contextmanager
def _in_process_values() -> Iterator[None]:
    # Importing feast.metrics before prometheus_client switches prometheus_client to
    # multiprocess (mmap) values, process-wide; a new metric then starts from the last value
    # any metric of its name had in this process. The worker exports its own registry from
    # one process, so its metrics keep plain in-memory values: made here, children included.
    saved = prometheus_values.ValueClass
    prometheus_values.ValueClass = prometheus_values.MutexValue
    try:
        yield
    finally:
        prometheus_values.ValueClass = saved


class WorkerMetrics:
    """What the Faust worker exports: flow, rejections, planning, cache, store and lag.

    Every labelled series with a known label set exists from the start (at 0).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        with _in_process_values():
            self._create(registry or CollectorRegistry())
        self.plan_latency = LatencyRecorder()
        self.state_latency = LatencyRecorder()

    def _create(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        r = self.registry
        self.events_in = Counter("explore_events_in", "Watch events consumed", registry=r)
        self.events_applied = Counter(
            "explore_events_applied", "Events that changed a user's sequence", registry=r
        )
        self.events_skipped = Counter(
            "explore_events_skipped",
            "Valid events that changed nothing, by why",
            ["why"],
            registry=r,
        )
        self.rejections = Counter(
            "explore_rejections", "Events sent to the dead-letter topic", ["reason"], registry=r
        )
        self.batches = Counter("explore_batches", "Micro-batches processed", registry=r)
        self.batch_failures = Counter(
            "explore_batch_failures", "Failed attempts to process a batch", registry=r
        )
        self.batch_events = Histogram(
            "explore_batch_events", "Events per micro-batch", buckets=_BATCH_SIZES, registry=r
        )
        self.batch_seconds = Histogram(
            "explore_batch_seconds", "Seconds to process one batch", buckets=_SECONDS, registry=r
        )
        self.replans = Counter("explore_replans", "Replans the core asked for", registry=r)
        self.plans_written = Counter("explore_plans_written", "Plans written", registry=r)
        self.replans_deferred = Counter(
            "explore_replans_deferred",
            "Replans left pending because the planner was slow or failed",
            ["why"],
            registry=r,
        )
        self.cache_hits = Counter("explore_plan_cache_hits", "Plan-cache hits", registry=r)
        self.cache_misses = Counter("explore_plan_cache_misses", "Plan-cache misses", registry=r)
        self.planner_seconds = Histogram(
            "explore_planner_seconds", "Seconds per planner call", buckets=_SECONDS, registry=r
        )
        self.store_seconds = Histogram(
            "explore_store_seconds",
            "Seconds per Feast call, by operation",
            ["op"],
            buckets=_SECONDS,
            registry=r,
        )
        self.event_to_plan_seconds = BatchHistogram(
            "explore_event_to_plan_seconds",
            "From the event's Kafka timestamp to its plan being written",
            buckets=_SECONDS,
            registry=r,
        )
        self.event_to_state_seconds = BatchHistogram(
            "explore_event_to_state_seconds",
            "From the event's Kafka timestamp to its sequence being written",
            buckets=_SECONDS,
            registry=r,
        )
        self.consumer_lag = Gauge(
            "explore_consumer_lag",
            "Messages behind the partition's high watermark after the last batch",
            ["topic", "partition"],
            registry=r,
        )
        self.consumer_lag_seconds = Gauge(
            "explore_consumer_lag_seconds",
            "Age of the last processed event of the partition when its batch finished",
            ["topic", "partition"],
            registry=r,
        )
        # The worker exits at once on a lost store (status 65, the summary's ``state_lost``);
        # while it runs, the check rate shows the marker is being read at all.
        self.generation_checks = Counter(
            "explore_generation_checks",
            "Reads of the online state's generation marker (docs/ROBUSTNESS.md)",
            registry=r,
        )
        self.state_lost = Gauge(
            "explore_online_state_lost",
            "1 once the worker found the online state lost; it then exits with status 65",
            registry=r,
        )
        for kind in REJECTION_KINDS:
            self.rejections.labels(reason=kind)
        for why in ("stale", "unknown_item"):
            self.events_skipped.labels(why=why)
        for why in ("timeout", "busy", "error"):
            self.replans_deferred.labels(why=why)
        for op in ("read", "write"):
            self.store_seconds.labels(op=op)

    def reject(self, reason: str) -> None:
        self.rejections.labels(reason=rejection_kind(reason)).inc()

    def serve(self, host: str, port: int) -> Any:
        """Expose ``/metrics`` on ``host:port`` in a daemon thread; returns the server."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 when absent): for tests and reports."""
        found = self.registry.get_sample_value(name, labels or None)
        return float(found) if found is not None else 0.0
