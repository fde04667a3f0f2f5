"""The Triton planner: the :class:`~plugin.core.planning.Planner` port over Triton's
``planner`` model.

A ``plan`` call becomes one Triton request per ``max_rows_per_request`` plan requests (rows),
sent concurrently over gRPC (``tritonclient.grpc.aio``); the server's dynamic batcher merges
concurrent requests into one novelty and one alignment pass. The server returns each row's n
candidates in sampling order with their alignment scores, and the plan is picked here with
:func:`plugin.core.planning.best_of_n`, the same rule :func:`plugin.models.planner.select` applies
in-process: for the same seed, temperature and version both planners give identical plans.

Failure handling, from the settings' ``triton`` section:

* every call has a deadline (``request_timeout_s``);
* transport failures and an unavailable model are retried ``retries`` times with exponential
  backoff and jitter; a bad request (INVALID_ARGUMENT) is never retried;
* a :class:`CircuitBreaker` opens after ``breaker_failures`` failed calls in a row; while it
  is open calls fail fast with :class:`CircuitOpenError`, and after ``breaker_reset_s`` one
  probe call decides whether it closes again.

The client lives on a private event loop in a daemon thread, so ``plan`` is callable from
any thread (a Faust agent's executor, the replay driver) and ``plan_async`` from any loop.
"""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from plugin.core.planning import (
    ExplorationPlan,
    HistoryRanking,
    PlanningError,
    PlanRequest,
    Selection,
    best_of_n,
    selection_score,
    window_scored,
)
from plugin.serving.contract import (
    ALIGNMENT_SCORE,
    CANDIDATES,
    NOVELTY_LOGPROB,
    PLANNER_OUTPUTS,
    SampledCandidates,
    planner_inputs,
    triton_dtype,
    unpack_sampled,
)
from plugin.serving.endpoint import client_options, grpc_url
from plugin.settings import TritonSettings

T = TypeVar("T")

# gRPC statuses worth another try: the server or the model may be back in a moment.
RETRYABLE = frozenset(
    {
        "StatusCode.UNAVAILABLE",
        "StatusCode.DEADLINE_EXCEEDED",
        "StatusCode.RESOURCE_EXHAUSTED",
        "StatusCode.ABORTED",
        "StatusCode.NOT_FOUND",  # the planner is not loaded (yet)
    }
)
INVALID = "StatusCode.INVALID_ARGUMENT"


class TritonPlannerError(PlanningError):
    """The Triton planner could not plan; the message says why and what to do."""


class PlannerUnavailable(TritonPlannerError):
    """Triton or its planner model did not answer, after the retries."""


class CircuitOpenError(PlannerUnavailable):
    """Failing fast: recent calls failed and the breaker has not reset yet."""


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and jitter (``retries`` after the first try)."""

    retries: int = 2
    initial_s: float = 0.05
    maximum_s: float = 1.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry ``attempt`` (1-based): half fixed, half random."""
        base = min(self.maximum_s, self.initial_s * 2 ** (attempt - 1))
        return base / 2 + (rng or random).random() * base / 2


class CircuitBreaker:
    """Closed -> open after ``failures`` failed calls in a row -> half-open after ``reset_s``.

    Half-open lets one probe call through; its success closes the circuit, its failure opens
    it again for another ``reset_s``.
    """

    def __init__(
        self, failures: int, reset_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failures = failures
        self.reset_s = reset_s
        self.clock = clock
        self.consecutive = 0
        self.opened_at: float | None = None
        self.probing = False
        self.last_error = ""
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self.clock() - self.opened_at >= self.reset_s else "open"

    def retry_in(self) -> float:
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.reset_s - (self.clock() - self.opened_at))

    def allow(self) -> bool:
        """Whether a call may go out now (in half-open, only the one probe)."""
        with self._lock:
            state = self.state
            if state == "closed":
                return True
            if state == "half-open" and not self.probing:
                self.probing = True
                return True
            return False

    def success(self) -> None:
        with self._lock:
            self.consecutive = 0
            self.opened_at = None
            self.probing = False

    def failure(self, error: str) -> None:
        with self._lock:
            self.consecutive += 1
            self.last_error = error
            if self.probing or self.consecutive >= self.failures:
                self.opened_at = self.clock()
            self.probing = False


def _status(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    return str(status() if callable(status) else "") or type(exc).__name__


def _message(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    return " ".join(str(message() if callable(message) else exc).split())


class TritonPlanner:
    """Plans through Triton's ``planner`` model; identical plans to ``BestOfNPlanner``.

    ``label`` turns a served version number into the model version plans record (it may
    raise ``ValueError``, e.g. for a version trained on another catalog). ``n_clusters`` is
    the catalog size, used by :meth:`rank` to ask for every cluster.

    ``n`` or ``temperature`` None leave them to the served version (its chosen values, N=0
    and TEMPERATURE=0 on the wire); ``selection`` gives a served version's
    :class:`~plugin.core.planning.Selection`, whose weight picks the best of the candidates
    (without it: alignment alone).
    """

    def __init__(
        self,
        settings: TritonSettings,
        n: int | None,
        temperature: float | None,
        seed: int,
        n_clusters: int,
        label: Callable[[int], str],
        selection: Callable[[int], Selection] | None = None,
    ) -> None:
        self.settings = settings
        self.n = n
        self.temperature = temperature
        self.seed = seed
        self.n_clusters = n_clusters
        self._label = label
        self._labels: dict[int, str] = {}
        self._selection = selection
        self._selections: dict[str, Selection] = {}
        self._version = f"triton:{settings.planner_model}"
        self.retry = RetryPolicy(
            settings.retries, settings.backoff_initial_s, settings.backoff_max_s
        )
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_reset_s)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self._start_lock = threading.Lock()

    # -- Planner protocol ------------------------------------------------------------------

    @property
    def model_version(self) -> str:
        """The label of the version that served the latest call (or that :meth:`connect` saw)."""
        return self._version

    def plan(self, requests: Sequence[PlanRequest], n: int | None = None) -> list[ExplorationPlan]:
        """Plan a batch (blocking); same contract as ``BestOfNPlanner.plan``."""
        return self._run(self._plan(requests, n))

    async def plan_async(
        self, requests: Sequence[PlanRequest], n: int | None = None
    ) -> list[ExplorationPlan]:
        """Plan a batch from any event loop."""
        return await self._await(self._plan(requests, n))

    def rank(self, histories: Sequence[tuple[int, ...]]) -> list[HistoryRanking]:
        """Full per-history rankings (every cluster in sampling order); same contract as
        ``BestOfNPlanner.rank``: duplicates are ranked once."""
        return self._run(self._rank(histories))

    async def rank_async(self, histories: Sequence[tuple[int, ...]]) -> list[HistoryRanking]:
        return await self._await(self._rank(histories))

    def selection(self, model_version: str) -> Selection:
        """The selection of a served version, by the label plans record (the plan cache
        selects from cached rankings with it)."""
        found = self._selections.get(model_version)
        if found is not None:
            return found
        default = Selection()  # a label never served: the planner defaults
        return Selection(
            n=self.n or default.n,
            temperature=self.temperature or default.temperature,
            weight=1.0,
        )

    def connect(self) -> None:
        """Check that Triton is live and the planner ready; raise an actionable error if not."""
        self._run(self._connect())

    def close(self) -> None:
        """Close the gRPC channel and stop the loop thread (the planner can start again)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._client is not None:
            asyncio.run_coroutine_threadsafe(self._client.close(), loop).result(timeout=5)
            self._client = None
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> TritonPlanner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the event loop --------------------------------------------------------------------

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._start_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="triton-planner", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def _submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self._ensure_loop())

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("TritonPlanner.plan() called on its own loop; use plan_async()")
        return self._submit(coro).result()

    async def _await(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            return await coro
        return await asyncio.wrap_future(self._submit(coro))

    async def _get_client(self) -> Any:
        if self._client is None:
            import tritonclient.grpc.aio as triton_aio

            self._client = triton_aio.InferenceServerClient(**client_options(self.settings))
        return self._client

    # -- calls -----------------------------------------------------------------------------

    async def _connect(self) -> None:
        client = await self._get_client()
        where = f"{grpc_url(self.settings)} (gRPC)"
        headers = self.settings.headers()
        try:
            live = await client.is_server_live(
                headers=headers, client_timeout=self.settings.connect_timeout_s
            )
        except Exception as exc:
            raise PlannerUnavailable(
                f"Triton is not reachable at {where}: {_message(exc)}; start it with "
                "`explore triton up` and publish a version with `explore models publish`"
            ) from None
        if not live:
            raise PlannerUnavailable(f"Triton at {where} is not live")
        model = self.settings.planner_model
        index = await client.get_model_repository_index(
            headers=headers, as_json=True, client_timeout=self.settings.connect_timeout_s
        )
        ready = sorted(
            int(m["version"])
            for m in index.get("models", [])
            if m.get("name") == model and m.get("state") == "READY" and m.get("version")
        )
        if not ready:
            raise PlannerUnavailable(
                f"Triton at {where} serves no {model!r} model; run `explore models publish` "
                "(or `explore models load` for the published version)"
            )
        self._version = self._resolve(ready[-1])

    def _resolve(self, version: int) -> str:
        if version not in self._labels:
            try:
                label = self._label(version)
                if self._selection is not None:
                    self._selections[label] = self._selection(version)
                self._labels[version] = label
            except (ValueError, OSError, KeyError) as exc:
                raise TritonPlannerError(f"served planner version {version}: {exc}") from None
        return self._labels[version]

    def _chosen(self, label: str) -> Selection:
        # A label never resolved plans with alignment alone, as before the search.
        return self._selections.get(label) or Selection()

    async def _plan(self, requests: Sequence[PlanRequest], n: int | None) -> list[ExplorationPlan]:
        if not requests:
            return []
        size = self.n if n is None else n
        rows = await self._sample(
            [r.history for r in requests],
            [sorted(r.excluded) for r in requests],
            size or 0,  # 0: the served version's chosen n
            [f"user {r.user_id}" for r in requests],
        )
        plans = []
        for request, (label, sampled) in zip(requests, rows, strict=True):
            chosen = self._chosen(label)
            scores = [
                selection_score(a, lp, chosen.weight)
                for a, lp in zip(sampled.alignment_scores, sampled.novelty_log_probs, strict=True)
            ]
            scores = window_scored(
                request, sampled.candidates, scores, chosen.window_weight, chosen.transitions
            )
            plans.append(best_of_n(request, sampled.candidates, scores, label))
        return plans

    async def _rank(self, histories: Sequence[tuple[int, ...]]) -> list[HistoryRanking]:
        unique = list(dict.fromkeys(histories))
        if not unique:
            return []
        rows = await self._sample(
            unique, [[] for _ in unique], self.n_clusters, [f"history {h}" for h in unique]
        )
        by_history = {
            history: HistoryRanking(history, s.candidates, s.novelty_log_probs, s.alignment_scores)
            for history, (_, s) in zip(unique, rows, strict=True)
        }
        return [by_history[h] for h in histories]

    async def _sample(
        self,
        histories: Sequence[Sequence[int]],
        excluded: Sequence[Sequence[int]],
        n: int,
        names: Sequence[str],
    ) -> list[tuple[str, SampledCandidates]]:
        """Each row's sampled candidates with the label of the version that served it.

        ``names`` say who each row is for in error messages (``user 42``).
        """
        step = self.settings.max_rows_per_request
        results = await asyncio.gather(
            *(
                self._infer(histories[i : i + step], excluded[i : i + step], n, names[i : i + step])
                for i in range(0, len(histories), step)
            )
        )
        return [row for chunk in results for row in chunk]

    async def _infer(
        self,
        histories: Sequence[Sequence[int]],
        excluded: Sequence[Sequence[int]],
        n: int,
        names: Sequence[str],
    ) -> list[tuple[str, SampledCandidates]]:
        import tritonclient.grpc.aio as triton_aio

        client = await self._get_client()
        # TEMPERATURE=0: the served version's chosen temperature.
        arrays = planner_inputs(histories, excluded, n, self.temperature or 0.0, self.seed)
        inputs = []
        for name, array in arrays.items():
            tensor = triton_aio.InferInput(name, list(array.shape), triton_dtype(array))
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        outputs = [triton_aio.InferRequestedOutput(name) for name in PLANNER_OUTPUTS]
        if not self.breaker.allow():
            raise CircuitOpenError(
                f"Triton planner at {grpc_url(self.settings)}: circuit open after "
                f"{self.breaker.consecutive} failed calls, failing fast for another "
                f"{self.breaker.retry_in():.1f}s (last error: {self.breaker.last_error})"
            )
        attempt = 0
        while True:
            try:
                result = await client.infer(
                    self.settings.planner_model,
                    inputs,
                    outputs=outputs,
                    client_timeout=self.settings.request_timeout_s,
                    headers=self.settings.headers(),
                )
                break
            except Exception as exc:
                status, message = _status(exc), _message(exc)
                if status == INVALID:
                    self.breaker.success()  # the server answered: it is healthy
                    raise TritonPlannerError(_name_row(message, names)) from None
                if status in RETRYABLE and attempt < self.retry.retries:
                    attempt += 1
                    await asyncio.sleep(self.retry.delay(attempt))
                    continue
                error = f"{status}: {message}"
                self.breaker.failure(error)
                raise PlannerUnavailable(
                    f"Triton planner at {grpc_url(self.settings)} failed after "
                    f"{attempt + 1} attempt(s): {error}"
                ) from None
        self.breaker.success()
        label = self._resolve(int(result.get_response().model_version))
        self._version = label
        sampled = unpack_sampled(
            result.as_numpy(CANDIDATES),
            result.as_numpy(NOVELTY_LOGPROB),
            result.as_numpy(ALIGNMENT_SCORE),
        )
        if len(sampled) != len(histories):
            raise TritonPlannerError(
                f"planner answered {len(sampled)} rows for {len(histories)} requests"
            )
        return [(label, s) for s in sampled]


def _name_row(message: str, names: Sequence[str]) -> str:
    """Replace the server's ``row i`` (within one Triton request) by who the row is for."""

    def name(match: re.Match[str]) -> str:
        row = int(match.group(1))
        return names[row] if 0 <= row < len(names) else match.group(0)

    return re.sub(r"\brow (\d+)\b", name, message)
