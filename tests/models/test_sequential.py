"""The SASRec-style baseline: shapes, the novelty restriction, determinism, and that it learns."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import torch

from plugin.core.moves import SequenceStep
from plugin.core.sequence import push_cluster
from plugin.models.sequential import (
    IGNORE,
    SasRecModel,
    SequentialSettings,
    fit_sasrec,
    training_windows,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)
SMALL = SequentialSettings(max_length=8, d_model=32, heads=2, epochs=2, batch_size=16)


def steps_of(clusters: list[int], window: int) -> list[SequenceStep]:
    """A user's sequence as the core's walk would record it (no consecutive duplicates)."""
    steps: list[SequenceStep] = []
    recent: tuple[int, ...] = ()
    for i, cluster in enumerate(clusters):
        steps.append(SequenceStep(cluster, recent, T0 + timedelta(minutes=i)))
        recent = push_cluster(recent, cluster, window)
    return steps


def random_sequences(users: int, length: int, n_clusters: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    sequences = []
    for _ in range(users):
        sequence = [int(rng.integers(n_clusters))]
        while len(sequence) < length:
            c = int(rng.integers(n_clusters))
            if c != sequence[-1]:
                sequence.append(c)
        sequences.append(sequence)
    return sequences


def test_shapes_and_left_padding_keep_the_most_recent_cluster_last() -> None:
    model = SasRecModel(10, SMALL)
    tokens = model.encode([(3, 2, 1), tuple(range(9, -1, -1))])  # most recent first
    assert tokens.shape == (2, 8)
    assert tokens[0].tolist() == [10] * 5 + [1, 2, 3]  # oldest first, padded on the left
    assert tokens[1].tolist() == [2, 3, 4, 5, 6, 7, 8, 9]  # only the 8 most recent
    model.eval()
    logits = model(tokens)
    assert logits.shape == (2, 8, 10)
    assert torch.isfinite(logits).all()  # pad rows are never all masked


def test_padding_is_masked_and_the_sequence_is_read() -> None:
    model = SasRecModel(10, SMALL).eval()
    before = model.novel_scores([(4, 2)], [()])
    with torch.no_grad():  # whatever the pad embedding holds, real positions never see it
        model.clusters.weight[model.pad] = torch.randn(SMALL.d_model) * 10
    torch.testing.assert_close(model.novel_scores([(4, 2)], [()]), before)
    # An older cluster changes the answer: it reads more than the most recent one.
    assert not torch.allclose(before, model.novel_scores([(4, 7)], [()]))


def test_it_never_proposes_an_excluded_cluster() -> None:
    n_clusters = 12
    model = SasRecModel(n_clusters, SMALL).eval()
    rng = np.random.default_rng(1)
    sequences = [tuple(s[::-1]) for s in random_sequences(64, 10, n_clusters, seed=2)]
    excluded = [
        tuple(int(c) for c in rng.choice(n_clusters, size=rng.integers(1, 11), replace=False))
        for _ in sequences
    ]
    rows = model.top_novel(sequences, excluded, n=16)
    for row, avoid in zip(rows, excluded, strict=True):
        assert row and not set(row) & set(avoid)
        assert len(row) == n_clusters - len(avoid)  # n above what is allowed: all that is
        assert len(set(row)) == len(row)
    scores = model.novel_scores(sequences, excluded)
    for row, avoid in zip(scores, excluded, strict=True):
        assert torch.isneginf(row[list(avoid)]).all()


def test_each_novel_move_is_the_target_of_exactly_one_window() -> None:
    n_clusters, window = 9, 3
    users = [steps_of(s, window) for s in random_sequences(5, 23, n_clusters, seed=3)]
    data = training_windows(users, n_clusters, length=6)
    novel = sum(step.novel for steps in users for step in steps)
    assert novel > 0 and data.targets_count == novel
    for row in range(len(data)):
        for position in np.flatnonzero(data.targets[row] != IGNORE):
            target = int(data.targets[row, position])
            # the target is novel: outside that position's window, which is masked
            assert not data.windows[row, position, target]
            assert data.windows[row, position].sum() >= 1
            # the input at that position is real and differs from the target
            assert int(data.tokens[row, position]) not in (target, n_clusters)
        # no target at padded positions
        padded = data.tokens[row] == n_clusters
        assert (data.targets[row][padded] == IGNORE).all()


def test_a_seed_makes_training_reproducible() -> None:
    users = [steps_of(s, 2) for s in random_sequences(20, 12, 8, seed=4)]
    first, run = fit_sasrec(users, 8, SMALL)
    second, _ = fit_sasrec(users, 8, SMALL)
    other, _ = fit_sasrec(users, 8, replace(SMALL, seed=8))
    assert run.steps == len(run.losses) and run.seconds > 0
    for name, tensor in first.state_dict().items():
        torch.testing.assert_close(tensor, second.state_dict()[name], rtol=0, atol=0)
    assert any(
        not torch.equal(tensor, other.state_dict()[name])
        for name, tensor in first.state_dict().items()
    )


def next_by_rule(previous: int, before: int, n_clusters: int) -> int:
    """The next cluster is a function of the last two (not of the last one alone), and always
    outside a window of two."""
    c = (previous + 3 * before + 1) % n_clusters
    while c in (previous, before):
        c = (c + 1) % n_clusters
    return c


def rule_sequence(start: tuple[int, int], length: int, n_clusters: int) -> list[int]:
    sequence = list(start)
    while len(sequence) < length:
        sequence.append(next_by_rule(sequence[-1], sequence[-2], n_clusters))
    return sequence


def test_it_learns_a_next_cluster_the_sequence_determines() -> None:
    n_clusters, window = 12, 2
    rng = np.random.default_rng(5)
    starts = [(int(a), int(b)) for a, b in rng.integers(n_clusters, size=(300, 2)) if a != b]
    users = [steps_of(rule_sequence(s, 14, n_clusters), window) for s in starts[:200]]
    settings = SequentialSettings(max_length=8, d_model=32, heads=2, epochs=15, batch_size=32)
    model, run = fit_sasrec(users, n_clusters, settings)
    assert run.final_loss < run.losses[0]
    # Held-out users with fresh starts: predict a step from the ones before it.
    sequences, excluded, targets = [], [], []
    for start in starts[200:]:
        clusters = rule_sequence(start, 10, n_clusters)
        sequences.append(tuple(clusters[:-1][::-1]))
        excluded.append(tuple(clusters[-2:-4:-1]))
        targets.append(clusters[-1])
    planned = [row[0] for row in model.top_novel(sequences, excluded, n=1)]
    accuracy = np.mean([p == t for p, t in zip(planned, targets, strict=True)])
    chance = 1 / (n_clusters - window)
    assert accuracy > 0.5 > 4 * chance


def test_training_needs_a_novel_move() -> None:
    with pytest.raises(ValueError, match="no novel moves"):
        fit_sasrec([steps_of([3], 5), []], 4, SMALL)
