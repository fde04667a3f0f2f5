"""The refresh that closes the feedback loop (``explore refresh``, docs/FEEDBACK.md).

It retrains the alignment model (and, with ``novelty``, the novelty model) on the dataset's
moves plus the feedback log, gates the result against the serving version, writes it as a new
numbered version, publishes it through model management (Triton when one is reachable, the
pointer otherwise), precomputes the plan cache under the new version's key and rebuilds the
online feedback aggregates. Each step is one function below, timed and logged; a failed gate
or a failed load leaves the serving version in place.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from redis import RedisError

from plugin.adapters.feast_store import FeastStore
from plugin.adapters.plan_cache import all_histories
from plugin.core.feedback import (
    FeedbackRecord,
    FeedbackSelection,
    aggregate,
    dedupe,
    feedback_selection,
)
from plugin.core.planning import PlanRequest
from plugin.core.sequence import EPOCH
from plugin.core.stats import gini
from plugin.data.workspace import Workspace
from plugin.errors import InvalidInput, UserError
from plugin.evaluation.offline import best_of_n_method, in_chunks, score
from plugin.jobs import prerequisites
from plugin.jobs.precompute import precompute_plans
from plugin.models.alignment import AlignmentModel
from plugin.models.data import moves_fingerprint
from plugin.models.fit import TrainingData, alignment_descriptions, training_data, with_feedback
from plugin.models.novelty import ClusterNovelty
from plugin.models.planner import (
    BestOfNPlanner,
    best_of_n_planner,
    planner_selection,
)
from plugin.models.repository import (
    ModelRepository,
    ModelVersion,
    PublishError,
    version_label,
    version_selection,
)
from plugin.models.threads import single_threaded
from plugin.models.training import (
    alignment_config,
    novelty_config,
    quality_gate,
    train_alignment,
    train_novelty,
)
from plugin.serving.control import ModelControl, ModelControlError
from plugin.serving.control import publish as publish_version
from plugin.settings import Settings
from plugin.wiring import feedback_log, ranking_cache, redis_client

log = logging.getLogger(__name__)

# What the world outside the process can do to a step (a full disk, a server that is down or
# refuses a load): reported as a failed step. Anything else is a bug and keeps its traceback.
STEP_FAILURES: tuple[type[Exception], ...] = (
    UserError,
    OSError,
    RedisError,
    sqlite3.Error,
    PublishError,
    ModelControlError,
)


class RefreshError(UserError):
    """A refresh step failed; the serving version is unchanged."""

    def __init__(self, message: str, hint: str | None = "the serving version is unchanged") -> None:
        super().__init__(message, hint)


@dataclass
class RefreshStep:
    """One step of a refresh: how it ended, how long it took, and what it found."""

    name: str
    status: str = "ok"  # ok | skipped | failed
    seconds: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.status = "skipped"
        self.detail["reason"] = reason

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.name,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            **self.detail,
        }


@dataclass
class RefreshReport:
    """What a refresh did, step by step, and where it left the serving version."""

    serving_before: int | None = None
    version: int | None = None
    published: bool = False
    serving_after: int | None = None
    gate: dict[str, Any] | None = None
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    steps: list[RefreshStep] = field(default_factory=list)
    seconds: float = 0.0

    @contextmanager
    def step(self, name: str) -> Iterator[RefreshStep]:
        """Time one step; it is logged when it ends, and marked failed if it raises."""
        current = RefreshStep(name)
        self.steps.append(current)
        started = time.perf_counter()
        try:
            yield current
        except BaseException as exc:
            current.status = "failed"
            current.detail.setdefault("error", str(exc))
            raise
        finally:
            current.seconds = time.perf_counter() - started
            log.info(
                "refresh step %s: %s in %.2f s",
                name,
                current.status,
                current.seconds,
                extra={"step": name, **current.detail},
            )

    def as_dict(self) -> dict[str, Any]:
        return {
            "serving_before": self.serving_before,
            "version": self.version,
            "published": self.published,
            "serving_after": self.serving_after,
            "gate": self.gate,
            "before": self.before,
            "after": self.after,
            "steps": [s.as_dict() for s in self.steps],
            "seconds": round(self.seconds, 3),
        }


@dataclass
class Candidate:
    """The refreshed models, before the gate."""

    novelty: ClusterNovelty
    alignment: AlignmentModel
    novelty_retrained: bool
    alignment_seconds: float


def plan_spread(planner: BestOfNPlanner, n_clusters: int, k: int) -> dict[str, Any]:
    """Each possible history's plan (avoiding only the history): coverage, Gini, top clusters.

    The share of histories planning each cluster is what the loop test watches.
    """
    histories = list(all_histories(n_clusters, k))
    planned: Counter[int] = Counter()
    for start in range(0, len(histories), 512):
        chunk = histories[start : start + 512]
        # The history is the window here, most recent first like every request's.
        requests = [PlanRequest(f"h{i}", h, frozenset(h), EPOCH, h) for i, h in enumerate(chunk)]
        planned.update(plan.cluster_id for plan in planner.plan(requests))
    total = sum(planned.values())
    return {
        "histories": total,
        "coverage": len(planned) / n_clusters,
        "gini": gini([planned.get(c, 0) for c in range(n_clusters)]),
        "share": {str(c): round(planned[c] / total, 5) for c in sorted(planned)},
        "top": [[c, round(count / total, 4)] for c, count in planned.most_common(5)],
    }


def plan_quality(
    planner: BestOfNPlanner, workspace: Workspace, cases: Sequence[Any], n: int
) -> dict[str, float]:
    """Held-out best-of-n figures (the offline evaluation's), for the refresh gate."""
    metrics = score(cases, in_chunks(cases, best_of_n_method(planner, n)), len(workspace.catalog))
    return {
        name: round(metrics[name], 4)
        for name in ("hit_at_1", "positive_hit_at_1", "hit_at_n", "novelty_rate", "coverage")
    }


def run_refresh(
    settings: Settings, workspace: Workspace | None = None, **options: Any
) -> RefreshReport:
    """:func:`refresh` on one torch thread: on two busy cores, two threads made the training up
    to 6x slower (measured; the contention of docs/TRITON.md's field notes)."""
    with single_threaded():
        return refresh(settings, workspace, **options)


def refresh(
    settings: Settings,
    workspace: Workspace | None = None,
    novelty: bool | None = None,
    publish: bool = True,
    use_triton: bool = True,
    cache: bool = True,
    aggregates: bool = True,
    purge_old_cache: bool = False,
    records: Sequence[FeedbackRecord] | None = None,
) -> RefreshReport:
    """Retrain on the dataset plus the feedback log, gate, write, publish, refresh the cache
    and the aggregates (``novelty``: also retrain the novelty model, default
    ``feedback.refresh_novelty``; ``records`` replaces reading the log, for tests).

    Raises :class:`RefreshError` when a step fails; a gate that fails is not an error: the
    report says ``published: False``.
    """
    report = RefreshReport()
    started = time.perf_counter()
    repository = ModelRepository(settings.models.repository)
    try:
        with report.step("serving") as step:
            current, workspace = serving_step(settings, repository, workspace, report, step)
        with report.step("read-feedback") as step:
            records = feedback_log(settings).read() if records is None else records
            selection = select_feedback(settings, workspace, records, step)
            if not selection.outcomes:
                step.skip("no usable feedback: nothing to learn, nothing changed")
                report.serving_after = report.serving_before
                return report
            data = feedback_training_data(settings, workspace, selection, step)
        retrain = settings.feedback.refresh_novelty if novelty is None else novelty
        with report.step("train-novelty") as step:
            novelty_model = novelty_step(settings, workspace, data, current, retrain, step)
        with report.step("train-alignment") as step:
            candidate = alignment_step(settings, workspace, data, novelty_model, retrain, step)
        with report.step("gate") as step:
            gate_step(settings, workspace, data, current, candidate, report, step)
        with report.step("write-version") as step:
            version = write_step(
                settings, repository, current, candidate, data, selection, report, step
            )
            report.version = version
        with report.step("publish") as step:
            report.published = publish_step(
                settings, repository, version, report, step, publish=publish, triton=use_triton
            )
        pointer = repository.published()
        report.serving_after = pointer.version if pointer is not None else None
        with report.step("plan-cache") as step:
            plan_cache_step(
                settings, workspace, version, current.label, report, step, cache, purge_old_cache
            )
        with report.step("aggregates") as step:
            aggregates_step(settings, records, workspace.catalog.version, step, aggregates)
    except RefreshError:
        raise
    except STEP_FAILURES as exc:
        raise RefreshError(f"refresh failed in step {report.steps[-1].name}: {exc}") from exc
    finally:
        report.seconds = time.perf_counter() - started
    return report


# -- the steps, in order -----------------------------------------------------------------------


def serving_step(
    settings: Settings,
    repository: ModelRepository,
    workspace: Workspace | None,
    report: RefreshReport,
    step: RefreshStep,
) -> tuple[ModelVersion, Workspace]:
    """The version being refreshed (published, else the newest), trained on this catalog, and
    the workspace (opened now unless given)."""
    serving = repository.default_version()
    if serving is None:  # before the seconds of opening the workspace
        raise RefreshError("no trained version to refresh; run `explore train` first")
    current = repository.load(serving)
    workspace = workspace or prerequisites.workspace(settings)
    catalog = workspace.catalog
    trained_on = current.manifest.get("catalog_version")
    if trained_on != catalog.version:
        raise RefreshError(
            f"version {serving} was trained on catalog {trained_on}, the current one is "
            f"{catalog.version}: run `explore train`, not a refresh"
        )
    pointer = repository.published()
    report.serving_before = pointer.version if pointer is not None else None
    step.detail.update(version=serving, published=report.serving_before is not None)
    return current, workspace


def select_feedback(
    settings: Settings,
    workspace: Workspace,
    records: Sequence[FeedbackRecord],
    step: RefreshStep,
) -> FeedbackSelection:
    """The log's usable answers: this catalog's, and not already events of the dataset."""
    interactions = workspace.dataset.interactions
    dataset_events = set(
        zip(interactions["user_id"].astype(str), interactions["event_id"].astype(str), strict=True)
    )
    weight = settings.feedback.label_weight
    selection = feedback_selection(
        records, workspace.catalog.version, dataset_events, weight=weight
    )
    step.detail.update(selection.as_dict(), label_weight=weight)
    return selection


def feedback_training_data(
    settings: Settings, workspace: Workspace, selection: FeedbackSelection, step: RefreshStep
) -> TrainingData:
    """The dataset's training data with the feedback's outcomes and novel moves added."""
    base = training_data(workspace, settings)
    data = with_feedback(
        base, selection.outcomes, selection.moves, len(workspace.catalog), settings
    )
    step.detail.update(alignment_rows=len(data.feedback), training_moves=len(data.train_moves))
    return data


def novelty_step(
    settings: Settings,
    workspace: Workspace,
    data: TrainingData,
    current: ModelVersion,
    retrain: bool,
    step: RefreshStep,
) -> ClusterNovelty:
    """A novelty model retrained on the moves plus the novel answers, or the serving one."""
    if not retrain:
        step.skip(f"kept version {current.version}'s novelty model")
        return current.novelty
    k, models = settings.sequence.history_length, settings.models
    if models.novelty == "llm":
        raise InvalidInput(
            "refresh retrains the id novelty model only; with models.novelty=llm, run "
            "`explore train --novelty llm` instead, or refresh with feedback.refresh_novelty=false"
        )
    model, run = train_novelty(data.novelty, novelty_config(workspace.catalog, k, models), models)
    step.detail.update(steps=run.steps, final_loss=round(run.final_loss, 4))
    return model


def alignment_step(
    settings: Settings,
    workspace: Workspace,
    data: TrainingData,
    novelty_model: ClusterNovelty,
    retrained: bool,
    step: RefreshStep,
) -> Candidate:
    """The alignment model retrained on the collective labels plus the feedback's."""
    models, k = settings.models, settings.sequence.history_length
    descriptions = alignment_descriptions(workspace, settings)
    config = alignment_config(len(workspace.catalog), k, models.objective, descriptions)
    model, run = train_alignment(data.feedback, config, models, descriptions=descriptions)
    step.detail.update(
        objective=models.objective, steps=run.steps, final_loss=round(run.final_loss, 4)
    )
    return Candidate(novelty_model, model, retrained, run.seconds)


def gate_step(
    settings: Settings,
    workspace: Workspace,
    data: TrainingData,
    current: ModelVersion,
    candidate: Candidate,
    report: RefreshReport,
    step: RefreshStep,
) -> None:
    """The novelty gate, plus: held-out positive hit@1 may drop at most
    ``feedback.gate_max_hit_drop`` below the serving version's, and plan coverage must stay at
    least ``feedback.gate_min_coverage``."""
    planner, config = settings.planner, settings.feedback
    # Both sides plan with the serving version's chosen n, T and weights: the refreshed
    # version inherits them (write_step), so that is how it would serve.
    chosen = version_selection(
        current.manifest, planner_selection(settings), settings.selection.apply
    )
    n, k = chosen.n, settings.sequence.history_length
    heldout = data.heldout_moves
    for side, novelty, alignment, label in (
        (report.before, current.novelty, current.alignment, current.label),
        (report.after, candidate.novelty, candidate.alignment, "refresh-candidate"),
    ):
        plans = BestOfNPlanner(
            novelty,
            alignment,
            n,
            chosen.temperature,
            planner.seed,
            label,
            weight=chosen.weight,
            window_weight=chosen.window_weight,
            transitions=chosen.transitions,
        )
        side["heldout"] = plan_quality(plans, workspace, heldout, n)
        side["plans"] = plan_spread(plans, len(workspace.catalog), k)
    novelty_gate = quality_gate(
        candidate.novelty, heldout, n, chosen.temperature, planner.seed, settings.models
    )
    served = report.before["heldout"]["positive_hit_at_1"]
    refreshed = report.after["heldout"]["positive_hit_at_1"]
    coverage = report.after["plans"]["coverage"]
    reasons = novelty_gate.reasons()
    if served - refreshed > config.gate_max_hit_drop:
        reasons.append(
            f"held-out positive hit@1 dropped {served - refreshed:.3f} > {config.gate_max_hit_drop}"
        )
    if coverage < config.gate_min_coverage:
        reasons.append(f"plan coverage {coverage:.3f} < {config.gate_min_coverage}")
    report.gate = {
        **novelty_gate.as_dict(),
        "passed": not reasons,
        "reasons": reasons,
        "alignment": {
            "positive_hit_at_1": refreshed,
            "serving_positive_hit_at_1": served,
            "max_drop": config.gate_max_hit_drop,
            "coverage": coverage,
            "min_coverage": config.gate_min_coverage,
        },
    }
    step.detail.update(passed=not reasons, reasons=reasons)


def write_step(
    settings: Settings,
    repository: ModelRepository,
    current: ModelVersion,
    candidate: Candidate,
    data: TrainingData,
    selection: FeedbackSelection,
    report: RefreshReport,
    step: RefreshStep,
) -> int:
    """Write the candidate as the next version, passed or not (a failed one is never
    published); its manifest records what it was refreshed from."""
    # The selection too: a refresh keeps the serving version's n, temperature and weights,
    # and the window model its window weight was chosen with.
    inherited = (
        "dataset",
        "data_hash",
        "catalog_version",
        "text_init",
        "selection",
        "catalog",
        "window_transitions",
    )
    config = settings.feedback
    manifest = {
        **{key: current.manifest.get(key) for key in inherited},
        "moves_hash": moves_fingerprint(data.train_moves),
        "history_length": settings.sequence.history_length,
        "novelty_window": settings.sequence.novelty_window,
        "objective": settings.models.objective,
        "training_pairs": len(data.novelty),
        "feedback_rows": len(data.feedback),
        "feedback_pairs": len(data.feedback.pairs),
        "refresh": {
            "parent_version": current.version,
            "novelty_retrained": candidate.novelty_retrained,
            "feedback": selection.as_dict(),
            "label_weight": config.label_weight,
            "before": report.before.get("heldout"),
            "after": report.after.get("heldout"),
        },
        "seconds": {
            "alignment": round(candidate.alignment_seconds, 2),
            "novelty": 0.0 if not candidate.novelty_retrained else None,
        },
        "gate": report.gate,
        "settings": settings.models.model_dump(mode="json"),
    }
    version = repository.write(candidate.novelty, candidate.alignment, manifest)
    catalog_version = str(current.manifest.get("catalog_version", ""))
    step.detail.update(version=version, label=version_label(version, catalog_version))
    return version


def publish_step(
    settings: Settings,
    repository: ModelRepository,
    version: int,
    report: RefreshReport,
    step: RefreshStep,
    *,
    publish: bool,
    triton: bool,
) -> bool:
    """Publish a passed version through model management: Triton blue/green when it is
    reachable (and ``triton``), else the pointer alone. Whether it was published."""
    if report.gate is None or not report.gate["passed"]:
        step.skip(f"gate failed; serving version {report.serving_before} unchanged")
        return False
    if not publish:
        step.skip("--no-publish")
        return False
    with ModelControl(settings.triton, repository) as control:
        reachable = triton and control.reachable()
        outcome = publish_version(repository, control if reachable else None, version)
    step.detail.update(
        version=outcome.pointer.version,
        previous=list(outcome.pointer.previous),
        triton=outcome.report.as_dict() if outcome.report is not None else None,
    )
    return True


def plan_cache_step(
    settings: Settings,
    workspace: Workspace,
    version: int,
    old_label: str,
    report: RefreshReport,
    step: RefreshStep,
    enabled: bool,
    purge: bool,
) -> None:
    """Fill the plan cache under the new version's key; the old version's keys expire by TTL,
    or go now with ``purge``. Skipped when Redis does not answer: the cache fills on demand."""
    if not report.published:
        step.skip("nothing published")
        return
    if not enabled or not settings.cache.enabled:
        step.skip("cache off")
        return
    client = redis_client(settings)
    try:
        client.ping()
    except RedisError as exc:
        step.skip(f"redis unreachable ({exc}); the cache fills on demand later")
        return
    planner = best_of_n_planner(settings, workspace.catalog, version)
    cache = ranking_cache(settings, client)
    done = precompute_plans(settings, workspace, planner, cache=cache)
    old_entries = cache.size(old_label) if old_label != planner.model_version else 0
    purged = 0
    if purge and old_entries:
        for key in client.scan_iter(match=f"{cache.namespace(old_label)}:*", count=1000):
            purged += int(client.delete(key))
    step.detail.update(
        namespace=done.namespace,
        entries=done.report.written,
        previous_namespace=cache.namespace(old_label),
        previous_entries=old_entries - purged,
        purged=purged,
    )


def aggregates_step(
    settings: Settings,
    records: Sequence[FeedbackRecord],
    catalog_version: str,
    step: RefreshStep,
    enabled: bool,
) -> None:
    """Rewrite the online feedback view with the log's exact counts, stamped newer than what
    is stored (Feast skips a write that is not newer)."""
    if not enabled or not settings.feedback.aggregates:
        step.skip("aggregates off")
        return
    exact = aggregate(r for r in dedupe(records) if r.catalog_version == catalog_version)
    if not exact:
        step.detail["rows"] = 0
        return
    store = FeastStore(settings)
    try:  # registering the repo costs seconds; the worker normally did it already
        store.store.get_feature_view("feedback_aggregates")
    except Exception:
        store.apply()
    stored = store.read_feedback_aggregates(sorted(exact))
    rows = [
        replace(row, revision_us=max(row.revision_us, stored[key].revision_us + 1))
        if key in stored
        else row
        for key, row in sorted(exact.items())
    ]
    store.write_feedback_aggregates(rows)
    step.detail.update(rows=len(rows), online_store=settings.feast.online_store)
