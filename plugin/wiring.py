"""The composition root: builds the catalog, planners, store and worker from one settings tree.

Commands, the Faust app, the benchmarks and tests get their components here, so there is one way
to get each. Everything is assembled when it is built, in order (:func:`build_worker`): no
component is wrapped, swapped or patched afterwards.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from plugin.adapters.feast_store import FeastStore, repo_config
from plugin.adapters.feedback_log import FeedbackLog
from plugin.adapters.fresh_transitions import RedisFreshTransitions, window_of
from plugin.adapters.kafka_io import committed_offsets
from plugin.adapters.plan_cache import CachedPlanner, RankingCache
from plugin.core.catalog import ClusterCatalog
from plugin.core.feedback import FeedbackCollector
from plugin.core.frequency import frequency_planner
from plugin.core.fresh import FreshBoostPlanner, FreshLookup
from plugin.core.pipeline import BatchProcessor
from plugin.core.planning import Planner, RankingPlanner, Selection
from plugin.core.ports import BatchObserver, SequencePlanStore
from plugin.data.workspace import Workspace, open_workspace
from plugin.models.planner import best_of_n_planner, planner_selection
from plugin.models.repository import (
    ModelRepository,
    check_catalog,
    version_label,
    version_selection,
)
from plugin.observability.metrics import WorkerMetrics
from plugin.observability.monitoring import FeedbackMonitor
from plugin.security import redis_tls_options
from plugin.settings import Settings
from plugin.streaming.deadline import DeadlinePlanner
from plugin.streaming.generation import GenerationGuard, GenerationMarker, generation_key
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
    from plugin.adapters.triton_planner import (  # lazy: tritonclient, for this planner only
        TritonPlanner,
        TritonPlannerError,
    )

    repository = ModelRepository(settings.models.repository)
    apply = settings.selection.apply
    fallback = planner_selection(settings)

    def label(version: int) -> str:
        manifest = repository.manifest(version)
        check_catalog(version, manifest, catalog)
        return version_label(version, str(manifest.get("catalog_version", "")))

    def chosen(version: int) -> Selection:
        return version_selection(repository.manifest(version), fallback, apply)

    # With selection.apply the requests leave n and the temperature to the served version
    # (N=0, TEMPERATURE=0: its chosen values), and its weight picks the plan here.
    planner = TritonPlanner(
        settings.triton,
        n=None if apply else fallback.n,
        temperature=None if apply else fallback.temperature,
        seed=settings.planner.seed,
        n_clusters=len(catalog),
        label=label,
        selection=chosen,
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


def cached_planner(settings: Settings, planner: Planner) -> CachedPlanner | None:
    """``planner`` behind the Redis plan cache, or None when the cache is off or the planner
    has no per-history ranking (the frequency baseline is no :class:`RankingPlanner`)."""
    if not settings.cache.enabled:
        return None
    if not isinstance(planner, RankingPlanner):
        log.info("planner %s has no rank(): plans bypass the cache", planner.model_version)
        return None
    return CachedPlanner(planner, ranking_cache(settings), n=settings.planner.candidates)


def ranking_cache(settings: Settings, client: Any | None = None) -> RankingCache:
    """The plan cache's Redis table of per-history rankings, keyed for ``settings.planner``
    (temperature and seed are part of the key), on ``client`` or :func:`redis_client`."""
    return RankingCache(
        client if client is not None else redis_client(settings),
        settings.cache,
        None if settings.selection.apply else settings.planner.temperature,
        settings.planner.seed,
        # n + W clusters hold every plan the worker makes from a ranking (plugin.adapters.
        # plan_cache): the table's entries stay small at hundreds of clusters.
        keep=largest_plan_n(settings) + settings.sequence.novelty_window,
    )


def largest_plan_n(settings: Settings) -> int:
    """The largest n a plan may be the best of: with ``selection.apply`` any n of the search
    grid a version may have chosen, else ``planner.candidates``."""
    grid = settings.selection.candidates if settings.selection.apply else []
    return max([settings.planner.candidates, *grid])


@dataclass(frozen=True)
class PlannerChain:
    """The worker's planners: ``deadline`` is the outermost, the one the processor calls;
    ``cache`` is the plan cache inside it (None when off), whose hit rate the worker reports."""

    deadline: DeadlinePlanner
    cache: CachedPlanner | None


def planner_chain(
    settings: Settings,
    planner: Planner,
    metrics: WorkerMetrics | None = None,
    fresh: FreshLookup | None = None,
) -> PlannerChain:
    """``planner`` wrapped, innermost first, in the plan cache (``cache.enabled``), the
    fresh-transition boost (``fresh`` given and ``feedback.fresh_weight`` above 0) and the
    replan deadline (``worker.plan_timeout_s``), which falls back on the cache alone when the
    planner fails (without the boost).

    The cache and the boost both work on per-history rankings, so a planner that is not a
    :class:`RankingPlanner` gets neither. The boost ranks through the cache: a cached ranking
    is re-ordered by fresh counts without asking the planner again. Measured: no gain on
    MovieLens, so ``fresh_weight`` is 0 by default.
    """
    cache = cached_planner(settings, planner)
    outer: Planner = cache if cache is not None else planner
    weight = settings.feedback.fresh_weight
    if fresh is not None and weight > 0:
        if isinstance(outer, RankingPlanner):
            outer = FreshBoostPlanner(outer, fresh, settings.planner.candidates, weight)
            log.info("plans get the fresh-transition boost (weight %s)", weight)
        else:
            log.info("planner %s has no rank(): plans get no fresh boost", planner.model_version)
    # When the planner fails or is late, cached histories are still planned from the cache
    # alone. Not under the boost: its plans re-order the cached ranking, and a plan made
    # without it would differ from the plan the batch would have got.
    fallback = cache.plan_cached if cache is not None and outer is cache else None
    deadline = DeadlinePlanner(outer, settings.worker.plan_timeout_s, metrics, fallback)
    return PlannerChain(deadline, cache)


# -- the feedback loop (plugin.core.feedback, docs/FEEDBACK.md) ------------------------------


def feedback_log_dir(settings: Settings) -> Path:
    return settings.feedback.log_dir or settings.var_dir / "feedback"


def feedback_log(settings: Settings, *, worker: bool = False) -> FeedbackLog:
    """The Parquet feedback log; the ``worker``'s appends go through its journal, and its
    parts are written and merged in the background (``plugin.adapters.feedback_log``)."""
    config = settings.feedback
    return FeedbackLog(
        feedback_log_dir(settings),
        config.compact_parts,
        config.part_rows,
        merge_in_background=worker,
        journal=worker,
        sync_each_append=config.journal_sync == "batch",
    )


def fresh_table(settings: Settings) -> RedisFreshTransitions | None:
    """The worker's fresh-transition table in Redis, or None when ``feedback.fresh`` is off."""
    config = settings.feedback
    if not config.fresh:
        return None
    return RedisFreshTransitions(
        redis_client(settings),
        window_of(config),
        settings.sequence.history_length,
        prefix=config.fresh_key_prefix,
    )


def feedback_collector(
    settings: Settings,
    catalog: ClusterCatalog,
    store: FeastStore,
    metrics: WorkerMetrics,
    fresh: RedisFreshTransitions | None = None,
) -> FeedbackCollector:
    """The worker's feedback loop over its own ``store`` (plans read there, and the online
    aggregates written there unless ``feedback.aggregates`` is off): the Parquet log (through
    the worker's journal), the fresh table ``fresh`` and the monitor on ``metrics``' registry.
    Give it to :func:`build_processor` as the observer and to the worker."""
    config = settings.feedback
    return FeedbackCollector(
        store,
        catalog,
        settings.sequence,
        settings.data,
        feedback_log(settings, worker=True),
        store if config.aggregates else None,
        fresh,
        FeedbackMonitor(len(catalog), config.monitor_window, metrics.registry),
        plan_memory=config.plan_memory,
    )


# -- the worker -------------------------------------------------------------------------------


def generation_marker(settings: Settings) -> GenerationMarker | None:
    """The online state's generation marker (plugin.streaming.generation), in the online
    store's Redis; None on SQLite, which only the embedded replay writes."""
    if settings.feast.online_store != "redis":
        return None
    key = generation_key(settings.worker.generation_key_prefix, repo_config(settings).project)
    return GenerationMarker(redis_client(settings), key)


def claim_generation(settings: Settings) -> GenerationGuard | None:
    """At a worker's start: the generation it will check, created on an empty store; raises
    :class:`~plugin.streaming.generation.StateLost` when the marker is gone although the group
    has committed offsets (the state those offsets stand for is lost)."""
    marker = generation_marker(settings)
    if marker is None:
        return None
    return GenerationGuard.claim(marker, lambda: any(committed_offsets(settings).values()))


def build_worker(
    settings: Settings,
    metrics: WorkerMetrics | None = None,
    generation: GenerationGuard | None = None,
) -> StreamWorker:
    """The worker ``explore worker`` runs, fully assembled, in one place:

    * the configured planner inside :func:`planner_chain` (plan cache, fresh boost, deadline);
    * the Feast store (:func:`online_store`), registered and holding the cluster rows;
    * with ``feedback.enabled``, the :func:`feedback_collector` (and its fresh table, shared
      with the boost), given to the processor as its observer and to the worker;
    * the store as the worker's record of owed replans (kept on Redis only), which batches
      write with their states and the repair loop reads;
    * ``generation`` (:func:`claim_generation`), checked around every batch, when given: in
      the store's own state read and write when it can (``FeastStore.watch_marker``).
    """
    metrics = metrics or WorkerMetrics()
    workspace = open_workspace(settings)
    catalog = workspace.catalog
    enabled = settings.feedback.enabled
    fresh = fresh_table(settings) if enabled else None
    planners = planner_chain(settings, build_planner(settings, workspace), metrics, fresh)
    store = online_store(settings, catalog)
    collector = feedback_collector(settings, catalog, store, metrics, fresh) if enabled else None
    processor = build_processor(settings, catalog, planners.deadline, store, collector)
    # The marker read in the batch's own state read and write where the store can: two
    # round trips a batch fewer (plugin.streaming.generation).
    in_store = generation is not None and store.watch_marker(
        generation.marker.key, generation.verify
    )
    return StreamWorker(
        processor,
        catalog,
        settings,
        metrics,
        planners.deadline,
        planners.cache,
        collector,
        owed=store,
        generation=generation,
        generation_in_store=in_store,
    )


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
    observer: BatchObserver | None = None,
) -> BatchProcessor:
    """The processing core over ``planner`` and ``store`` (default: :func:`online_store`),
    showing each batch to ``observer`` (the feedback collector, or none): what the embedded
    replay, the worker and the benchmarks all run."""
    return BatchProcessor(
        catalog,
        planner,
        store if store is not None else online_store(settings, catalog),
        settings,
        observer,
    )
