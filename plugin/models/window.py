"""The window term's model: a bag-of-window softmax over the novel clusters.

The plan table is keyed by the K=2 history, so the user's novelty window is the only per-user
context selection has (:class:`~plugin.core.planning.WindowTransitions`). This model learns how
the whole window bears on the next novel cluster, from the training part's novel moves:

* **Model**: ``logits = mean over the window's clusters w of M[w] + b`` (a weighted mean: the
  cluster of age a, 0 the most recent, weighs ``decay ** a``; decay 1 is the plain mean), a
  ``C x C`` matrix M and a bias b, softmax over the clusters *outside* the window (the
  restriction every plan obeys), cross-entropy against the move's target, L2 on M,
  full-batch Adam from zeros (no seed: the fit is deterministic).
* **Served**: M alone, as the same ``[from][to]`` gather the counted term used. The bias
  carries each cluster's popularity, which the novelty model's log-probability already does,
  so it is left out (as the counted term's PMI left out ``log p(c)``).
* **No hand-set constant** (docs/MODELS.md, "The window term"): the step count is chosen by
  early stopping on the validation split's window-restricted log-loss (fit on the fitting part,
  stop where validation stops improving), one model per L2 of a small grid
  (``selection.window_l2s``), and the selection search chooses the L2 with the window weight,
  by best-of-n's positive hit@1 on the validation split (the log-loss prefers the weakest L2,
  whose larger scores did worse at selection). Where the search chooses the grid's weakest
  or strongest L2, it adds the next decade that way and chooses again
  (:func:`next_window_l2`), so the grid's extent is a rule, not a hand list. At the chosen
  L2 it then tries each decay of ``selection.window_decays``. The refit on the whole
  training period runs the chosen L2 and decay for the chosen step count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from plugin.core.moves import NovelMove
from plugin.core.planning import WindowTransitions, recency_weights
from plugin.models.threads import single_threaded

# Adam's step size. Early stopping picks the step count for it, so what this changes is how
# many steps the fit takes, not where validation stops it.
LEARNING_RATE = 0.05
# Stop once this many steps pass without a lower validation log-loss: a convergence check
# (the loss is smooth, full-batch), not a setting of the model.
PATIENCE = 50
_MASKED = -1e9  # a logit no softmax gives mass to (finite: no NaN in the gradient)

# What tells the search's window models apart: (L2, recency decay).
WindowKey = tuple[float, float]


def window_bags(
    windows: Sequence[Sequence[int]], n_clusters: int, decay: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Each window (most recent first) as a ``[windows, C]`` bag, the weights the window term
    serves with (:func:`~plugin.core.planning.recency_weights` over its known clusters: the
    mean at decay 1), and the ``[windows, C]`` mask of the clusters outside it."""
    bag = np.zeros((len(windows), n_clusters))
    allowed = np.ones((len(windows), n_clusters), dtype=bool)
    for i, window in enumerate(windows):
        known = list(dict.fromkeys(c for c in window if 0 <= c < n_clusters))
        if known:
            bag[i, known] = recency_weights(len(known), decay)
            allowed[i, known] = False
    return bag, allowed


@dataclass(frozen=True)
class WindowMoves:
    """Novel moves as tensors: each move's window as a bag (its clusters' recency weights),
    the clusters outside it, and its target."""

    bag: torch.Tensor  # [moves, C]
    allowed: torch.Tensor  # [moves, C] bool: False inside the window
    targets: torch.Tensor  # [moves]

    @classmethod
    def of(cls, moves: Sequence[NovelMove], n_clusters: int, decay: float = 1.0) -> WindowMoves:
        """Moves whose target is a known cluster outside their window (a novel move always
        is; anything else is skipped), their windows weighed by recency at ``decay``."""
        kept = [m for m in moves if 0 <= m.target < n_clusters and m.target not in set(m.recent)]
        bag, allowed = window_bags([m.recent for m in kept], n_clusters, decay)
        targets = torch.tensor([m.target for m in kept], dtype=torch.long)
        return cls(torch.from_numpy(bag).float(), torch.from_numpy(allowed), targets)

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def log_loss(self, matrix: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the targets over the clusters outside each window."""
        logits = (self.bag @ matrix + bias).masked_fill(~self.allowed, _MASKED)
        return torch.nn.functional.cross_entropy(logits, self.targets)


@dataclass(frozen=True)
class WindowFit:
    """A fitted window model: its matrix and how it was chosen."""

    transitions: WindowTransitions
    l2: float
    steps: int
    # The chosen step's window-restricted log-loss on the validation split (None: a refit).
    validation_log_loss: float | None = None

    @property
    def key(self) -> WindowKey:
        """What tells the search's window models apart: (L2, recency decay)."""
        return (self.l2, self.transitions.decay)

    def as_dict(self) -> dict[str, Any]:
        return {
            "l2": self.l2,
            "decay": self.transitions.decay,
            "steps": self.steps,
            "validation_log_loss": (
                None if self.validation_log_loss is None else round(self.validation_log_loss, 5)
            ),
        }


def _train(
    moves: WindowMoves,
    n_clusters: int,
    l2: float,
    max_steps: int,
    validation: WindowMoves | None = None,
) -> tuple[torch.Tensor, int, float | None]:
    """(matrix, steps, validation log-loss): ``max_steps`` steps, or, with ``validation``, the
    matrix after the step with the lowest validation log-loss (stopping ``PATIENCE`` steps
    after it)."""
    matrix = torch.zeros(n_clusters, n_clusters, requires_grad=True)
    bias = torch.zeros(n_clusters, requires_grad=True)
    optimiser = torch.optim.Adam([matrix, bias], lr=LEARNING_RATE)
    best_loss: float | None = None
    best_step = 0
    best = matrix.detach().clone()
    for step in range(1, max_steps + 1):
        loss = moves.log_loss(matrix, bias) + l2 * matrix.pow(2).sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if validation is None:
            continue
        with torch.no_grad():
            held = float(validation.log_loss(matrix, bias))
        if best_loss is None or held < best_loss:
            best_loss, best_step, best = held, step, matrix.detach().clone()
        elif step - best_step >= PATIENCE:
            break
    if validation is None:
        return matrix.detach(), max_steps, None
    return best, best_step, best_loss


def early_stopped_window_models(
    fit: Sequence[NovelMove],
    validation: Sequence[NovelMove],
    n_clusters: int,
    l2s: Sequence[float],
    max_steps: int,
    decay: float = 1.0,
) -> list[WindowFit]:
    """One window model per L2 (windows weighed by recency at ``decay``), fit on ``fit`` and
    stopped at the step with the lowest window-restricted log-loss on ``validation`` (the
    selection search chooses the L2 and the decay)."""
    train_moves = WindowMoves.of(fit, n_clusters, decay)
    held_moves = WindowMoves.of(validation, n_clusters, decay)
    if not len(train_moves) or not len(held_moves):
        raise ValueError(
            "the window model needs novel moves in both the fitting part and validation"
        )
    fits = []
    with single_threaded():
        for l2 in sorted(set(l2s)):
            matrix, steps, loss = _train(train_moves, n_clusters, l2, max_steps, held_moves)
            fits.append(
                WindowFit(WindowTransitions.from_matrix(matrix.tolist(), decay), l2, steps, loss)
            )
    return fits


def next_window_l2(
    chosen: float | None, tried: Sequence[float], floor: float, ceiling: float
) -> float | None:
    """The grid's edge rule: the L2 one decade past the grid's edge when the search chose
    that edge (weaker below the weakest, stronger above the strongest), None once the chosen
    L2 has a tried neighbour on both sides, the next decade would pass ``[floor, ceiling]``,
    or no window term was chosen. A chosen 0 has no weaker decade."""
    if chosen is None or not tried:
        return None
    # Decades of a float drift (1e-5 / 10 is 1.0000000000000002e-06): keep 3 digits.
    if chosen == min(tried) and chosen > 0:
        weaker = float(f"{chosen / 10:.3g}")
        if weaker >= floor * (1 - 1e-9):
            return weaker
    if chosen == max(tried):
        stronger = float(f"{chosen * 10:.3g}")
        if 0 < stronger <= ceiling * (1 + 1e-9):
            return stronger
    return None


def fit_window_model(
    moves: Sequence[NovelMove], n_clusters: int, l2: float, steps: int, decay: float = 1.0
) -> WindowFit:
    """The window model refit on ``moves`` with a chosen L2, step count and decay."""
    train_moves = WindowMoves.of(moves, n_clusters, decay)
    if not len(train_moves):
        raise ValueError("the window model needs novel moves to fit")
    with single_threaded():
        matrix, _, _ = _train(train_moves, n_clusters, l2, max(steps, 0))
    return WindowFit(WindowTransitions.from_matrix(matrix.tolist(), decay), l2, steps)
