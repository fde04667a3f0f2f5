"""How many torch threads the models' small work runs on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run small torch work (inference batches, the id and window models' training) on one
    thread; ``with single_threaded():`` or, for a whole function, ``@single_threaded()``.

    Measured on two shared cores: the novelty pass over 64 histories took about 20 ms on one
    thread and up to 490 ms on two whenever the other core was busy (thread contention); the
    train test of tests/models/test_fit_and_evaluate.py took 189 s on two and 13 s on one.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
