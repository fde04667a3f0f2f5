"""The models' small torch work runs on one thread, whatever the process was set to."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from plugin.models import training
from plugin.models.data import FeedbackLabels
from plugin.models.training import alignment_config, train_alignment
from plugin.settings import load_settings


def test_training_runs_on_one_torch_thread_and_restores_the_callers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[int] = []
    schedule = training.lr_schedule

    def spying_schedule(*args: Any, **kwargs: Any) -> Any:
        seen.append(torch.get_num_threads())  # called inside the training function
        return schedule(*args, **kwargs)

    monkeypatch.setattr(training, "lr_schedule", spying_schedule)
    labels = FeedbackLabels(
        histories=np.array([[c, (c + 3) % 6] for c in range(6)], dtype=np.int64),
        candidates=np.array([(c + 1) % 6 for c in range(6)], dtype=np.int64),
        labels=np.array([1.0, 0.0] * 3, dtype=np.float32),
        support=np.full(6, 5),
        pairs=np.zeros((0, 2), dtype=np.int64),
        min_count=5,
    )
    models = load_settings(models={"alignment_steps": 2, "batch_size": 4}).models
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        train_alignment(labels, alignment_config(6, 2, "pointwise"), models)
        assert seen == [1]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
