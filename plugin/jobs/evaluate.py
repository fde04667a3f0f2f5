"""Offline evaluation on the time split (``explore evaluate``) and the fresh-transition
measurement (``explore feedback fresh-eval``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from plugin.errors import MissingPrerequisite
from plugin.evaluation.fresh import evaluate_fresh
from plugin.evaluation.offline import plot, run_evaluation
from plugin.evaluation.robustness import robustness
from plugin.jobs import prerequisites
from plugin.settings import Settings


def evaluate(
    settings: Settings,
    version: int | None = None,
    plot_path: Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Every planning method on each held-out novel engagement (``version``: a trained one;
    None trains afresh); with ``plot_path``, the n-scaling curve and the novelty/relevance
    trade-off drawn there. Returns the report."""
    workspace = prerequisites.workspace(settings, progress=progress)
    try:
        report = run_evaluation(workspace, settings, version=version, progress=progress)
    except (FileNotFoundError, ValueError) as exc:  # no such version, or another catalog's
        raise MissingPrerequisite(str(exc)) from exc
    if plot_path is not None:
        plot(report, plot_path)
    return report


def fresh_evaluation(settings: Settings, version: int | None = None) -> dict[str, Any]:
    """Streamed recent transition counts against the training counts, as a frequency planner
    and as a boost to best-of-n, on the time split (docs/FEEDBACK.md has the results)."""
    workspace = prerequisites.workspace(settings)
    try:
        return evaluate_fresh(workspace, settings, version)
    except (FileNotFoundError, ValueError) as exc:
        raise MissingPrerequisite(str(exc)) from exc


def robustness_study(
    settings: Settings,
    seeds: Sequence[int],
    splits: Sequence[float],
    synthetic: bool,
    json_path: Path | None,
    progress: bool = False,
    on_run: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """The evaluation at several seeds and split points and on the two synthetic datasets
    (:mod:`plugin.evaluation.robustness`); the JSON is rewritten after each run."""
    try:
        return robustness(settings, seeds, splits, synthetic, json_path, progress, on_run)
    except (FileNotFoundError, ValueError) as exc:
        raise MissingPrerequisite(str(exc)) from exc
