"""The composition root: builds the catalog, planners and store from one settings tree.

Commands, the Faust app and tests assemble components here, so there is one way to get each.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plugin.adapters.feast_store import FeastStore
from plugin.adapters.plan_cache import RankingCache
from plugin.core.catalog import ClusterCatalog
from plugin.core.frequency import frequency_planner
from plugin.core.pipeline import BatchProcessor
from plugin.core.planning import Planner
from plugin.core.ports import SequencePlanStore
from plugin.data.workspace import Workspace, open_workspace
from plugin.models.planner import best_of_n_planner
from plugin.models.repository import ModelRepository, check_catalog, version_label
from plugin.observability.metrics import WorkerMetrics
from plugin.settings import Settings
from plugin.streaming.deadline import DeadlinePlanner
from plugin.streaming.worker import StreamWorker

if TYPE_CHECKING:  # the adapter pulls in tritonclient: imported only when used
    from plugin.adapters.triton_planner import TritonPlanner

log = logging.getLogger(__name__)


def triton_planner(
    settings: Settings, catalog: ClusterCatalog, connect: bool = True
) -> TritonPlanner:
    """A :class:`~plugin.adapters.triton_planner.TritonPlanner` on ``settings.triton``.

    Plans record the label of the version Triton served, read from that version's manifest
    in ``settings.models.repository``; a served version trained on another catalog is an
    error. With ``connect`` the server and its planner model are checked now, and a
    ``ValueError`` says what to start if they are not there.
    """
    from plugin.adapters.triton_planner import TritonPlanner, TritonPlannerError

    repository = ModelRepository(settings.models.repository)

    def label(version: int) -> str:
        manifest = repository.manifest(version)
        check_catalog(version, manifest, catalog)
        return version_label(version, str(manifest.get("catalog_version", "")))

    planner = TritonPlanner(
        settings.triton,
        n=settings.planner.candidates,
        temperature=settings.planner.temperature,
        seed=settings.planner.seed,
        n_clusters=len(catalog),
        label=label,
    )
    if connect:
        try:
            planner.connect()
        except TritonPlannerError as exc:
            planner.close()
            raise ValueError(str(exc)) from None
    return planner


def build_planner(settings: Settings, workspace: Workspace, version: int | None = None) -> Planner:
    """The planner named by ``settings.planner.kind`` (best-of-n: ``version`` or published)."""
    kind = settings.planner.kind
    if kind == "frequency":
        return frequency_planner(
            workspace.train.events(),
            workspace.catalog,
            settings.sequence,
            settings.planner.candidates,
        )
    if kind == "best-of-n":
        return best_of_n_planner(settings, workspace.catalog, version)
    if kind == "triton":
        return triton_planner(settings, workspace.catalog)
    raise ValueError(f"planner.kind {kind!r} is not available in this build")


def redis_client(settings: Settings) -> Any:
    """A redis-py client on ``settings.redis`` (the online store's server; the plan cache).

    It fails fast (one retry, short timeouts): the plan cache is an optimisation, and a slow
    Redis must not stretch a batch when planning without it is possible.
    """
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    from plugin.security import redis_tls_options

    password = settings.redis.password
    return redis.Redis(
        host=settings.redis.host,
        port=settings.redis.port,
        db=settings.redis.db,
        password=password.get_secret_value() if password is not None else None,
        **redis_tls_options(settings.redis),
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 1),
    )


def cached_planner(settings: Settings, planner: Planner) -> Any:
    """``planner`` behind the Redis plan cache (a ``CachedPlanner``), or None when the cache
    is off or the planner has no per-history ranking (the frequency baseline)."""
    from plugin.adapters.plan_cache import CachedPlanner, supports_ranking

    if not settings.cache.enabled:
        return None
    if not supports_ranking(planner):
        log.info("planner %s has no rank(): plans bypass the cache", planner.model_version)
        return None
    return CachedPlanner(planner, ranking_cache(settings), n=settings.planner.candidates)  # type: ignore[arg-type]


def ranking_cache(settings: Settings, client: Any | None = None) -> RankingCache:
    """The plan cache's Redis table of per-history rankings, keyed for ``settings.planner``
    (temperature and seed are part of the key), on ``client`` or :func:`redis_client`."""
    return RankingCache(
        client if client is not None else redis_client(settings),
        settings.cache,
        settings.planner.temperature,
        settings.planner.seed,
    )


# -- the feedback loop (plugin.core.feedback, docs/FEEDBACK.md) ------------------------------


def feedback_log_dir(settings: Settings) -> Path:
    return settings.feedback.log_dir or settings.var_dir / "feedback"


def feedback_log(settings: Settings, *, merge_in_background: bool = False) -> Any:
    """The Parquet feedback log (a :class:`~plugin.adapters.feedback_log.FeedbackLog`)."""
    from plugin.adapters.feedback_log import FeedbackLog

    config = settings.feedback
    return FeedbackLog(
        feedback_log_dir(settings),
        config.compact_parts,
        config.part_rows,
        merge_in_background=merge_in_background,
    )


def fresh_table(settings: Settings) -> Any:
    """The worker's fresh-transition table in Redis, or None when ``feedback.fresh`` is off."""
    from plugin.adapters.fresh_transitions import RedisFreshTransitions, window_of

    config = settings.feedback
    if not config.fresh:
        return None
    return RedisFreshTransitions(
        redis_client(settings),
        window_of(config),
        settings.sequence.history_length,
        prefix=config.fresh_key_prefix,
    )


def attach_feedback(worker: Any, settings: Settings) -> Any:
    """Give a :class:`~plugin.streaming.worker.StreamWorker` its feedback loop: the collector
    over the worker's own store (plans read, aggregates written there), the Parquet log, the fresh
    table and the monitor on the worker's metrics registry. With ``feedback.fresh_weight``
    above 0 the worker's planner also gets the fresh boost (measured: no gain on MovieLens,
    so it is off by default). Returns the collector, or None when feedback is off."""
    from plugin.core.feedback import FeedbackCollector
    from plugin.core.fresh import FreshBoostPlanner
    from plugin.observability.monitoring import FeedbackMonitor

    config = settings.feedback
    if not config.enabled:
        return None
    store = worker.processor.store
    inner_store = getattr(store, "inner", store)
    aggregates = (
        inner_store
        if config.aggregates and hasattr(inner_store, "write_feedback_aggregates")
        else None
    )
    fresh = fresh_table(settings)
    monitor = FeedbackMonitor(len(worker.catalog), config.monitor_window, worker.metrics.registry)
    collector = FeedbackCollector(
        inner_store,
        worker.catalog,
        settings.sequence,
        settings.data,
        feedback_log(settings, merge_in_background=True),
        aggregates,
        fresh,
        monitor,
    )
    worker.attach_feedback(collector)
    deadline = worker.processor.planner
    ranking: Any = getattr(deadline, "planner", None)
    if config.fresh_weight > 0 and fresh is not None and callable(getattr(ranking, "rank", None)):
        deadline.planner = FreshBoostPlanner(
            ranking, fresh, settings.planner.candidates, config.fresh_weight
        )
        log.info("plans get the fresh-transition boost (weight %s)", config.fresh_weight)
    return collector


def build_worker(settings: Settings, metrics: WorkerMetrics | None = None) -> StreamWorker:
    """The batch logic over the configured planner (behind the plan cache and the replan
    deadline) and the Feast store, which it registers and fills with the cluster rows."""
    from plugin.wiring import build_planner, cached_planner

    metrics = metrics or WorkerMetrics()
    workspace = open_workspace(settings)
    planner = build_planner(settings, workspace)
    cached = cached_planner(settings, planner)
    deadline = DeadlinePlanner(cached or planner, settings.worker.plan_timeout_s, metrics)
    processor = build_processor(settings, workspace.catalog, deadline)
    return StreamWorker(processor, workspace.catalog, settings, metrics, deadline, cached)


def online_store(settings: Settings, catalog: ClusterCatalog) -> FeastStore:
    """The Feast online store of ``settings.feast``, registered and holding the catalog's
    cluster rows (which ``explore lookup`` and the ranker read)."""
    store = FeastStore(settings)
    store.apply()
    store.write_catalog(catalog)
    return store


def build_processor(
    settings: Settings,
    catalog: ClusterCatalog,
    planner: Planner,
    store: SequencePlanStore | None = None,
) -> BatchProcessor:
    """The processing core over ``planner`` and ``store`` (default: :func:`online_store`):
    what the embedded replay, the worker and the benchmarks all run."""
    return BatchProcessor(
        catalog, planner, store if store is not None else online_store(settings, catalog), settings
    )
