"""Synthetic watch data whose ground truth is known, for the robustness study
(``explore evaluate --robustness``, docs/EVALUATION.md).

Items belong to ``topics`` topics (one genre each, so the catalog can recover them). Each user
walks from topic to topic: the next topic depends on the last one through a fixed sparse
transition matrix (what the novelty model can learn), and the user watches a few items of each
topic. Whether the user *liked* the move (rating 5, else 2) is drawn with a probability that
depends on the (previous topic, next topic) pair:

* ``aligned=True``: each pair has a satisfaction of 0.85 or 0.15, drawn independently of how
  likely the move is. Which transitions users like is then information the novelty model's
  next-topic distribution does not carry, and an alignment model trained on collective
  feedback can learn it: best-of-n should beat the novelty model alone.
* ``aligned=False``: every pair has the same satisfaction (0.5). The feedback carries nothing
  beyond the transition probabilities; best-of-n should at least not lose.

Everything is seeded. The two files are written in the documented two-file format, so the
evaluation reads them exactly like a user's dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

START = datetime(2020, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class SyntheticSpec:
    """The size and shape of a synthetic dataset."""

    aligned: bool
    users: int = 500
    topics: int = 48
    items_per_topic: int = 12
    moves_per_user: int = 40
    watches_per_topic: int = 2
    successors: int = 6  # topics a topic leads to with most of the probability
    days: int = 365
    seed: int = 11

    @property
    def name(self) -> str:
        return "synthetic-aligned" if self.aligned else "synthetic-null"


def _transitions(rng: np.random.Generator, topics: int, successors: int) -> np.ndarray:
    """Row-stochastic [T, T]: most mass on a few successors, a little on every other topic."""
    matrix = np.full((topics, topics), 0.1 / topics)
    for topic in range(topics):
        others = [t for t in range(topics) if t != topic]
        chosen = rng.choice(others, size=successors, replace=False)
        matrix[topic, chosen] += rng.dirichlet(np.ones(successors)) * 0.9
        matrix[topic, topic] = 0.0
    return matrix / matrix.sum(axis=1, keepdims=True)


def generate(spec: SyntheticSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The (interactions, items) frames of the two-file format."""
    rng = np.random.default_rng(spec.seed)
    transitions = _transitions(rng, spec.topics, spec.successors)
    if spec.aligned:
        satisfaction = np.where(rng.random((spec.topics, spec.topics)) < 0.5, 0.85, 0.15)
    else:
        satisfaction = np.full((spec.topics, spec.topics), 0.5)
    items = pd.DataFrame(
        {
            "item_id": [
                f"t{t}i{i}" for t in range(spec.topics) for i in range(spec.items_per_topic)
            ],
            "title": [
                f"Topic {t} item {i}"
                for t in range(spec.topics)
                for i in range(spec.items_per_topic)
            ],
            "genres": [
                f"Genre{t}" for t in range(spec.topics) for _ in range(spec.items_per_topic)
            ],
        }
    )
    rows: list[tuple[str, str, int, float]] = []
    period = spec.days * 86_400
    for user in range(spec.users):
        # Users start at different times, so the time split cuts through their walks.
        at = int(START.timestamp()) + int(rng.integers(0, period // 2))
        step = period // (2 * spec.moves_per_user * spec.watches_per_topic)
        topic, previous = int(rng.integers(spec.topics)), -1
        for _ in range(spec.moves_per_user):
            liked = previous < 0 or rng.random() < satisfaction[previous, topic]
            for item in rng.choice(spec.items_per_topic, spec.watches_per_topic, replace=False):
                rows.append((f"u{user}", f"t{topic}i{item}", at, 5.0 if liked else 2.0))
                at += int(rng.integers(step // 2, step * 3 // 2))
            previous, topic = topic, int(rng.choice(spec.topics, p=transitions[topic]))
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating"])
    return interactions, items


def write_synthetic(spec: SyntheticSpec, folder: Path) -> tuple[Path, Path]:
    """Write the dataset as ``<name>.csv`` and ``<name>-items.csv``; returns both paths."""
    interactions, items = generate(spec)
    folder.mkdir(parents=True, exist_ok=True)
    inter_path = folder / f"{spec.name}.csv"
    items_path = folder / f"{spec.name}-items.csv"
    interactions.to_csv(inter_path, index=False)
    items.to_csv(items_path, index=False)
    return inter_path, items_path
