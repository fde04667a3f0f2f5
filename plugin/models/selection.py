"""Model selection on a validation split inside the training period (``explore train``).

The settings that decide how well best-of-n plans (n, the sampling temperature, the alignment
label rule and the weight of alignment against novelty when picking the best of n) are chosen
here, never by hand on one dataset:

1. The training period's novel moves are cut by time: the last ``validation_fraction`` is the
   validation split, the rest is the fitting part. Validation moves keep the state their users
   built up before them (the same walk), exactly like the held-out part in evaluation.
2. The novelty model is fit once per curation on the fitting part (the paper's balanced
   pairs, and every move at its frequency), and the alignment model once per label rule (the
   hard ``min_count`` cut, and the Beta prior at each ``prior_strengths`` value).
3. Every (label rule, temperature, n, weight, window weight, window L2) is scored on the
   validation moves by best-of-n's positive hit@1 (the share of moves whose plan is their
   target and was engaged with positively), averaged over ``seeds`` sampling seeds. The window
   term's models (:mod:`plugin.models.window`) are fit on the fitting part, one per L2 of
   ``window_l2s``, each stopped early at its lowest log-loss on the validation moves; where the
   best point has the grid's weakest (or strongest) L2, a model one decade weaker (stronger)
   is added and scored, until the chosen L2 is bracketed or the bounds stop it; then, at the
   chosen L2, a model per recency decay of ``window_decays`` (the window's clusters weighed
   ``decay ** age``, 1 the uniform mean). The best wins; ties go to the smaller n, then the
   smaller window weight, then the stronger window L2, then the uniform window, then the
   larger weight, then the lower temperature, then the weaker prior.
4. Both models are refit on the whole training period with the winning label rule (and the
   window model with its chosen steps, L2 and decay), and the version records the chosen values, the
   validation scores and what the search cost.

The search fits the cheapest first (the paper's curation, then every label rule, then the
other curation) and starts no further fit once ``budget_s`` is spent (what was skipped is
recorded); scoring the grid is one vectorised pass per label rule, curation and temperature.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from plugin.core.moves import NovelMove
from plugin.core.planning import WindowTransitions
from plugin.data.workspace import Workspace
from plugin.models.alignment import AlignmentModel
from plugin.models.data import NoveltyData, feedback_labels, natural_novelty_data, novelty_data
from plugin.models.fit import (
    FittedModels,
    TrainingData,
    alignment_descriptions,
    fit_models,
    training_data,
)
from plugin.models.novelty import NoveltyModel, history_seed, perturbed_order
from plugin.models.planner import histories_tensor
from plugin.models.repository import ModelRepository, transitions_record
from plugin.models.training import (
    alignment_config,
    novelty_config,
    train_alignment,
    train_novelty,
)
from plugin.models.window import (
    WindowFit,
    WindowKey,
    early_stopped_window_models,
    fit_window_model,
    next_window_l2,
    window_bags,
)
from plugin.settings import SelectionSettings, Settings


@dataclass(frozen=True)
class Candidate:
    """One point of the search grid with its validation score."""

    prior_strength: float
    temperature: float
    n: int
    weight: float
    positive_hit_at_1: float
    hit_at_1: float
    curation: str = "balanced"
    window_weight: float = 0.0
    window_l2: float | None = None  # the window model's L2 (None at window weight 0)
    window_decay: float | None = None  # its recency decay (1: the uniform mean)

    def key(self) -> tuple[float | str, ...]:
        """Best first: score, then the cheaper and more conservative settings (no window
        term before one, a stronger window L2 before a weaker one, the uniform window before
        a recency-weighted one, the paper's balanced curation before the natural one)."""
        return (
            -round(self.positive_hit_at_1, 9),
            self.n,
            self.window_weight,
            -(self.window_l2 or 0.0),
            -(self.window_decay or 1.0),
            -self.weight,
            self.temperature,
            self.prior_strength,
            self.curation,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "novelty_curation": self.curation,
            "label_rule": label_rule(self.prior_strength),
            "prior_strength": self.prior_strength,
            "temperature": self.temperature,
            "n": self.n,
            "weight": self.weight,
            "window_weight": self.window_weight,
            "window_l2": self.window_l2,
            "window_decay": self.window_decay,
            "positive_hit_at_1": round(self.positive_hit_at_1, 5),
            "hit_at_1": round(self.hit_at_1, 5),
        }


def curated_novelty_data(
    moves: Sequence[NovelMove], k: int, curation: str, cap: int
) -> NoveltyData:
    """The novelty model's training pairs under a curation: ``balanced`` (the paper's: positive
    moves, deduplicated per user, balanced weights) or ``natural`` (every move, as often as
    it happened)."""
    if curation == "natural":
        return natural_novelty_data(moves, k)
    return novelty_data(moves, k, cap=cap)


def label_rule(prior_strength: float) -> str:
    return "min_count" if prior_strength == 0 else "beta_prior"


def validation_split(
    moves: Sequence[NovelMove], fraction: float
) -> tuple[list[NovelMove], list[NovelMove]]:
    """The training moves cut by time: (fitting part, the last ``fraction`` as validation).

    Moves at the cut's instant all go to validation, so the two parts never share a time."""
    timed = [m for m in moves if m.at is not None]
    if len(timed) < 2:
        raise ValueError("too few timed novel moves in the training part for a validation split")
    times = sorted(m.at for m in timed if m.at is not None)
    cut = times[min(len(times) - 1, int(len(times) * (1 - fraction)))]
    fit = [m for m in timed if m.at is not None and m.at < cut]
    validation = [m for m in timed if m.at is not None and m.at >= cut]
    if not fit or not any(m.positive for m in validation):
        raise ValueError(
            "the validation split has no fitting part or no positive move; "
            "raise selection.validation_fraction or use more data"
        )
    return fit, validation


@dataclass(frozen=True)
class ValidationCases:
    """Validation moves as arrays: per case its history row, window mask and target."""

    history_rows: np.ndarray  # [cases] index into ``histories``
    histories: list[tuple[int, ...]]
    allowed: np.ndarray  # [cases, C] False inside the user's novelty window
    targets: np.ndarray  # [cases]
    positive: np.ndarray  # [cases] bool
    windows: list[tuple[int, ...]]  # each case's novelty window, most recent first
    # Per window model (by its L2 and decay): [cases, C] each cluster's window score for the
    # case's window, the numbers WindowTransitions.scores gives.
    window_scores: dict[WindowKey, np.ndarray]

    @classmethod
    def of(
        cls,
        moves: Sequence[NovelMove],
        n_clusters: int,
        windows: Mapping[WindowKey, WindowTransitions] | None = None,
    ) -> ValidationCases:
        histories = list(dict.fromkeys(m.history for m in moves))
        row = {h: i for i, h in enumerate(histories)}
        recent = [m.recent for m in moves]
        _, allowed = window_bags(recent, n_clusters)
        cases = cls(
            history_rows=np.array([row[m.history] for m in moves], dtype=np.int64),
            histories=histories,
            allowed=allowed,
            targets=np.array([m.target for m in moves], dtype=np.int64),
            positive=np.array([m.positive for m in moves], dtype=bool),
            windows=recent,
            window_scores={},
        )
        return cases.with_windows(windows or {})

    def with_windows(self, windows: Mapping[WindowKey, WindowTransitions]) -> ValidationCases:
        """The same cases scored with these window models alone: each case's window as a
        bag of the model's recency weights, so a model's scores are one product with its
        ``[from, to]`` matrix."""
        n_clusters = self.allowed.shape[1]
        bags = {
            decay: window_bags(self.windows, n_clusters, decay)[0]
            for decay in {transitions.decay for transitions in windows.values()}
        }
        return replace(
            self,
            window_scores={
                key: bags[transitions.decay] @ np.array(transitions.scores_by_target).T
                for key, transitions in windows.items()
            },
        )


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return np.minimum(x, 0) - np.log1p(np.exp(-np.abs(x)))


def _mixed(scores: np.ndarray, log_probs: np.ndarray, weight: float) -> np.ndarray:
    """:func:`plugin.core.planning.selection_score`, vectorised (same order of candidates)."""
    if weight >= 1.0:
        return scores
    if weight <= 0.0:
        return log_probs
    return weight * _log_sigmoid(scores) + (1.0 - weight) * log_probs


# (n, alignment weight, window weight, window model (L2, decay) or None)
GridPoint = tuple[int, float, float, WindowKey | None]


def score_grid(
    cases: ValidationCases,
    log_probs: np.ndarray,
    alignment_scores: np.ndarray,
    temperature: float,
    seeds: Sequence[int],
    ns: Sequence[int],
    weights: Sequence[float],
    window_weights: Sequence[float] = (0.0,),
) -> dict[GridPoint, tuple[float, float]]:
    """(n, weight, window weight, window model) -> (positive hit@1, hit@1) of best-of-n on the
    cases, mean over seeds.

    ``log_probs`` and ``alignment_scores`` are [histories, C] over every cluster; a case's n
    candidates are the first n clusters of its history's sampling order outside its window,
    and its plan is the best of them by the mixed score plus the window weight times the
    case's window score under that window model (the first on ties), as in
    :func:`plugin.core.planning.select`. Window weight 0 has no model (None); a positive one
    is scored with every window model the cases carry."""
    n_max = max(ns)
    windows: list[tuple[float, WindowKey | None]] = [
        (v, model) for v in window_weights if v > 0 for model in cases.window_scores
    ]
    if 0.0 in window_weights or not windows:
        windows.insert(0, (0.0, None))
    totals: dict[GridPoint, list[float]] = {
        (n, w, v, model): [0.0, 0.0] for n in ns for w in weights for v, model in windows
    }
    for seed in seeds:
        order = perturbed_order(
            torch.from_numpy(log_probs),
            temperature,
            [history_seed(seed, h) for h in cases.histories],
        ).numpy()[cases.history_rows]  # [cases, C]
        novel = np.take_along_axis(cases.allowed, order, axis=1)
        # Stable sort puts each case's novel clusters first, in sampling order.
        positions = np.argsort(~novel, axis=1, kind="stable")[:, :n_max]
        candidates = np.take_along_axis(order, positions, axis=1)
        present = np.take_along_axis(novel, positions, axis=1)
        rows = cases.history_rows[:, None]
        cand_lp = log_probs[rows, candidates]
        cand_score = alignment_scores[rows, candidates]
        cand_window = {
            model: np.take_along_axis(scores, candidates, axis=1)
            for model, scores in cases.window_scores.items()
        }
        for weight in weights:
            base = _mixed(cand_score, cand_lp, weight)
            for window_weight, model in windows:
                scored = base if model is None else base + window_weight * cand_window[model]
                mixed = np.where(present, scored, -np.inf)
                for n in ns:
                    best = np.argmax(mixed[:, :n], axis=1)
                    planned = candidates[np.arange(len(best)), best]
                    hit = planned == cases.targets
                    total = totals[(n, weight, window_weight, model)]
                    total[0] += float(np.mean(hit & cases.positive))
                    total[1] += float(np.mean(hit))
    return {key: (v[0] / len(seeds), v[1] / len(seeds)) for key, v in totals.items()}


@torch.inference_mode()
def _all_scores(
    novelty: NoveltyModel, alignment: AlignmentModel | None, histories: list[tuple[int, ...]]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Novelty log-probs and alignment scores of every cluster for each history."""
    k = novelty.config.history_length
    clusters = novelty.config.n_clusters
    lps, scs = [], []
    for start in range(0, len(histories), 512):
        tensor = histories_tensor(histories[start : start + 512], k)
        lps.append(novelty.cluster_log_probs(tensor).numpy())
        if alignment is not None:
            every = torch.arange(clusters).expand(len(tensor), clusters)
            scs.append(alignment(tensor, every).numpy())
    return np.concatenate(lps), (np.concatenate(scs) if alignment is not None else None)


@dataclass(frozen=True)
class SearchResult:
    """The chosen point, every scored point, and what the search cost."""

    chosen: Candidate
    scored: list[Candidate]
    fit_moves: int
    validation_moves: int
    validation_positive: int
    seconds: float
    skipped_priors: list[float]
    skipped_curations: list[str]
    windows: list[WindowFit]  # the window models the grid chose from
    added_l2s: list[float] = field(default_factory=list)  # by the grid's edge rule
    skipped_decays: list[float] = field(default_factory=list)  # the budget was spent

    def window_model(self) -> WindowFit | None:
        """The chosen point's window model (None at window weight 0)."""
        chosen = (self.chosen.window_l2, self.chosen.window_decay)
        return next((w for w in self.windows if w.key == chosen), None)

    def reference(self, n: int, temperature: float, weight: float, prior: float) -> Any:
        """The scored point with these values and the paper's balanced curation, if any."""
        for c in self.scored:
            point = (c.n, c.temperature, c.weight, c.prior_strength, c.curation, c.window_weight)
            if point == (n, temperature, weight, prior, "balanced", 0.0):
                return c.as_dict()
        return None

    def best(
        self, window_weight: float | None = None, uniform: bool = False
    ) -> dict[str, Any] | None:
        """The best scored point at this window weight (any if None), and with a uniform
        window (decay 1) if ``uniform``, if any was scored."""
        points = [
            c
            for c in self.scored
            if (window_weight is None or c.window_weight == window_weight)
            and not (uniform and (c.window_decay or 1.0) < 1.0)
        ]
        return min(points, key=Candidate.key).as_dict() if points else None

    def as_dict(self, selection: SelectionSettings, settings: Settings) -> dict[str, Any]:
        best_by_n = {
            n: max(
                (c for c in self.scored if c.n == n), key=lambda c: c.positive_hit_at_1
            ).as_dict()
            for n in sorted({c.n for c in self.scored})
        }
        return {
            "chosen": self.chosen.as_dict(),
            "validation": {
                "fraction": selection.validation_fraction,
                "fit_moves": self.fit_moves,
                "moves": self.validation_moves,
                "positive_moves": self.validation_positive,
                "seeds": selection.seeds,
                "metric": "best_of_n positive_hit_at_1",
                "positive_hit_at_1": round(self.chosen.positive_hit_at_1, 5),
                # The settings before the search, and the novelty model alone, for contrast.
                "defaults": self.reference(
                    settings.planner.candidates, settings.planner.temperature, 1.0, 0.0
                ),
                "best_by_n": best_by_n,
                # The best point the search could reach without the window term.
                "best_without_window": self.best(window_weight=0.0),
                # The best point with the uniform window mean (the search before the decay).
                "best_uniform_window": self.best(uniform=True),
                # The window models fit on the fitting part: each (L2, decay)'s early-stopped
                # step count and validation log-loss.
                "window_models": [window.as_dict() for window in self.windows],
                "top": [c.as_dict() for c in sorted(self.scored, key=Candidate.key)[:10]],
            },
            "grid": {
                "candidates": selection.candidates,
                "temperatures": selection.temperatures,
                "weights": selection.weights,
                "window_weights": selection.window_weights,
                "window_l2s": selection.window_l2s,
                "window_l2_bounds": [selection.window_l2_floor, selection.window_l2_ceiling],
                # The decades the edge rule added to window_l2s, in the order it added them.
                "window_l2s_added": self.added_l2s,
                "window_decays": selection.window_decays,
                "skipped_window_decays": self.skipped_decays,
                "window_max_steps": selection.window_max_steps,
                "novelty_curations": selection.novelty_curations,
                "prior_strengths": selection.prior_strengths,
                "points": len(self.scored),
                "skipped_prior_strengths": self.skipped_priors,
                "skipped_novelty_curations": self.skipped_curations,
            },
            "budget_s": selection.budget_s,
            "seconds": round(self.seconds, 2),
        }


def search(
    workspace: Workspace,
    settings: Settings,
    train_moves: Sequence[NovelMove],
    progress: bool = False,
) -> SearchResult:
    """Fit on the fitting part, score the grid on the validation split, return the best."""
    selection, models = settings.selection, settings.models
    started = time.perf_counter()
    k = settings.sequence.history_length
    n_clusters = len(workspace.catalog)
    fit, validation = validation_split(train_moves, selection.validation_fraction)
    # One window model per L2 (the uniform window mean), each stopped early on the validation
    # log-loss; the grid below chooses between them (and none) by positive hit@1.
    windows = (
        early_stopped_window_models(
            fit, validation, n_clusters, selection.window_l2s, selection.window_max_steps
        )
        if any(selection.window_weights)
        else []
    )
    cases = ValidationCases.of(
        validation, n_clusters, {window.key: window.transitions for window in windows}
    )
    seeds = [settings.planner.seed + i for i in range(selection.seeds)]
    ns = [n for n in selection.candidates if n <= n_clusters] or [1]
    steps = len(selection.prior_strengths) + len(selection.novelty_curations)
    bar = tqdm(total=steps, desc="selection", disable=not progress)

    def over_budget() -> bool:
        return time.perf_counter() - started > selection.budget_s

    # Cheapest first, so a spent budget skips the most expensive fit: the paper's curation,
    # then every label rule (seconds each, the paper's hard rule first), then the other
    # curation (a novelty fit, minutes on a busy machine).
    curations = sorted(selection.novelty_curations, key=lambda c: c != "balanced")
    log_probs: dict[str, np.ndarray] = {}
    novelty = train_novelty(
        curated_novelty_data(fit, k, curations[0], models.repeat_cap),
        novelty_config(workspace.catalog, k, models),
        models,
        progress=progress,
    )[0]
    log_probs[curations[0]], _ = _all_scores(novelty, None, cases.histories)
    bar.update()
    descriptions = alignment_descriptions(workspace, settings)
    alignment_scores: dict[float, np.ndarray] = {}
    skipped: list[float] = []
    for prior in selection.prior_strengths:
        if alignment_scores and over_budget():
            skipped.append(prior)
            bar.update()
            continue
        try:
            labels = feedback_labels(
                fit, n_clusters, k, models.min_count, models.seed, prior_strength=prior
            )
        except ValueError:  # no history with min_count moves in the fitting part
            skipped.append(prior)
            bar.update()
            continue
        alignment, _ = train_alignment(
            labels,
            alignment_config(n_clusters, k, models.objective, descriptions),
            models,
            progress,
            descriptions,
        )
        scores = _all_scores(novelty, alignment, cases.histories)[1]
        assert scores is not None
        alignment_scores[prior] = scores
        bar.update()
    skipped_curations: list[str] = []
    for curation in curations[1:]:
        if over_budget():
            skipped_curations.append(curation)
            bar.update()
            continue
        other = train_novelty(
            curated_novelty_data(fit, k, curation, models.repeat_cap),
            novelty_config(workspace.catalog, k, models),
            models,
            progress=progress,
        )[0]
        log_probs[curation], _ = _all_scores(other, None, cases.histories)
        bar.update()

    def score(grid_cases: ValidationCases, window_weights: Sequence[float]) -> list[Candidate]:
        """Every fitted (label rule, curation) at every temperature, n and weight."""
        points: list[Candidate] = []
        for prior, scores in alignment_scores.items():
            for name, curation_log_probs in log_probs.items():
                for temperature in selection.temperatures:
                    grid = score_grid(
                        grid_cases,
                        curation_log_probs,
                        scores,
                        temperature,
                        seeds,
                        ns,
                        selection.weights,
                        window_weights,
                    )
                    points += [
                        Candidate(
                            prior,
                            temperature,
                            n,
                            weight,
                            positive,
                            hit,
                            name,
                            window,
                            model[0] if model else None,
                            model[1] if model else None,
                        )
                        for (n, weight, window, model), (positive, hit) in grid.items()
                    ]
        return points

    scored = score(cases, selection.window_weights)
    bar.close()
    if not scored:
        raise ValueError("the selection search could not fit any label rule on the fitting part")
    chosen = min(scored, key=Candidate.key)
    positive_window_weights = [v for v in selection.window_weights if v > 0]

    def add_window(l2: float, decay: float) -> Candidate:
        """A window model at (l2, decay), scored at every positive window weight (the points
        without the term are scored already); the best point again."""
        window = early_stopped_window_models(
            fit, validation, n_clusters, [l2], selection.window_max_steps, decay
        )[0]
        windows.append(window)
        scored.extend(
            score(cases.with_windows({window.key: window.transitions}), positive_window_weights)
        )
        return min(scored, key=Candidate.key)

    # The grid's edge rule: a chosen edge L2 adds the next decade that way, until the chosen
    # L2 is bracketed or the bounds stop it (seconds per decade: one window fit).
    added: list[float] = []
    while (
        not over_budget()
        and (
            l2 := next_window_l2(
                chosen.window_l2,
                [window.l2 for window in windows],
                selection.window_l2_floor,
                selection.window_l2_ceiling,
            )
        )
        is not None
    ):
        added.append(l2)
        chosen = add_window(l2, 1.0)
    # Then the window's order: at the chosen L2, each recency decay of the grid (the L2 is
    # searched with the uniform mean; one fit per decay, not one per L2 and decay).
    skipped_decays: list[float] = []
    if chosen.window_l2 is not None:
        l2 = chosen.window_l2
        for decay in (d for d in selection.window_decays if d < 1.0):
            if over_budget():
                skipped_decays.append(decay)
                continue
            chosen = add_window(l2, decay)
    return SearchResult(
        chosen=chosen,
        scored=scored,
        fit_moves=len(fit),
        validation_moves=len(validation),
        validation_positive=int(cases.positive.sum()),
        seconds=time.perf_counter() - started,
        skipped_priors=skipped,
        skipped_curations=skipped_curations,
        windows=sorted(windows, key=lambda window: (window.l2, -window.transitions.decay)),
        added_l2s=added,
        skipped_decays=skipped_decays,
    )


def chosen_settings(settings: Settings, chosen: Candidate) -> Settings:
    """``settings`` with the planner's n and temperature set to the chosen values."""
    planner = settings.planner.model_copy(
        update={"candidates": chosen.n, "temperature": chosen.temperature}
    )
    return settings.model_copy(update={"planner": planner})


def fit_selected(workspace: Workspace, settings: Settings, progress: bool = False) -> FittedModels:
    """The search, then both models refit on the whole training period with its choice;
    the manifest gains a ``selection`` block (chosen values, validation scores, cost)."""
    data = training_data(workspace, settings)
    result = search(workspace, settings, data.train_moves, progress)
    chosen = result.chosen
    models = settings.models
    refit = TrainingData(
        train_moves=data.train_moves,
        heldout_moves=data.heldout_moves,
        novelty=curated_novelty_data(
            data.train_moves,
            settings.sequence.history_length,
            chosen.curation,
            models.repeat_cap,
        ),
        feedback=feedback_labels(
            data.train_moves,
            len(workspace.catalog),
            settings.sequence.history_length,
            models.min_count,
            models.seed,
            prior_strength=chosen.prior_strength,
        ),
    )
    fitted = fit_models(workspace, chosen_settings(settings, chosen), data=refit, progress=progress)
    window = result.window_model()
    manifest = {
        **fitted.manifest,
        "selection": result.as_dict(settings.selection, settings),
        # The chosen window model, refit on the whole training period like the other models
        # with the L2 and step count the validation split chose (none at window weight 0).
        "window_transitions": (
            transitions_record(
                fit_window_model(
                    data.train_moves,
                    len(workspace.catalog),
                    window.l2,
                    window.steps,
                    window.transitions.decay,
                ),
                len(data.train_moves),
            )
            if window is not None and chosen.window_weight > 0
            else None
        ),
        "catalog": {
            "leaf_clusters": len(workspace.catalog),
            "parent_clusters": len(workspace.catalog.parents),
            "granularity": workspace.catalog.build.get("granularity"),
        },
    }
    return replace(fitted, manifest=manifest)


def train_selected_version(
    workspace: Workspace, settings: Settings, progress: bool = False
) -> tuple[int, FittedModels]:
    """:func:`fit_selected`, written as the next numbered version."""
    fitted = fit_selected(workspace, settings, progress)
    version = ModelRepository(settings.models.repository).write(
        fitted.novelty, fitted.alignment, fitted.manifest
    )
    return version, fitted
