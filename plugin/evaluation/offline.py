"""Offline exploration evaluation on a time split.

Every held-out event whose cluster is novel for the user (outside their novelty window) is a
case. Each method sees the user's state just before it (history and window) and plans one
cluster; it also names a candidate set of size n for ``hit_at_n``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from plugin.core.frequency import TransitionFrequencyPlanner, frequency_planner
from plugin.core.moves import NovelMove
from plugin.core.planning import PlanRequest
from plugin.core.stats import gini
from plugin.data.workspace import Workspace
from plugin.models.fit import fit_models, training_data
from plugin.models.planner import BestOfNPlanner, best_of_n_planner, histories_tensor
from plugin.models.repository import ModelRepository
from plugin.settings import Settings

METRICS = ("hit_at_1", "positive_hit_at_1", "hit_at_n", "novelty_rate", "coverage", "gini")
N_SCALING = (1, 2, 4, 8, 16, 32)


@dataclass(frozen=True)
class MethodOutput:
    """Per case: the planned cluster and the method's candidate set of size n."""

    planned: list[int]
    candidates: list[list[int]]


def requests_for(cases: Sequence[NovelMove]) -> list[PlanRequest]:
    return [
        PlanRequest(f"case{i}", m.history, frozenset(m.recent), m.at)  # type: ignore[arg-type]
        for i, m in enumerate(cases)
    ]


def score(cases: Sequence[NovelMove], output: MethodOutput, n_clusters: int) -> dict[str, float]:
    hits = [p == m.target for p, m in zip(output.planned, cases, strict=True)]
    positive = [h and m.positive for h, m in zip(hits, cases, strict=True)]
    in_set = [m.target in c for c, m in zip(output.candidates, cases, strict=True)]
    novel = [p not in m.recent for p, m in zip(output.planned, cases, strict=True)]
    planned_counts = Counter(output.planned)
    return {
        "hit_at_1": float(np.mean(hits)),
        "positive_hit_at_1": float(np.mean(positive)),
        "hit_at_n": float(np.mean(in_set)),
        "novelty_rate": float(np.mean(novel)),
        "coverage": len(planned_counts) / n_clusters,
        "gini": gini([planned_counts.get(c, 0) for c in range(n_clusters)]),
    }


def in_chunks(
    cases: Sequence[NovelMove], fn: Callable[[Sequence[NovelMove]], MethodOutput], size: int = 1024
) -> MethodOutput:
    planned: list[int] = []
    candidates: list[list[int]] = []
    for start in range(0, len(cases), size):
        out = fn(cases[start : start + size])
        planned += out.planned
        candidates += out.candidates
    return MethodOutput(planned, candidates)


def best_of_n_method(
    planner: BestOfNPlanner, n: int
) -> Callable[[Sequence[NovelMove]], MethodOutput]:
    def run(chunk: Sequence[NovelMove]) -> MethodOutput:
        plans = planner.plan(requests_for(chunk), n=n)
        return MethodOutput([p.cluster_id for p in plans], [list(p.candidates) for p in plans])

    return run


def novelty_sample_method(
    planner: BestOfNPlanner, n: int
) -> Callable[[Sequence[NovelMove]], MethodOutput]:
    """The first novel sample (best-of-n at n=1); its candidate set is the n samples."""

    def run(chunk: Sequence[NovelMove]) -> MethodOutput:
        rankings = planner.rank([m.history for m in chunk])
        rows = [
            [c for c in ranking.order if c not in m.recent][:n]
            for m, ranking in zip(chunk, rankings, strict=True)
        ]
        return MethodOutput([r[0] for r in rows], rows)

    return run


def novelty_greedy_method(
    planner: BestOfNPlanner, n: int
) -> Callable[[Sequence[NovelMove]], MethodOutput]:
    """The novelty model's most likely novel clusters, without sampling or alignment."""

    def run(chunk: Sequence[NovelMove]) -> MethodOutput:
        k = planner.novelty.config.history_length
        with torch.inference_mode():
            log_probs = planner.novelty.cluster_log_probs(
                histories_tensor([m.history for m in chunk], k)
            )
        order = log_probs.argsort(dim=1, descending=True, stable=True).tolist()
        rows = [
            [c for c in row if c not in m.recent][:n] for m, row in zip(chunk, order, strict=True)
        ]
        return MethodOutput([r[0] for r in rows], rows)

    return run


def frequency_method(
    planner: TransitionFrequencyPlanner, n: int
) -> Callable[[Sequence[NovelMove]], MethodOutput]:
    def run(chunk: Sequence[NovelMove]) -> MethodOutput:
        ranked = [planner.ranked(r)[:n] for r in requests_for(chunk)]
        return MethodOutput([r[0][0] for r in ranked], [[c for c, _ in r] for r in ranked])

    return run


def popularity_method(
    popularity: Counter[int], n: int
) -> Callable[[Sequence[NovelMove]], MethodOutput]:
    """The most engaged-with clusters of the training part that are novel for the user."""
    order = sorted(popularity, key=lambda c: (-popularity[c], c))

    def run(chunk: Sequence[NovelMove]) -> MethodOutput:
        rows = [[c for c in order if c not in m.recent][:n] for m in chunk]
        return MethodOutput([r[0] for r in rows], rows)

    return run


def random_method(
    n_clusters: int, n: int, seed: int
) -> Callable[[Sequence[NovelMove]], MethodOutput]:
    rng = np.random.default_rng(seed)

    def run(chunk: Sequence[NovelMove]) -> MethodOutput:
        rows = []
        for m in chunk:
            allowed = [c for c in range(n_clusters) if c not in m.recent]
            rows.append([int(c) for c in rng.permutation(allowed)[:n]])
        return MethodOutput([r[0] for r in rows], rows)

    return run


def evaluate(
    cases: Sequence[NovelMove],
    best_of_n: BestOfNPlanner,
    frequency: TransitionFrequencyPlanner,
    popularity: Counter[int],
    n_clusters: int,
    n: int,
    seed: int,
) -> dict[str, Any]:
    """All methods at the default n, and best-of-n's n-scaling curve."""
    methods = {
        "best_of_n": best_of_n_method(best_of_n, n),
        "novelty_greedy": novelty_greedy_method(best_of_n, n),
        "novelty_sample": novelty_sample_method(best_of_n, n),
        "transition_frequency": frequency_method(frequency, n),
        "popularity": popularity_method(popularity, n),
        "random": random_method(n_clusters, n, seed),
    }
    results = {name: score(cases, in_chunks(cases, fn), n_clusters) for name, fn in methods.items()}
    scaling = []
    for size in N_SCALING:
        metrics = score(cases, in_chunks(cases, best_of_n_method(best_of_n, size)), n_clusters)
        scaling.append(
            {
                "n": size,
                "hit_at_1": metrics["hit_at_1"],
                "positive_hit_at_1": metrics["positive_hit_at_1"],
                "hit_at_n": metrics["hit_at_n"],
                "coverage": metrics["coverage"],
            }
        )
    return {"methods": results, "n_scaling": scaling}


def plot(report: dict[str, Any], path: Path) -> None:
    """Two panels: best-of-n's n-scaling curve, and each method's novelty/relevance trade-off."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    ns = [row["n"] for row in report["n_scaling"]]
    left.plot(ns, [row["hit_at_1"] for row in report["n_scaling"]], "o-", label="hit@1")
    left.plot(
        ns, [row["positive_hit_at_1"] for row in report["n_scaling"]], "s-", label="positive hit@1"
    )
    freq = report["methods"]["transition_frequency"]["positive_hit_at_1"]
    left.axhline(freq, color="grey", linestyle="--", label="transition frequency (positive)")
    left.set_xscale("log", base=2)
    left.set_xticks(ns, [str(n) for n in ns])
    left.set_xlabel("n (candidates sampled)")
    left.set_ylabel("rate")
    left.set_title("best-of-n: inference-time scaling")
    left.legend()
    for name, metrics in report["methods"].items():
        right.scatter(metrics["coverage"], metrics["positive_hit_at_1"])
        right.annotate(
            name,
            (metrics["coverage"], metrics["positive_hit_at_1"]),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=8,
        )
    right.set_xlabel("coverage (distinct planned clusters / clusters)")
    right.set_ylabel("positive hit@1")
    right.set_title("novelty vs relevance")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_evaluation(
    workspace: Workspace, settings: Settings, version: int | None = None, progress: bool = False
) -> dict[str, Any]:
    """Fit (or load) the models on the training part and evaluate every method on the rest.

    The JSON report has exactly the keys ``methods``, ``n_scaling``, ``dataset`` and ``seed``.
    """
    data = training_data(workspace, settings)
    if version is None:
        fitted = fit_models(workspace, settings, data=data, progress=progress)
        planner = BestOfNPlanner(
            fitted.novelty,
            fitted.alignment,
            settings.planner.candidates,
            settings.planner.temperature,
            settings.planner.seed,
            "evaluation",
        )
        models: dict[str, Any] = {"trained": "afresh", **_model_facts(fitted.manifest)}
    else:
        planner = best_of_n_planner(settings, workspace.catalog, version)
        manifest = ModelRepository(settings.models.repository).manifest(version)
        models = {"trained": f"version {version}", **_model_facts(manifest)}
    frequency = frequency_planner(
        workspace.train.events(), workspace.catalog, settings.sequence, settings.planner.candidates
    )
    popularity = Counter(m.target for m in data.train_moves if m.positive)
    cases = data.heldout_moves
    if not cases:
        raise ValueError("the held-out part has no novel engagements to evaluate on")
    results = evaluate(
        cases,
        planner,
        frequency,
        popularity,
        len(workspace.catalog),
        settings.planner.candidates,
        settings.planner.seed,
    )
    return {
        "methods": results["methods"],
        "n_scaling": results["n_scaling"],
        "dataset": {
            "name": workspace.dataset.name,
            "events": len(workspace.dataset.interactions),
            "train_events": len(workspace.train.interactions),
            "test_events": len(workspace.test.interactions),
            "split_quantile": settings.data.split_quantile,
            "cases": len(cases),
            "positive_cases": sum(m.positive for m in cases),
            "clusters": len(workspace.catalog),
            "catalog_version": workspace.catalog.version,
            "history_length": settings.sequence.history_length,
            "novelty_window": settings.sequence.novelty_window,
            "n": settings.planner.candidates,
            "temperature": settings.planner.temperature,
            "models": models,
        },
        "seed": settings.planner.seed,
    }


def _model_facts(manifest: dict[str, Any]) -> dict[str, Any]:
    return {
        "objective": manifest["objective"],
        "text_init": manifest["text_init"],
        "gate": manifest["gate"],
        "seconds": manifest["seconds"],
    }
