"""Filling the plan cache, the paper's lookup table of per-history rankings (``explore
precompute``, the refresh's plan-cache step and ``explore demo --stack``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from plugin.adapters.plan_cache import (
    PrecomputeReport,
    RankingCache,
    all_histories,
    count_all_histories,
    precompute,
    seen_histories,
)
from plugin.core.planning import RankingPlanner
from plugin.data.workspace import Workspace
from plugin.errors import InvalidInput
from plugin.jobs import prerequisites
from plugin.jobs.progress import say
from plugin.settings import Settings
from plugin.wiring import ranking_cache

SCOPES = ("auto", "all", "seen")


@dataclass
class HistoryChoice:
    """The histories to precompute, and a line saying which they are."""

    histories: Iterable[tuple[int, ...]]
    source: str
    total: int | None = None


def histories_to_precompute(
    settings: Settings, workspace: Workspace, scope: str = "auto"
) -> HistoryChoice:
    """Which histories the plan cache is filled with. ``auto``: every history of 1..K distinct
    clusters while there are at most ``cache.precompute_all_max`` of them, else the histories
    users reached in training; ``all`` and ``seen`` force one or the other."""
    if scope not in SCOPES:
        raise InvalidInput(f"the precompute scope is auto, all or seen, not {scope!r}")
    k, clusters = settings.sequence.history_length, len(workspace.catalog)
    every = count_all_histories(clusters, k)
    if scope == "all" or (scope == "auto" and every <= settings.cache.precompute_all_max):
        source = f"all {every:,} histories of 1..{k} distinct clusters"
        return HistoryChoice(all_histories(clusters, k), source, every)
    seen = seen_histories(
        workspace.train.events(), workspace.catalog, k, settings.sequence.novelty_window
    )
    return HistoryChoice(seen, f"{len(seen):,} histories seen in training", len(seen))


@dataclass
class PrecomputeOutcome:
    """What was written, by which model version, under which keys."""

    report: PrecomputeReport
    model_version: str
    namespace: str

    def as_dict(self) -> dict[str, Any]:
        return {**self.report.as_dict(), "model_version": self.model_version}


def precompute_plans(
    settings: Settings,
    workspace: Workspace,
    planner: RankingPlanner,
    scope: str = "auto",
    cache: RankingCache | None = None,
    progress: bool = False,
) -> PrecomputeOutcome:
    """Rank the chosen histories (:func:`histories_to_precompute`) with ``planner`` and store
    every ranking in ``cache`` (default: the settings' plan cache)."""
    choice = histories_to_precompute(settings, workspace, scope)
    cache = cache or ranking_cache(settings)
    say(f"precomputing {choice.source} with {planner.model_version}", progress)
    report = precompute(
        planner,
        cache,
        choice.histories,
        settings.cache.precompute_batch,
        choice.source,
        total=choice.total,
        progress=progress,
    )
    return PrecomputeOutcome(report, planner.model_version, cache.namespace(planner.model_version))


def precompute_cache(
    settings: Settings, scope: str = "auto", progress: bool = False
) -> PrecomputeOutcome:
    """``explore precompute``: fill the plan cache with the configured planner's rankings."""
    if scope not in SCOPES:  # before the seconds of loading anything
        raise InvalidInput(f"--scope must be auto, all or seen, not {scope!r}")
    prerequisites.require_redis(settings)
    workspace = prerequisites.workspace(settings, progress=progress)
    planner = prerequisites.planner(settings, workspace)
    if not isinstance(planner, RankingPlanner):
        raise InvalidInput(
            f"the {settings.planner.kind} planner plans from counts, without per-history "
            "rankings: nothing to cache (use --planner best-of-n or triton)"
        )
    try:
        return precompute_plans(settings, workspace, planner, scope, progress=progress)
    finally:
        # The Triton planner holds a gRPC channel; the in-process ones hold nothing to close.
        close = getattr(planner, "close", None)
        if callable(close):
            close()
