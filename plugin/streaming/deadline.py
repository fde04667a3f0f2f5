"""The bound on how long a batch waits for its replans.

A slow or failing planner (Triton overloaded, restarting) must not hold back sequence updates
for every other user. :class:`DeadlinePlanner` runs the real planner in its own thread and
waits at most ``timeout_s``. When the call misses the deadline or fails, it returns no plans:
the batch still writes its sequences, unconfirmed, and the core's pending-replan rule asks for
those plans again the next time each user is seen. While a timed-out call is still running,
later batches do not queue behind it: they skip planning at once.

So a batch's sequence write waits on planning for at most ``timeout_s`` (plus the store's own
read and write), and only the first batch after the planner slows down pays even that.

With a ``fallback`` (the plan cache's
:meth:`~plugin.adapters.plan_cache.CachedPlanner.plan_cached`), a call that fails, times out or
is skipped still plans every request whose history is cached: only the misses are deferred.
The worker's repair loop makes the deferred ones once the planner answers again
(:mod:`plugin.core.pipeline`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from plugin.core.planning import ExplorationPlan, Planner, PlanRequest
from plugin.observability.metrics import WorkerMetrics

log = logging.getLogger(__name__)


class DeadlinePlanner:
    """A :class:`~plugin.core.planning.Planner` that answers within ``timeout_s`` or plans only
    what ``fallback`` (the cache) can.

    It may return fewer plans than requests (only cached ones on a timeout or an error); the
    batch processor confirms only the plans it got, so the others stay pending.
    """

    def __init__(
        self,
        planner: Planner,
        timeout_s: float,
        metrics: WorkerMetrics | None = None,
        fallback: Callable[[Sequence[PlanRequest]], list[ExplorationPlan]] | None = None,
    ) -> None:
        self.planner = planner
        self.timeout_s = timeout_s
        self.metrics = metrics
        self.fallback = fallback
        self.deferred = 0
        # Whether the last call the planner finished answered (False after a failure or a
        # timeout; a late call that then answers sets it again).
        self.healthy = True
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="planner")
        self._late: Future[list[ExplorationPlan]] | None = None
        self._lock = threading.Lock()

    @property
    def model_version(self) -> str:
        return self.planner.model_version

    def plan(self, requests: Sequence[PlanRequest]) -> list[ExplorationPlan]:
        if not requests:
            return []
        with self._lock:
            if self._late is not None and not self._late.done():
                return self._defer(requests, "busy")
            self._late = None
            started = time.perf_counter()
            future = self._executor.submit(self.planner.plan, list(requests))
            future.add_done_callback(self._note_health)
            try:
                plans = future.result(timeout=self.timeout_s)
            except FutureTimeout:
                # The call cannot be cancelled; remember it so that later batches skip
                # planning until it has finished, instead of queueing behind it.
                self._late = future
                if not future.done():  # else its callback already told how it ended
                    self.healthy = False
                log.warning(
                    "planner missed its deadline; replans left pending",
                    extra={"timeout_s": self.timeout_s, "requests": len(requests)},
                )
                return self._defer(requests, "timeout")
            except Exception as exc:
                log.error(
                    "planner failed; replans left pending: %s",
                    exc,
                    extra={"requests": len(requests)},
                )
                return self._defer(requests, "error")
            if self.metrics is not None:
                self.metrics.planner_seconds.observe(time.perf_counter() - started)
            return plans

    def _note_health(self, future: Future[list[ExplorationPlan]]) -> None:
        self.healthy = not future.cancelled() and future.exception() is None

    def _defer(self, requests: Sequence[PlanRequest], why: str) -> list[ExplorationPlan]:
        plans: list[ExplorationPlan] = []
        if self.fallback is not None:
            try:
                plans = self.fallback(requests)
            except Exception as exc:  # the cache is an optimisation: never fail the batch
                log.warning("planning from the cache failed too: %s", exc)
        deferred = len(requests) - len(plans)
        self.deferred += deferred
        if self.metrics is not None:
            self.metrics.replans_deferred.labels(why=why).inc(deferred)
        return plans

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
