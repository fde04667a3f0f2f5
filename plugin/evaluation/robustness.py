"""Robustness of the best-of-n claim (``explore evaluate --robustness``, docs/EVALUATION.md).

The whole evaluation (granularity rule, validation search, refit, every method, bootstrap)
runs on several *runs*: the configured dataset at each training seed and at each other split
point, and two synthetic datasets whose ground truth is known (:mod:`plugin.data.synthetic`):
one where users' feedback carries an alignment signal by construction, one where it carries
none. Each run is summarised against the targets of issue 14:

* best_of_n has the highest positive hit@1 of all methods, and its paired difference against
  novelty_sample has a 95% interval above zero;
* novelty_rate 1.0 and coverage at least half of novelty_sample's;
* positive hit@1 rises with n from 1 to 16 (each step at least as high as the one before).

The JSON is rewritten after every run, so a long study keeps what it finished.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from plugin.data.synthetic import SyntheticSpec, write_synthetic
from plugin.data.workspace import open_workspace
from plugin.evaluation.offline import run_evaluation
from plugin.models.sequential import SequentialSettings
from plugin.settings import Settings

SCALING_UP_TO = 16


@dataclass(frozen=True)
class Run:
    """One evaluation of the study: a dataset, a seed and a split point."""

    dataset: str
    seed: int
    split: float
    synthetic: SyntheticSpec | None = None

    @property
    def name(self) -> str:
        return f"{self.dataset} seed={self.seed} split={self.split}"


def plan_runs(
    settings: Settings, seeds: Sequence[int], splits: Sequence[float], synthetic: bool
) -> list[Run]:
    """The configured dataset at the first seed and its split, the two synthetic datasets
    (first seed, the configured split), the configured dataset at every other split point
    (first seed), then at every other seed (the configured split).

    The main result first, then the cheapest: a study cut short has a run of each kind."""
    data = settings.data
    dataset = data.interactions.stem if data.interactions is not None else data.dataset
    split = data.split_quantile
    runs = [Run(dataset, seeds[0], split)]
    if synthetic:
        for aligned in (True, False):
            spec = SyntheticSpec(aligned=aligned)
            runs.append(Run(spec.name, seeds[0], split, spec))
    runs += [Run(dataset, seeds[0], other) for other in splits if other != split]
    runs += [Run(dataset, seed, split) for seed in seeds[1:]]
    return runs


def run_settings(settings: Settings, run: Run, folder: Path) -> Settings:
    """``settings`` for one run: its seeds, split point and (synthetic) files."""
    data = settings.data.model_copy(update={"split_quantile": run.split})
    if run.synthetic is not None:
        interactions, items = write_synthetic(run.synthetic, folder)
        data = data.model_copy(update={"interactions": interactions, "items": items})
    return settings.model_copy(
        update={
            "data": data,
            "models": settings.models.model_copy(update={"seed": run.seed}),
            "planner": settings.planner.model_copy(update={"seed": run.seed}),
        }
    )


def targets(report: dict[str, Any]) -> dict[str, Any]:
    """How one evaluation report stands against the targets (see the module docstring)."""
    methods = report["methods"]
    best = methods["best_of_n"]
    others = {name: m for name, m in methods.items() if name != "best_of_n"}
    strongest = max(others, key=lambda name: others[name]["positive_hit_at_1"])
    paired = report["paired"]
    sample = paired["best_of_n - novelty_sample"]
    scaling = [row["positive_hit_at_1"] for row in report["n_scaling"] if row["n"] <= SCALING_UP_TO]
    rises = all(b >= a for a, b in pairwise(scaling))
    coverage_ratio = best["coverage"] / max(methods["novelty_sample"]["coverage"], 1e-9)
    margin = best["positive_hit_at_1"] - others[strongest]["positive_hit_at_1"]
    return {
        "best_of_n": best["positive_hit_at_1"],
        "best_of_n_ci": best.get("positive_hit_at_1_ci"),
        "strongest_other": strongest,
        "strongest_other_value": others[strongest]["positive_hit_at_1"],
        "margin_over_strongest": margin,
        "highest": margin > 0,
        "vs_novelty_sample": sample["positive_hit_at_1"],
        "vs_novelty_sample_ci": sample["ci"],
        "above_novelty_sample": sample["ci"][0] > 0,
        "vs_sasrec": paired.get("best_of_n - sasrec", {}).get("positive_hit_at_1"),
        "vs_sasrec_ci": paired.get("best_of_n - sasrec", {}).get("ci"),
        "novelty_rate": best["novelty_rate"],
        "coverage_ratio": coverage_ratio,
        "coverage_ok": best["novelty_rate"] == 1.0 and coverage_ratio >= 0.5,
        "scaling_to_16": scaling,
        "rises_with_n": rises,
    }


def summary_row(run: Run, report: dict[str, Any], seconds: float) -> dict[str, Any]:
    """One run's line of the study: what was chosen, and the targets."""
    data = report["dataset"]
    chosen = ((data["models"].get("selection") or {}).get("chosen")) or {}
    return {
        "run": run.name,
        "dataset": run.dataset,
        "seed": run.seed,
        "split": run.split,
        "cases": data["cases"],
        "clusters": data["clusters"],
        "chosen": {
            key: chosen.get(key)
            for key in (
                "n",
                "temperature",
                "weight",
                "window_weight",
                "window_l2",
                "window_decay",
                "label_rule",
            )
        }
        | {"prior_strength": chosen.get("prior_strength")},
        "targets": targets(report),
        "seconds": round(seconds, 1),
    }


def robustness(
    settings: Settings,
    seeds: Sequence[int] = (7, 8, 9),
    splits: Sequence[float] = (0.7, 0.9),
    synthetic: bool = True,
    json_path: Path | None = None,
    progress: bool = False,
    on_run: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Evaluate every run; returns ``{"runs": [summary rows], "reports": {run: report}}``."""
    if not seeds:
        raise ValueError("the robustness study needs at least one seed")
    folder = settings.var_dir / "synthetic"
    study: dict[str, Any] = {"runs": [], "reports": {}}
    for run in plan_runs(settings, seeds, splits, synthetic):
        started = time.perf_counter()
        config = run_settings(settings, run, folder)
        workspace = open_workspace(config, progress=progress)
        report = run_evaluation(
            workspace, config, progress=progress, sequential=SequentialSettings(seed=run.seed)
        )
        row = summary_row(run, report, time.perf_counter() - started)
        row["granularity"] = workspace.catalog.build.get("granularity")
        study["runs"].append(row)
        study["reports"][run.name] = report
        if json_path is not None:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(study, indent=1, default=str))
        if on_run is not None:
            on_run(row)
    return study
