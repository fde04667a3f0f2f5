"""Narration of a long job, beside its progress bars."""

from __future__ import annotations

import sys


def say(message: str, progress: bool) -> None:
    """One line on stderr (where the bars go, so stdout stays the report), when ``progress``."""
    if progress:
        print(message, file=sys.stderr, flush=True)
