"""Measure the novelty model's two training objectives (``models.novelty_objective``).

For each curation (the paper's balanced positive pairs, and every novel move at its natural
frequency) and each objective (``tokens``: the softmax over the whole vocabulary; ``window``:
the user's novelty window left out, as every plan leaves it out), fits the id novelty model on
the fitting part of the training period and scores its greedy plan (the most likely cluster
outside the user's window) by positive hit@1 on the validation split (the last 15% of the
training period, what the validation search scores on) and on the held-out part, with 95%
bootstrap intervals and the paired difference window - tokens. Writes JSON.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python scripts/measure_novelty_objective.py \\
        --out var/measure/novelty-objective.json

``--steps 1000,3000,8000 --objectives window --curations natural`` measures instead how the
scores move with the training length (``models.novelty_steps``; each a full run with its own
learning-rate schedule); entries are then named ``window@1000`` and so on.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from plugin.core.moves import NovelMove
from plugin.data.workspace import open_workspace
from plugin.evaluation.bootstrap import Bootstrap
from plugin.models.fit import training_data
from plugin.models.novelty import NoveltyModel
from plugin.models.planner import histories_tensor
from plugin.models.selection import curated_novelty_data, validation_split
from plugin.models.training import novelty_config, train_novelty
from plugin.settings import NoveltyObjective, load_settings

OBJECTIVES: tuple[NoveltyObjective, ...] = ("tokens", "window")


def greedy_positive_hits(model: NoveltyModel, cases: Sequence[NovelMove]) -> np.ndarray:
    """Per case: did the most likely cluster outside the window match a positive move."""
    k = model.config.history_length
    with torch.inference_mode():
        log_probs = model.cluster_log_probs(histories_tensor([m.history for m in cases], k))
    order = log_probs.argsort(dim=1, descending=True, stable=True).tolist()
    planned = [
        next(c for c in row if c not in m.recent) for m, row in zip(cases, order, strict=True)
    ]
    return np.array([p == m.target and m.positive for p, m in zip(planned, cases, strict=True)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--curations", default="balanced,natural", help="comma-separated")
    parser.add_argument("--objectives", default=",".join(OBJECTIVES), help="comma-separated")
    parser.add_argument(
        "--steps", default="", help="comma-separated novelty step counts (default: settings)"
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    settings = load_settings()
    workspace = open_workspace(settings)
    data = training_data(workspace, settings)
    k = settings.sequence.history_length
    fit, validation = validation_split(data.train_moves, settings.selection.validation_fraction)
    config = novelty_config(workspace.catalog, k, settings.models)
    bootstrap = Bootstrap(seed=settings.planner.seed)
    report: dict[str, Any] = {
        "dataset": workspace.dataset.name,
        "fit_moves": len(fit),
        "validation_moves": len(validation),
        "heldout_moves": len(data.heldout_moves),
        "curations": {},
    }
    objectives = [o for o in OBJECTIVES if o in args.objectives.split(",")]
    steps = [int(s) for s in args.steps.split(",") if s] or [settings.models.novelty_steps]
    runs = [(o, n, o if len(steps) == 1 else f"{o}@{n}") for n in steps for o in objectives]
    for curation in args.curations.split(","):
        rows = curated_novelty_data(fit, k, curation, settings.models.repeat_cap)
        hits: dict[str, dict[str, np.ndarray]] = {}
        entry: dict[str, Any] = {"rows": len(rows)}
        for objective, n_steps, name in runs:
            models = settings.models.model_copy(
                update={"novelty_objective": objective, "novelty_steps": n_steps}
            )
            started = time.perf_counter()
            model, run = train_novelty(rows, config, models)
            hits[name] = {
                "validation": greedy_positive_hits(model, validation),
                "heldout": greedy_positive_hits(model, data.heldout_moves),
            }
            entry[name] = {
                part: {"positive_hit_at_1": mean, "ci": interval}
                for part, (mean, interval) in (
                    (part, bootstrap.mean(values)) for part, values in hits[name].items()
                )
            }
            entry[name]["seconds"] = round(time.perf_counter() - started, 1)
            entry[name]["final_loss"] = round(run.final_loss, 4)
            print(curation, name, json.dumps(entry[name]), flush=True)
        if {"window", "tokens"} <= hits.keys():
            entry["paired_window_minus_tokens"] = {
                part: dict(
                    zip(
                        ("difference", "ci"),
                        bootstrap.paired_difference(hits["window"][part], hits["tokens"][part]),
                        strict=True,
                    )
                )
                for part in ("validation", "heldout")
            }
            print(curation, "paired", json.dumps(entry["paired_window_minus_tokens"]), flush=True)
        report["curations"][curation] = entry
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
