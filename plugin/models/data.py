"""Training data for the two models, from the training split only.

Novel transitions
-----------------
The novel moves come from the core's one walk (:mod:`plugin.core.moves`): the history is the K
most recent unique clusters, and a *novel transition* is a move to a cluster outside the user's
novelty window W. A transition
enters the novelty model's data only when the user engaged positively with the target
(the paper curates from positively engaged sequences). Each user contributes a given
(history, next) pair once: that is the deduplication. A row keeps the novelty window its user
had before the move, for the window-restricted objective (``models.novelty_objective``).

Balanced sampling
-----------------
Popular targets would otherwise dominate and the novelty model would collapse onto them.
Each distinct (history, next) pair gets weight ``min(users, cap) / sqrt(popularity(next))``,
shared equally by its users' rows: repeats are capped, and a target's total pull grows with
the square root of its popularity instead of linearly. Training batches are drawn with these
weights.

Alignment feedback
------------------
Labels are aggregated over all users with the same history: for history h and candidate c,
``label = positive novel moves h -> c / all novel moves out of h``, the share of users with
that history whose next novel engagement was a positive one in c. Histories seen fewer than
``min_count`` times are dropped (the hard rule). The smoothed rule (``prior_strength`` s > 0)
keeps every history and shrinks its shares towards the candidate's share over all histories,
a Beta prior worth s moves: ``label = (positive h -> c + s p(c)) / (moves out of h + s)``,
so a history seen twice says little and one seen a hundred times says almost all.
Pointwise rows cover every (h, c) with c outside h (most are
0); pairwise preferences pair each c with a positive label with c' of a lower label.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from plugin.core.moves import NovelMove, PlanOutcome


@dataclass(frozen=True)
class NoveltyData:
    """The novelty model's training rows: one per user and distinct (history, next) pair
    (balanced) or per move (natural), with the curation's sampling weights.

    Each row keeps the novelty window its user had before the move: a plan never proposes a
    cluster of the window, so the window-restricted objective (``models.novelty_objective``)
    leaves those clusters out of the softmax."""

    histories: np.ndarray  # [N, K] cluster ids, most recent first, -1 padded
    targets: np.ndarray  # [N]
    weights: np.ndarray  # [N], sums to 1
    users: np.ndarray  # [N] distinct users behind the row's (history, next) pair
    windows: np.ndarray  # [N, W] the user's novelty window before the move, -1 padded

    def __len__(self) -> int:
        return len(self.targets)


def pad_history(history: tuple[int, ...], k: int) -> list[int]:
    return list(history[:k]) + [-1] * (k - len(history[:k]))


def _windows(moves: list[NovelMove]) -> np.ndarray:
    width = max((len(m.recent) for m in moves), default=0)
    windows = np.full((len(moves), max(width, 1)), -1, dtype=np.int64)
    for row, move in enumerate(moves):
        windows[row, : len(move.recent)] = move.recent
    return windows


def novelty_data(moves: Iterable[NovelMove], k: int, cap: int = 4) -> NoveltyData:
    """Deduplicate positive moves per user, then weight pairs by the balanced rule above; a
    pair's weight is shared equally by its users' rows (each with that user's window)."""
    first: dict[tuple[str, tuple[int, ...], int], NovelMove] = {}
    for move in moves:
        if move.positive:
            first.setdefault((move.user_id, move.history, move.target), move)
    if not first:
        raise ValueError("no positive novel transitions in the training data")
    rows = [first[key] for key in sorted(first, key=lambda key: (key[1], key[2], key[0]))]
    pair_users: Counter[tuple[tuple[int, ...], int]] = Counter((m.history, m.target) for m in rows)
    popularity: Counter[int] = Counter(m.target for m in rows)
    users = np.array([pair_users[(m.history, m.target)] for m in rows], dtype=np.float64)
    pair_weight = np.minimum(users, cap) / np.sqrt([popularity[m.target] for m in rows])
    weights = pair_weight / users
    return NoveltyData(
        histories=np.array([pad_history(m.history, k) for m in rows], dtype=np.int64),
        targets=np.array([m.target for m in rows], dtype=np.int64),
        weights=weights / weights.sum(),
        users=users.astype(np.int64),
        windows=_windows(rows),
    )


def natural_novelty_data(moves: Iterable[NovelMove], k: int) -> NoveltyData:
    """Every novel move (engaged with positively or not) at its natural frequency: the
    ``natural`` curation the validation search may choose instead of the balanced one.

    It estimates where users go next, not where they liked going; the alignment model, mixed
    in at the chosen weight, brings in what they liked."""
    rows = sorted(moves, key=lambda m: (m.history, m.target, m.user_id))
    if not rows:
        raise ValueError("no novel transitions in the training data")
    pair_users: dict[tuple[tuple[int, ...], int], set[str]] = defaultdict(set)
    for move in rows:
        pair_users[(move.history, move.target)].add(move.user_id)
    return NoveltyData(
        histories=np.array([pad_history(m.history, k) for m in rows], dtype=np.int64),
        targets=np.array([m.target for m in rows], dtype=np.int64),
        weights=np.full(len(rows), 1 / len(rows)),
        users=np.array([len(pair_users[(m.history, m.target)]) for m in rows], dtype=np.int64),
        windows=_windows(rows),
    )


@dataclass(frozen=True)
class FeedbackLabels:
    """Collective feedback aggregated per (history, candidate)."""

    histories: np.ndarray  # [M, K]
    candidates: np.ndarray  # [M]
    labels: np.ndarray  # [M] positive share in [0, 1]
    support: np.ndarray  # [M] novel moves out of the history
    pairs: np.ndarray  # [P, 2]: row of the preferred candidate, row of a less preferred one
    min_count: int

    def __len__(self) -> int:
        return len(self.labels)


def feedback_labels(
    moves: Iterable[NovelMove],
    n_clusters: int,
    k: int,
    min_count: int = 5,
    seed: int = 7,
    outcomes: Iterable[PlanOutcome] = (),
    prior_strength: float = 0.0,
) -> FeedbackLabels:
    """Aggregate moves into pointwise labels and pairwise preferences (see module docstring).

    ``outcomes`` (answered plans, weighted) add to their own pair only:
    ``label(h, c) = (positive moves h -> c + successes of c for h)
    / (moves out of h + answered plans of c for h)``, so a planned cluster that users answer
    badly loses label against the other candidates of its history.
    """
    out_of: Counter[tuple[int, ...]] = Counter()
    positive: Counter[tuple[tuple[int, ...], int]] = Counter()
    positive_into: Counter[int] = Counter()
    for move in moves:
        out_of[move.history] += 1
        if move.positive:
            positive[(move.history, move.target)] += 1
            positive_into[move.target] += 1
    if prior_strength < 0:
        raise ValueError(f"prior_strength must be >= 0, got {prior_strength}")
    # The prior's mean: each candidate's positive share over all moves (the Beta prior).
    total_moves = max(sum(out_of.values()), 1)
    prior = [positive_into[c] / total_moves for c in range(n_clusters)]
    if prior_strength > 0:
        min_count = 1  # the prior, not a cut, handles thin histories
    trials: defaultdict[tuple[tuple[int, ...], int], float] = defaultdict(float)
    successes: defaultdict[tuple[tuple[int, ...], int], float] = defaultdict(float)
    answered: defaultdict[tuple[int, ...], float] = defaultdict(float)
    for outcome in outcomes:
        pair = (outcome.history, outcome.candidate)
        trials[pair] += outcome.weight
        successes[pair] += outcome.weight * outcome.success
        answered[outcome.history] += outcome.weight
    seen = set(out_of) | set(answered)
    kept = sorted(h for h in seen if out_of[h] + answered.get(h, 0.0) >= min_count)
    if not kept:
        raise ValueError(f"no history with at least {min_count} novel moves")
    histories: list[list[int]] = []
    candidates: list[int] = []
    labels: list[float] = []
    support: list[int] = []
    observed: list[bool] = []
    pair_rows: list[tuple[int, int]] = []
    rng = np.random.default_rng(seed)
    for history in kept:
        first = len(labels)
        for cluster in range(n_clusters):
            if cluster in history:
                continue
            pair = (history, cluster)
            denominator = out_of[history] + trials.get(pair, 0.0)
            if denominator <= 0:
                continue  # no move out of h and no plan of c for h: nothing is known
            evidence = positive[pair] + successes.get(pair, 0.0)
            histories.append(pad_history(history, k))
            candidates.append(cluster)
            labels.append(
                (evidence + prior_strength * prior[cluster]) / (denominator + prior_strength)
            )
            support.append(round(denominator))
            observed.append(evidence > 0)
        block = np.arange(first, len(labels))
        block_labels = np.array(labels[first:])
        # Preferences start at candidates users engaged with (the prior alone proves nothing).
        for row in block[np.array(observed[first:], dtype=bool)]:
            lower = block[block_labels < labels[row]]
            # A handful of sampled lower-label partners per positive keeps pairs O(M).
            for other in rng.choice(lower, size=min(8, len(lower)), replace=False):
                pair_rows.append((int(row), int(other)))
    return FeedbackLabels(
        histories=np.array(histories, dtype=np.int64),
        candidates=np.array(candidates, dtype=np.int64),
        labels=np.array(labels, dtype=np.float32),
        support=np.array(support, dtype=np.int64),
        pairs=np.array(pair_rows, dtype=np.int64).reshape(-1, 2),
        min_count=min_count,
    )


def moves_fingerprint(moves: Iterable[NovelMove]) -> str:
    digest = hashlib.sha256()
    for move in moves:
        digest.update(f"{move.user_id}|{move.history}|{move.target}|{move.positive}\n".encode())
    return digest.hexdigest()[:16]
