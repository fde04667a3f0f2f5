"""Compare two trained versions that differ in their alignment model (issue 12, item 5).

Each version comes from `explore train` (its own validation search, so each plans with the n,
T and weight it chose); typically one with `--alignment-features id` and one with `lm`, in
two model repositories. On the same held-out cases of the time split, this prints and writes:

* best_of_n positive hit@1 of each version with its 95% bootstrap interval, and the paired
  difference (the same resampled cases for both), overall and on the rare histories;
* the same with the novelty model, n, T and weight held fixed (the first version's), only
  the alignment model swapped: the alignment's own effect;
* each alignment model on held-out collective labels (the hard ``min_count`` rule on the
  held-out moves): log-loss of sigmoid(score) against the positive share, and the AUC of
  rows with a positive share against rows without.

    EXPLORE_MODELS__REPOSITORY=var/measure/repo-id explore train --alignment-features id
    EXPLORE_MODELS__REPOSITORY=var/measure/repo-lm explore train --alignment-features lm
    .venv/bin/python scripts/measure_alignment.py var/measure/repo-id var/measure/repo-lm \\
        --out docs/evaluation/alignment-movielens-100k.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from plugin.data.workspace import open_workspace
from plugin.evaluation.bootstrap import Bootstrap
from plugin.evaluation.offline import RARE_BELOW, best_of_n_method, case_outcomes, in_chunks
from plugin.models.alignment import AlignmentModel
from plugin.models.data import feedback_labels
from plugin.models.fit import training_data
from plugin.models.planner import BestOfNPlanner, best_of_n_planner
from plugin.models.repository import ModelRepository
from plugin.settings import Settings, load_settings


def planner_of(settings: Settings, repository: Path, catalog: Any) -> BestOfNPlanner:
    """The newest version in ``repository``, planning with its own chosen n, T and weight."""
    scoped = settings.model_copy(
        update={"models": settings.models.model_copy(update={"repository": repository})}
    )
    return best_of_n_planner(scoped, catalog, ModelRepository(repository).complete_versions()[-1])


def rank_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """P(a positive row scores above a negative one), ties counting half (Mann-Whitney)."""
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    for start, count in zip(first, counts, strict=True):
        ranks[order[start : start + count]] = start + (count + 1) / 2
    pos = int(positive.sum())
    neg = len(positive) - pos
    return float((ranks[positive].sum() - pos * (pos + 1) / 2) / (pos * neg))


@torch.inference_mode()
def label_fit(alignment: AlignmentModel, histories: np.ndarray, candidates: np.ndarray,
              labels: np.ndarray) -> dict[str, float]:  # fmt: skip
    """Log-loss and AUC of the alignment model on held-out collective labels."""
    scores = alignment(torch.from_numpy(histories), torch.from_numpy(candidates)[:, None])[:, 0]
    target = torch.from_numpy(labels).float()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(scores, target)
    return {
        "log_loss": round(float(loss), 5),
        "auc": round(rank_auc(scores.numpy(), labels > 0), 5),
        "rows": len(labels),
        "rows_with_positive_share": int((labels > 0).sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path, help="model repository of the reference version")
    parser.add_argument("second", type=Path, help="model repository of the other version")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    started = time.perf_counter()
    settings = load_settings()
    workspace = open_workspace(settings)
    catalog = workspace.catalog
    data = training_data(workspace, settings)
    cases = data.heldout_moves
    first = planner_of(settings, args.first, catalog)
    second = planner_of(settings, args.second, catalog)
    # The alignment alone: the second version's alignment in the first version's planner.
    swapped = BestOfNPlanner(
        first.novelty, second.alignment, first.n, first.temperature, first.seed, "swapped",
        weight=first.weight,
    )  # fmt: skip
    seen = Counter(m.history for m in data.train_moves)
    rare = np.array([seen[m.history] < RARE_BELOW for m in cases])
    bootstrap = Bootstrap(seed=settings.planner.seed)
    outcomes = {
        name: case_outcomes(cases, in_chunks(cases, best_of_n_method(planner, planner.n)))
        for name, planner in (("first", first), ("second", second), ("swapped", swapped))
    }

    def summary(name: str, mask: np.ndarray) -> dict[str, Any]:
        hits = outcomes[name].positive_hit[mask].astype(float)
        value, interval = bootstrap.mean(hits)
        return {"positive_hit_at_1": round(value, 5), "ci": [round(x, 5) for x in interval]}

    def paired(a: str, b: str, mask: np.ndarray) -> dict[str, Any]:
        delta, interval = bootstrap.paired_difference(
            outcomes[a].positive_hit[mask], outcomes[b].positive_hit[mask]
        )
        return {"difference": round(delta, 5), "ci": [round(x, 5) for x in interval]}

    everything = np.ones(len(cases), dtype=bool)
    parts = {"all": everything, "rare_histories": rare}
    held = feedback_labels(
        cases, len(catalog), settings.sequence.history_length, settings.models.min_count
    )
    report: dict[str, Any] = {
        "dataset": workspace.dataset.name,
        "cases": len(cases),
        "positive_cases": int(sum(m.positive for m in cases)),
        "rare_cases": int(rare.sum()),
        "rare_positive_cases": int(sum(r and m.positive for r, m in zip(rare, cases, strict=True))),
        "versions": {
            name: {
                "repository": str(path),
                "alignment_features": planner.alignment.config.features,
                "n": planner.n,
                "temperature": planner.temperature,
                "weight": planner.weight,
                "manifest_selection": ModelRepository(path)
                .manifest(ModelRepository(path).complete_versions()[-1])
                .get("selection", {})
                .get("chosen"),
                "heldout_labels": label_fit(
                    planner.alignment, held.histories, held.candidates, held.labels
                ),
            }
            for name, path, planner in (
                ("first", args.first, first),
                ("second", args.second, second),
            )
        },
        "best_of_n": {
            part: {
                "first": summary("first", mask),
                "second": summary("second", mask),
                "second - first": paired("second", "first", mask),
                "alignment swapped, first's novelty and selection": summary("swapped", mask),
                "swapped - first": paired("swapped", "first", mask),
            }
            for part, mask in parts.items()
        },
        "bootstrap": {"resamples": bootstrap.resamples, "seed": bootstrap.seed},
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(report["best_of_n"], indent=1))
    for name, facts in report["versions"].items():
        print(name, facts["alignment_features"], facts["heldout_labels"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
