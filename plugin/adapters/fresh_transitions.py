"""The worker's fresh-transition table in Redis (the arithmetic is :mod:`plugin.core.fresh`'s).

Keys: ``<feedback.fresh_key_prefix>:<bucket>:<c1>,<c2>``, a hash from the next cluster to its
count of novel moves in that event-time bucket, for each history and its shorter suffix.
A batch is one pipelined round trip of ``HINCRBY`` + ``EXPIRE`` (the key lives for the
window, in wall-clock seconds, after its last write); a lookup for a batch of plan requests is
one pipelined round trip of ``HGETALL``. Redis errors are the caller's to handle: the worker
treats the table as best effort, and pauses it for ``pause_s`` after a failure so a Redis that
is down does not cost every batch a connection timeout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from plugin.core.fresh import FreshWindow, back_off, combine, suffixes
from plugin.core.moves import NovelMove
from plugin.settings import FeedbackSettings

log = logging.getLogger(__name__)


def window_of(settings: FeedbackSettings) -> FreshWindow:
    return FreshWindow(
        bucket_s=settings.fresh_bucket_s,
        buckets=settings.fresh_buckets,
        half_life_buckets=settings.fresh_half_life_buckets,
    )


class RedisFreshTransitions:
    """Recency-windowed novel-move counts per history, shared by every worker."""

    def __init__(
        self,
        client: Any,
        window: FreshWindow,
        k: int,
        prefix: str = "explore:fresh",
        positive_only: bool = True,
        pause_s: float = 30.0,
    ) -> None:
        self.client = client
        self.window = window
        self.k = k
        self.prefix = prefix
        self.positive_only = positive_only
        self.pause_s = pause_s
        self.ttl_s = window.bucket_s * (window.buckets + 1)
        self._paused_until = 0.0

    def key(self, bucket: int, history: Sequence[int]) -> str:
        return f"{self.prefix}:{bucket}:{','.join(str(c) for c in history)}"

    def record(self, moves: Sequence[NovelMove]) -> int:
        """Count the batch's novel moves in one round trip; the number counted (0: paused)."""
        if time.monotonic() < self._paused_until:
            return 0
        pipe = self.client.pipeline(transaction=False)
        counted = 0
        for move in moves:
            if move.at is None or (self.positive_only and not move.positive):
                continue
            bucket = self.window.bucket(move.at)
            for suffix in suffixes(move.history[: self.k]):
                key = self.key(bucket, suffix)
                pipe.hincrby(key, str(move.target), 1)
                pipe.expire(key, self.ttl_s)
            counted += 1
        if counted:
            try:
                pipe.execute()
            except Exception:
                self._paused_until = time.monotonic() + self.pause_s
                raise
        return counted

    def lookup_many(
        self, queries: Sequence[tuple[tuple[int, ...], datetime]]
    ) -> list[dict[int, float]]:
        """Decayed counts for each (history, time), in one round trip."""
        plan: list[tuple[int, tuple[int, ...]]] = []
        index: dict[tuple[int, tuple[int, ...]], int] = {}
        for history, at in queries:
            for bucket, _ in self.window.weights(at):
                for suffix in suffixes(history[: self.k]):
                    if (bucket, suffix) not in index:
                        index[(bucket, suffix)] = len(plan)
                        plan.append((bucket, suffix))
        pipe = self.client.pipeline(transaction=False)
        for bucket, suffix in plan:
            pipe.hgetall(self.key(bucket, suffix))
        replies = cast(list[dict[bytes, bytes]], pipe.execute() if plan else [])
        results = []
        for history, at in queries:
            weights = self.window.weights(at)
            by_suffix = []
            for suffix in suffixes(history[: self.k]):
                per_bucket = {
                    bucket: {int(c): float(n) for c, n in replies[index[(bucket, suffix)]].items()}
                    for bucket, _ in weights
                }
                by_suffix.append(combine(per_bucket, weights))
            results.append(back_off(by_suffix, self.window.min_support))
        return results
