"""The Parquet feedback log: layout, durability rules, dedupe, rolling."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from plugin.adapters import feedback_log as module
from plugin.adapters.feedback_log import FeedbackLog


def test_records_round_trip_partitioned_by_engagement_date(kit: Any, tmp_path: Path) -> None:
    r = kit.record
    log = FeedbackLog(tmp_path / "feedback")
    day_one = [r("u1", 10, (2, 1), 7, 7, True), r("u2", 11, (3,), 4, 5, False, novel=False)]
    day_two = [r("u3", 60 * 24 + 5, (2, 1), 7, 7, False)]
    written = log.append(day_one + day_two)
    assert [p.relative_to(tmp_path / "feedback").as_posix() for p in written] == [
        "date=1998-01-01/part-0.parquet",
        "date=1998-01-02/part-0.parquet",
    ]
    assert log.read() == day_one + day_two  # ordered by event time, every field intact
    assert log.read(since=date(1998, 1, 2)) == day_two
    assert log.read(until=date(1998, 1, 1)) == day_one
    # The documented layout is what pandas reads, with the date from the folder names.
    frame = pd.read_parquet(tmp_path / "feedback")
    assert len(frame) == 3 and set(frame["date"].astype(str)) == {"1998-01-01", "1998-01-02"}
    assert frame["history"].map(list).tolist()[0] == [2, 1]
    assert log.stats().as_dict()["rows"] == 3


def test_appends_never_overwrite_and_reads_dedupe(kit: Any, tmp_path: Path) -> None:
    r = kit.record
    log = FeedbackLog(tmp_path)
    batch = [r("u1", 10, (2, 1), 7, 7, True), r("u2", 12, (2, 1), 7, 3, True)]
    log.append(batch)
    log.append(batch)  # a retried batch: at-least-once
    log.append([r("u4", 14, (5,), 6, 6, True)])
    names = sorted(p.name for p in log.parts())
    assert names == ["part-0.parquet", "part-1.parquet", "part-2.parquet"]
    assert [x.key for x in log.read()] == [("u1", "e0010"), ("u2", "e0012"), ("u4", "e0014")]
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_taken_part_number_moves_the_writer_on(
    kit: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two writers racing for one number: the second link fails and takes the next one."""
    log = FeedbackLog(tmp_path)
    log.append([kit.record("u1", 10, (2, 1), 7, 7, True)])
    monkeypatch.setattr(module, "_next_number", lambda directory: 0)  # a stale listing
    (second,) = log.append([kit.record("u2", 11, (2, 1), 7, 7, True)])
    assert second.name == "part-1.parquet"
    assert len(log.read()) == 2


def test_small_parts_roll_into_one_without_loss(kit: Any, tmp_path: Path) -> None:
    log = FeedbackLog(tmp_path, compact_parts=4, part_rows=1000)
    records = [kit.record(f"u{i}", 10 + i, (2, 1), 7, 7, i % 2 == 0) for i in range(5)]
    for one in records[:3]:
        log.append([one])
    log.append(records[:1])  # a duplicate in the fourth part
    # The fourth part triggered the merge: one part with the three unique records.
    (part,) = log.parts()
    assert part.name == "part-4.parquet"
    assert log.read() == records[:3]
    log.append(records[3:])
    assert log.read() == records
    assert log.compact() == [tmp_path / "date=1998-01-01" / "part-6.parquet"]
    assert log.read() == records


def test_a_part_merged_away_while_reading_is_found_in_its_successor(
    kit: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = FeedbackLog(tmp_path, compact_parts=100)
    for i in range(3):
        log.append([kit.record(f"u{i}", 10 + i, (2, 1), 7, 7, True)])
    original = module.pq.read_table
    calls = {"n": 0}

    def compacting_reader(path: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:  # another writer merges while we read the second part
            monkeypatch.setattr(module.pq, "read_table", original)
            log.compact_folder(Path(path).parent)
        return original(path, **kwargs)

    monkeypatch.setattr(module.pq, "read_table", compacting_reader)
    assert [r.user_id for r in log.read()] == ["u0", "u1", "u2"]
