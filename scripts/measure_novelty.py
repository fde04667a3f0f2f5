"""Measure one novelty model for the table in docs/MODELS.md (issue 12).

Fits the novelty and alignment models on the MovieLens-100K time split (id transformer, or the
LLM from pretrained or random weights), gates them and evaluates best-of-n, greedy novelty and
the baselines without SASRec on the held-out cases of a seeded sample of held-out histories
(the same sample for every model: a full evaluation of the LLM took too long on the shared
machine), overall and on the rare histories; for the LLM, also the rate of ranking fresh
histories (what a full lookup table costs). Writes JSON.

    nice -n 10 .venv/bin/python scripts/measure_novelty.py llm --out var/measure/llm.json
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python scripts/measure_novelty.py id --out ...
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from plugin.adapters.plan_cache import all_histories
from plugin.core.frequency import frequency_planner
from plugin.data.workspace import open_workspace
from plugin.evaluation.offline import RARE_BELOW, evaluate
from plugin.models.fit import fit_models, training_data
from plugin.models.planner import BestOfNPlanner
from plugin.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("novelty", choices=["id", "llm"])
    parser.add_argument("--random-weights", action="store_true", help="LLM from random weights")
    parser.add_argument("--method", choices=["lora", "unfreeze"], default="lora")
    parser.add_argument("--histories", type=int, default=300, help="held-out histories sampled")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    llm = {"pretrained": not args.random_weights, "method": args.method}
    settings = load_settings(models={"novelty": args.novelty, "llm": llm})
    workspace = open_workspace(settings)
    data = training_data(workspace, settings)
    histories = sorted({m.history for m in data.heldout_moves})
    chosen = set(random.Random(7).sample(histories, min(args.histories, len(histories))))
    cases = [m for m in data.heldout_moves if m.history in chosen]
    data = replace(data, heldout_moves=cases)
    started = time.perf_counter()
    fitted = fit_models(workspace, settings, data=data, progress=True)
    fit_seconds = time.perf_counter() - started
    plan = settings.planner
    planner = BestOfNPlanner(
        fitted.novelty, fitted.alignment, plan.candidates, plan.temperature, plan.seed, "measure"
    )
    frequency = frequency_planner(
        workspace.train.events(), workspace.catalog, settings.sequence, plan.candidates
    )
    popularity = Counter(m.target for m in data.train_moves if m.positive)
    seen = Counter(m.history for m in data.train_moves)
    rare = [seen[m.history] < RARE_BELOW for m in cases]
    started = time.perf_counter()
    results = evaluate(
        cases,
        planner,
        frequency,
        popularity,
        len(workspace.catalog),
        plan.candidates,
        plan.seed,
        subsets={"rare": rare},
    )
    report: dict[str, Any] = {
        "novelty": args.novelty,
        "pretrained": not args.random_weights,
        "fit_seconds": round(fit_seconds, 1),
        "eval_seconds": round(time.perf_counter() - started, 1),
        "manifest": fitted.manifest,
        "methods": results["methods"],
        "rare": results["subsets"]["rare"],
        "cases": len(cases),
        "positive_cases": sum(m.positive for m in cases),
        "rare_cases": sum(rare),
        "rare_positive": sum(r and m.positive for r, m in zip(rare, cases, strict=True)),
        "histories_sampled": len(chosen),
        "threads": torch.get_num_threads(),
    }
    if args.novelty == "llm":
        every = all_histories(len(workspace.catalog), settings.sequence.history_length)
        fresh = [h for h in every if h not in chosen][: settings.cache.precompute_batch]
        started = time.perf_counter()
        planner.rank(fresh)  # not in the model's memo: what a fresh precompute pays
        seconds = time.perf_counter() - started
        report["table_rate"] = {"histories": len(fresh), "per_second": len(fresh) / seconds}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
