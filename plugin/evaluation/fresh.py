"""Fresh transitions measured on the time split (``explore feedback fresh-eval``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from plugin.core.frequency import frequency_planner
from plugin.core.fresh import FreshTransitions, FreshWindow, boosted_plan, ranked_by_count
from plugin.core.planning import HistoryRanking
from plugin.data.workspace import Workspace
from plugin.evaluation.offline import MethodOutput, in_chunks, requests_for, score
from plugin.evaluation.offline import best_of_n_method as best_of_n_rows
from plugin.evaluation.offline import frequency_method as frequency_rows
from plugin.models.fit import training_data
from plugin.models.planner import best_of_n_planner
from plugin.settings import Settings


def evaluate_fresh(
    workspace: Workspace,
    settings: Settings,
    version: int | None = None,
    weights: Sequence[float] = (0.5, 1.0),
) -> dict[str, Any]:
    """Measure fresh transitions on the time split (``explore feedback fresh-eval``).

    The held-out novel engagements are planned in time order. The *streamed* table starts
    with the training part's positive moves and counts each held-out move once it has been
    planned, as the worker would; the *static* control keeps the training counts with no
    window or decay. Both are used as a frequency planner (backing off to the training
    frequency planner's order) and as a boost on best-of-n's candidates; every row is scored
    with the offline evaluation's :func:`~plugin.evaluation.offline.score`.
    """
    data = training_data(workspace, settings)
    cases = data.heldout_moves
    if not cases:
        raise ValueError("the held-out part has no novel engagements to evaluate on")
    planner = best_of_n_planner(settings, workspace.catalog, version)
    baseline = frequency_planner(
        workspace.train.events(), workspace.catalog, settings.sequence, settings.planner.candidates
    )
    n, clusters, k = (
        settings.planner.candidates,
        len(workspace.catalog),
        planner.novelty.config.history_length,
    )
    config = settings.feedback
    streamed_window = FreshWindow(
        config.fresh_bucket_s, config.fresh_buckets, config.fresh_half_life_buckets
    )
    # One bucket of about 31 years, no decay: every training move counts, forever.
    static_window = FreshWindow(10**9, 1, float("inf"))
    # The boost re-orders by the version's own selection score at the compared n, so the
    # boosted rows differ from best_of_n's only by the fresh counts.
    chosen = replace(planner.selection(planner.model_version), n=n)
    rankings: list[HistoryRanking] = []
    for start in range(0, len(cases), 1024):
        rankings += planner.rank([m.history for m in cases[start : start + 1024]])
    requests = requests_for(cases)
    methods: dict[str, dict[str, float]] = {
        "best_of_n": score(cases, in_chunks(cases, best_of_n_rows(planner, n)), clusters),
        "transition_frequency": score(
            cases, in_chunks(cases, frequency_rows(baseline, n)), clusters
        ),
    }
    for name, window, stream in (
        ("fresh", streamed_window, True),
        ("train_counts", static_window, False),
    ):
        table = FreshTransitions(window, k)
        table.record(data.train_moves)
        boosted: dict[float, tuple[list[int], list[list[int]]]] = {w: ([], []) for w in weights}
        frequency: tuple[list[int], list[list[int]]] = ([], [])
        for move, request, ranking in zip(cases, requests, rankings, strict=True):
            counts = table.lookup(move.history, move.at or request.as_of)
            for weight in weights:
                plan = boosted_plan(request, ranking, counts, weight, "fresh", chosen)
                boosted[weight][0].append(plan.cluster_id)
                boosted[weight][1].append(list(plan.candidates))
            order = ranked_by_count(counts, request.excluded)
            order += [c for c, _ in baseline.ranked(request) if c not in order]
            frequency[0].append(order[0])
            frequency[1].append(order[:n])
            if stream:
                table.record([move])
        methods[f"{name}_frequency"] = score(cases, MethodOutput(*frequency), clusters)
        for weight in weights:
            methods[f"best_of_n+{name}_boost_{weight:g}"] = score(
                cases, MethodOutput(*boosted[weight]), clusters
            )
    return {
        "methods": methods,
        "window": {
            "bucket_s": streamed_window.bucket_s,
            "buckets": streamed_window.buckets,
            "half_life_buckets": streamed_window.half_life_buckets,
            "min_support": streamed_window.min_support,
        },
        "cases": len(cases),
        "positive_cases": sum(m.positive for m in cases),
        "model_version": planner.model_version,
    }
