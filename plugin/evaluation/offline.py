"""Offline exploration evaluation on a time split.

Every held-out event whose cluster is novel for the user (outside their novelty window) is a
case. Each method sees the user's state just before it (history and window, and for the
sequential baseline the user's recent cluster sequence) and plans one cluster; it also names a
candidate set of size n for ``hit_at_n``.

Every metric comes with a 95% percentile-bootstrap interval over the cases
(:mod:`plugin.evaluation.bootstrap`), and best-of-n's ``positive_hit_at_1`` is compared with
every other method's as a paired difference (the same resampled cases for both).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from plugin.core.frequency import TransitionFrequencyPlanner, frequency_planner
from plugin.core.moves import NovelMove, cluster_sequences, novel_moves
from plugin.core.planning import PlanRequest
from plugin.core.stats import gini
from plugin.data.workspace import Workspace
from plugin.evaluation.bootstrap import Bootstrap, CaseOutcomes
from plugin.models.fit import fit_models, training_data
from plugin.models.planner import (
    BestOfNPlanner,
    best_of_n_planner,
    histories_tensor,
    planner_selection,
)
from plugin.models.repository import ModelRepository, version_selection
from plugin.models.selection import fit_selected
from plugin.models.sequential import SasRecModel, SequentialSettings, fit_sasrec
from plugin.models.training import TrainingRun
from plugin.settings import Settings

METRICS = ("hit_at_1", "positive_hit_at_1", "hit_at_n", "novelty_rate", "coverage", "gini")
N_SCALING = (1, 2, 4, 8, 16, 32)
REFERENCE = "best_of_n"  # the method every other one is compared with, case by case
RARE_BELOW = 3  # a history seen fewer times than this in training is rare


@dataclass(frozen=True)
class MethodOutput:
    """Per case: the planned cluster and the method's candidate set of size n."""

    planned: list[int]
    candidates: list[list[int]]


def requests_for(cases: Sequence[NovelMove]) -> list[PlanRequest]:
    return [
        PlanRequest(f"case{i}", m.history, frozenset(m.recent), m.at, window=m.recent)  # type: ignore[arg-type]
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


def case_outcomes(cases: Sequence[NovelMove], output: MethodOutput) -> CaseOutcomes:
    """The per-case arrays behind :func:`score`, for the bootstrap."""
    return CaseOutcomes(
        hit=np.array([p == m.target for p, m in zip(output.planned, cases, strict=True)]),
        positive_hit=np.array(
            [p == m.target and m.positive for p, m in zip(output.planned, cases, strict=True)]
        ),
        in_set=np.array([m.target in c for c, m in zip(output.candidates, cases, strict=True)]),
        novel=np.array([p not in m.recent for p, m in zip(output.planned, cases, strict=True)]),
        planned=np.array(output.planned, dtype=np.int64),
    )


def with_intervals(
    metrics: dict[str, float], intervals: dict[str, tuple[float, float]]
) -> dict[str, Any]:
    """``{metric: value, metric_ci: [lo, hi], ...}`` in the metrics' order."""
    merged: dict[str, Any] = {}
    for name, value in metrics.items():
        merged[name] = value
        if name in intervals:
            merged[f"{name}_ci"] = list(intervals[name])
    return merged


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


def sasrec_method(model: SasRecModel, n: int) -> Callable[[Sequence[NovelMove]], MethodOutput]:
    """The SASRec baseline's most likely novel clusters given the case's recent sequence."""

    def run(chunk: Sequence[NovelMove]) -> MethodOutput:
        rows = model.top_novel([m.sequence for m in chunk], [m.recent for m in chunk], n)
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
    sasrec: SasRecModel | None = None,
    bootstrap: Bootstrap | None = None,
    subsets: dict[str, Sequence[bool]] | None = None,
) -> dict[str, Any]:
    """All methods at the default n with their intervals, best-of-n's paired differences
    against the others, and best-of-n's n-scaling curve; for each named subset of the cases
    (a mask), every method's metrics on that subset too.

    ``sasrec`` needs each case's ``sequence`` (``novel_moves(..., sequence_length=L)``)."""
    bootstrap = bootstrap or Bootstrap(seed=seed)
    methods = {
        "best_of_n": best_of_n_method(best_of_n, n),
        "novelty_greedy": novelty_greedy_method(best_of_n, n),
        "novelty_sample": novelty_sample_method(best_of_n, n),
        "transition_frequency": frequency_method(frequency, n),
        "popularity": popularity_method(popularity, n),
        "random": random_method(n_clusters, n, seed),
    }
    if sasrec is not None:
        methods["sasrec"] = sasrec_method(sasrec, n)
    results: dict[str, dict[str, Any]] = {}
    outcomes: dict[str, CaseOutcomes] = {}
    by_subset: dict[str, dict[str, Any]] = {name: {} for name in subsets or {}}
    for name, fn in methods.items():
        output = in_chunks(cases, fn)
        outcomes[name] = case_outcomes(cases, output)
        results[name] = with_intervals(
            score(cases, output, n_clusters), bootstrap.intervals(outcomes[name], n_clusters)
        )
        for subset, mask in (subsets or {}).items():
            chosen = [i for i, keep in enumerate(mask) if keep]
            if chosen:
                part = MethodOutput(
                    [output.planned[i] for i in chosen], [output.candidates[i] for i in chosen]
                )
                by_subset[subset][name] = score([cases[i] for i in chosen], part, n_clusters)
    paired = {}
    for name, other in outcomes.items():
        if name == REFERENCE:
            continue
        delta, interval = bootstrap.paired_difference(
            outcomes[REFERENCE].positive_hit, other.positive_hit
        )
        paired[f"{REFERENCE} - {name}"] = {"positive_hit_at_1": delta, "ci": list(interval)}
    scaling = []
    for size in N_SCALING:
        output = in_chunks(cases, best_of_n_method(best_of_n, size))
        metrics = score(cases, output, n_clusters)
        intervals = bootstrap.intervals(case_outcomes(cases, output), n_clusters)
        row = {
            key: metrics[key] for key in ("hit_at_1", "positive_hit_at_1", "hit_at_n", "coverage")
        }
        scaling.append({"n": size, **with_intervals(row, intervals)})
    return {"methods": results, "n_scaling": scaling, "paired": paired, "subsets": by_subset}


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
    workspace: Workspace,
    settings: Settings,
    version: int | None = None,
    progress: bool = False,
    sequential: SequentialSettings | None = None,
    bootstrap: Bootstrap | None = None,
) -> dict[str, Any]:
    """Fit (or load) the models on the training part and evaluate every method on the rest.

    The SASRec baseline is always trained afresh on the training part (``sequential`` sets its
    size and budget). The JSON report has exactly the keys ``methods``, ``n_scaling``,
    ``paired``, ``dataset`` (with every method's metrics on the rare histories, seen fewer
    than ``RARE_BELOW`` times in training) and ``seed``.
    """
    sequential = sequential or SequentialSettings()
    bootstrap = bootstrap or Bootstrap(seed=settings.planner.seed)
    data = training_data(workspace, settings)
    if version is None:
        # The same training as `explore train`: with the validation search when enabled.
        fitted = (
            fit_selected(workspace, settings, progress=progress)
            if settings.selection.enabled
            else fit_models(workspace, settings, data=data, progress=progress)
        )
        chosen = version_selection(
            fitted.manifest, planner_selection(settings), settings.selection.apply
        )
        planner = BestOfNPlanner(
            fitted.novelty,
            fitted.alignment,
            chosen.n,
            chosen.temperature,
            settings.planner.seed,
            "evaluation",
            weight=chosen.weight,
            window_weight=chosen.window_weight,
            transitions=chosen.transitions,
        )
        models: dict[str, Any] = {"trained": "afresh", **_model_facts(fitted.manifest)}
    else:
        planner = best_of_n_planner(settings, workspace.catalog, version)
        manifest = ModelRepository(settings.models.repository).manifest(version)
        models = {"trained": f"version {version}", **_model_facts(manifest)}
    n = planner.n
    frequency = frequency_planner(workspace.train.events(), workspace.catalog, settings.sequence, n)
    popularity = Counter(m.target for m in data.train_moves if m.positive)
    cases = _with_sequences(workspace, settings, data.heldout_moves, sequential.max_length)
    if not cases:
        raise ValueError("the held-out part has no novel engagements to evaluate on")
    sasrec, sasrec_run = _fit_sequential_baseline(workspace, settings, sequential, progress)
    # Rare histories: where the id model has little to go on and world knowledge should help.
    seen = Counter(m.history for m in data.train_moves)
    rare = [seen[m.history] < RARE_BELOW for m in cases]
    results = evaluate(
        cases,
        planner,
        frequency,
        popularity,
        len(workspace.catalog),
        n,
        settings.planner.seed,
        sasrec=sasrec,
        bootstrap=bootstrap,
        subsets={"rare_histories": rare},
    )
    return {
        "methods": results["methods"],
        "n_scaling": results["n_scaling"],
        "paired": results["paired"],
        "dataset": {
            "name": workspace.dataset.name,
            "events": len(workspace.dataset.interactions),
            "train_events": len(workspace.train.interactions),
            "test_events": len(workspace.test.interactions),
            "split_quantile": settings.data.split_quantile,
            "cases": len(cases),
            "positive_cases": sum(m.positive for m in cases),
            "rare_histories": {
                "rule": f"history seen in fewer than {RARE_BELOW} training novel moves",
                "cases": sum(rare),
                "positive_cases": sum(r and m.positive for r, m in zip(rare, cases, strict=True)),
                # Kept under "dataset" so the report's top-level keys stay the agreed five.
                "methods": results["subsets"]["rare_histories"],
            },
            "clusters": len(workspace.catalog),
            "catalog_version": workspace.catalog.version,
            "history_length": settings.sequence.history_length,
            "novelty_window": settings.sequence.novelty_window,
            "n": n,
            "temperature": planner.temperature,
            "weight": planner.weight,
            "window_weight": planner.window_weight,
            "models": models,
            "baselines": {
                "sasrec": {
                    **sequential.as_dict(),
                    "steps": sasrec_run.steps,
                    "seconds": round(sasrec_run.seconds, 2),
                    "final_loss": round(sasrec_run.final_loss, 4),
                }
            },
            "bootstrap": {
                "method": "percentile",
                "resamples": bootstrap.resamples,
                "confidence": bootstrap.confidence,
                "seed": bootstrap.seed,
                "paired_against": REFERENCE,
            },
        },
        "seed": settings.planner.seed,
    }


def _split_time(workspace: Workspace) -> Any:
    # The same cut as plugin.models.fit.training_data: held-out moves start at the test part.
    return workspace.test.interactions["event_time"].min()


def _with_sequences(
    workspace: Workspace, settings: Settings, heldout: Sequence[NovelMove], length: int
) -> list[NovelMove]:
    """The held-out moves again, from the same walk, now carrying each user's recent cluster
    sequence for the sequential baseline; checked to be the very same moves."""
    sequence = settings.sequence
    split = _split_time(workspace)
    walked = novel_moves(
        workspace.dataset.events(),
        workspace.catalog,
        sequence.history_length,
        sequence.novelty_window,
        settings.data,
        sequence_length=length,
    )
    cases = [m for m in walked if m.at is not None and m.at >= split]
    if [replace(m, sequence=()) for m in cases] != list(heldout):
        raise RuntimeError("the sequence walk and the training-data walk disagree on the cases")
    return cases


def _fit_sequential_baseline(
    workspace: Workspace, settings: Settings, sequential: SequentialSettings, progress: bool
) -> tuple[SasRecModel, TrainingRun]:
    """SASRec on every user's sequence up to the split (the training part only)."""
    split = _split_time(workspace)
    timelines = cluster_sequences(
        workspace.dataset.events(), workspace.catalog, settings.sequence.novelty_window
    )
    training = [[step for step in steps if step.at < split] for steps in timelines.values()]
    return fit_sasrec(training, len(workspace.catalog), sequential, progress)


def _model_facts(manifest: dict[str, Any]) -> dict[str, Any]:
    return {
        "selection": manifest.get("selection"),
        "objective": manifest["objective"],
        "text_init": manifest["text_init"],
        "novelty": manifest.get("novelty", "id"),
        "alignment_features": manifest.get("alignment_features", "id"),
        **({"llm": manifest["llm"]} if "llm" in manifest else {}),
        "gate": manifest["gate"],
        "seconds": manifest["seconds"],
    }
