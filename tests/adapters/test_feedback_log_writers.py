"""The feedback log with several writers at once: worker processes on one folder, each
appending and merging small parts, leave every record in exactly one file."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from plugin.adapters.feedback_log import FeedbackLog
from plugin.core.feedback import FeedbackRecord

T0 = datetime(1998, 1, 1, tzinfo=UTC)
WRITERS = 4
BATCHES = 96
PER_BATCH = 5


def make_record(writer: int, n: int) -> FeedbackRecord:
    """Record ``n`` of ``writer``; keys never collide across writers."""
    return FeedbackRecord(
        user_id=f"w{writer}-u{n % 7}",
        event_id=f"w{writer}-e{n:05d}",
        item_id=f"i{n % 11}",
        event_time=T0 + timedelta(minutes=n),
        history=[n % 5, (n + 1) % 5],
        planned_cluster=n % 3,
        engaged_cluster=n % 4,
        accepted=n % 3 == n % 4,
        positive=n % 2 == 0,
        novel=True,
        planned_novel=True,
        rating=4.0,
        model_version="m",
        catalog_version="c",
        planned_at=T0 + timedelta(minutes=n - 1),
        source="stream",
    )


def write(root: str, writer: int, start: object) -> None:
    """One worker: ``BATCHES`` appends of ``PER_BATCH`` records, merging every few parts
    (half the writers inline, half in the background, as the worker does)."""
    log = FeedbackLog(Path(root), compact_parts=16, merge_in_background=writer % 2 == 1)
    start.wait()  # type: ignore[attr-defined]  # a multiprocessing Event: all start together
    for batch in range(BATCHES):
        first = batch * PER_BATCH
        log.append([make_record(writer, n) for n in range(first, first + PER_BATCH)])
    log.wait_for_merge(30)


def test_concurrent_writers_leave_each_record_in_exactly_one_file(tmp_path: Path) -> None:
    root = tmp_path / "feedback"
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    workers = [
        context.Process(target=write, args=(str(root), writer, start)) for writer in range(WRITERS)
    ]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0] * WRITERS

    expected = {
        (f"w{w}-u{n % 7}", f"w{w}-e{n:05d}")
        for w in range(WRITERS)
        for n in range(BATCHES * PER_BATCH)
    }
    frame = pd.read_parquet(root)  # what docs/FEEDBACK.md suggests: no dedupe of its own
    keys = list(zip(frame["user_id"], frame["event_id"], strict=True))
    assert len(keys) == len(expected) == WRITERS * BATCHES * PER_BATCH
    assert set(keys) == expected
    # The writers did merge (so the test raced merges, not just appends).
    assert len(FeedbackLog(root).parts()) < WRITERS * BATCHES / 2
    assert {r.key for r in FeedbackLog(root).read()} == {(u, e) for u, e in expected}
