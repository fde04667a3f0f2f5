"""The Parquet feedback log: layout, durability rules, dedupe, rolling, the old layout."""

from __future__ import annotations

import os
import stat
import threading
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from plugin.adapters import feedback_log as module
from plugin.adapters.feedback_log import SCHEMA, FeedbackLog, to_table
from tests.support.feedback import record as feedback_record

DAY = 60 * 24  # minutes


def spread(days: int, per_day: int = 2, start: int = 0) -> list[Any]:
    """Records over ``days`` engagement dates, as one interleaved MovieLens batch spans them."""
    return [
        feedback_record(f"u{start + d * per_day + i}", d * DAY + 10 + i, (2, 1), 7, 7, i % 2 == 0)
        for i in range(per_day)
        for d in range(days)
    ]


def names(log: FeedbackLog) -> list[str]:
    return [p.relative_to(log.root).as_posix() for p in log.parts()]


def test_a_batch_over_many_dates_is_one_part_with_its_dates_inside(tmp_path: Path) -> None:
    log = FeedbackLog(tmp_path / "feedback")
    batch = spread(days=90)
    (part,) = log.append(batch)
    assert names(log) == ["part-0.parquet"] and part == log.root / "part-0.parquet"
    assert pq.read_schema(part).equals(SCHEMA, check_metadata=False)
    everything = log.read()
    assert len(everything) == len(batch) == len({r.key for r in everything})
    assert everything == sorted(batch, key=lambda r: (r.event_time, r.user_id, r.event_id))
    # Readers bound by engagement date, both ends inclusive, from the date column.
    first, tenth = date(1998, 1, 1), date(1998, 1, 10)
    window = log.read(since=first + timedelta(days=3), until=tenth)
    assert {r.event_time.date() for r in window} == {
        first + timedelta(days=d) for d in range(3, 10)
    }
    assert len(window) == 7 * 2
    assert log.read(since=date(1998, 6, 1)) == []
    assert log.stats().as_dict() == {
        "dates": 90,
        "parts": 1,
        "rows": 180,
        "bytes": part.stat().st_size,
    }


def test_records_round_trip_and_pandas_reads_the_documented_layout(tmp_path: Path) -> None:
    r = feedback_record
    log = FeedbackLog(tmp_path / "feedback")
    day_one = [r("u1", 10, (2, 1), 7, 7, True), r("u2", 11, (3,), 4, 5, False, novel=False)]
    day_two = [r("u3", DAY + 5, (2, 1), 7, 7, False)]
    log.append(day_two + day_one)
    assert log.read() == day_one + day_two  # ordered by event time, every field intact
    assert log.read(since=date(1998, 1, 2)) == day_two
    assert log.read(until=date(1998, 1, 1)) == day_one
    frame = pd.read_parquet(tmp_path / "feedback")
    assert len(frame) == 3 and set(frame["date"].astype(str)) == {"1998-01-01", "1998-01-02"}
    assert frame.set_index("user_id")["history"].map(list)["u1"] == [2, 1]


def test_the_date_is_the_utc_date_of_the_engagement(tmp_path: Path) -> None:
    """23:30 at UTC-5 is 04:30 the next day in UTC: the date column and the filters say so."""
    evening = feedback_record("u1", 10, (2, 1), 7, 7, True).model_copy(
        update={"event_time": datetime(1998, 1, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5)))}
    )
    log = FeedbackLog(tmp_path)
    (part,) = log.append([evening])
    assert pq.read_table(part)["date"].to_pylist() == [date(1998, 1, 2)]
    assert log.read(since=date(1998, 1, 2)) == [evening]
    assert log.read(until=date(1998, 1, 1)) == []


def test_appends_never_overwrite_and_reads_dedupe(tmp_path: Path) -> None:
    r = feedback_record
    log = FeedbackLog(tmp_path)
    batch = [r("u1", 10, (2, 1), 7, 7, True), r("u2", 12, (2, 1), 7, 3, True)]
    log.append(batch)
    log.append(batch)  # a retried batch: at-least-once
    log.append([r("u4", 14, (5,), 6, 6, True)])
    assert log.append([]) == []  # nothing to write: no part
    assert names(log) == ["part-0.parquet", "part-1.parquet", "part-2.parquet"]
    assert [x.key for x in log.read()] == [("u1", "e0010"), ("u2", "e0012"), ("u4", "e0014")]
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_taken_part_number_moves_the_writer_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two writers racing for one number: the second link fails and takes the next one."""
    log = FeedbackLog(tmp_path)
    log.append([feedback_record("u1", 10, (2, 1), 7, 7, True)])
    monkeypatch.setattr(module, "_next_number", lambda directory: 0)  # a stale listing
    (second,) = log.append([feedback_record("u2", 11, (2, 1), 7, 7, True)])
    assert second.name == "part-1.parquet"
    assert len(log.read()) == 2


@pytest.mark.parametrize("each_append", [True, False])
def test_the_journal_is_synced_per_append_or_before_its_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, each_append: bool
) -> None:
    """``feedback.journal_sync``: "batch" fdatasyncs the journal in append; "interval" leaves
    it to the part writer, which syncs the journal before it writes the journal's part."""
    monkeypatch.setattr(module, "PART_INTERVAL_S", 60.0)
    events: list[str] = []
    real_fdatasync, write_part = os.fdatasync, FeedbackLog._write_part

    def recording_fdatasync(descriptor: int) -> None:
        events.append("journal synced")
        real_fdatasync(descriptor)

    def recording_write_part(self: FeedbackLog, *args: Any, **kwargs: Any) -> Path:
        events.append("part written")
        return write_part(self, *args, **kwargs)

    monkeypatch.setattr(module.os, "fdatasync", recording_fdatasync)
    monkeypatch.setattr(FeedbackLog, "_write_part", recording_write_part)
    log = FeedbackLog(tmp_path, journal=True, sync_each_append=each_append)
    log.append(spread(days=1))
    deadline = time.monotonic() + 10
    while not log.parts() and time.monotonic() < deadline:  # the first part goes at once
        time.sleep(0.01)
    events.append("first part seen")
    log.append(spread(days=1, start=10))
    appended = list(events)
    log.settle()
    if each_append:
        assert appended == [
            "journal synced", "journal synced", "part written", "first part seen", "journal synced",
        ]  # fmt: skip
    else:
        # Nothing synced in append: the part writer syncs before each part.
        assert appended == ["journal synced", "part written", "first part seen"]
        assert events[len(appended) :] == ["journal synced", "part written"]
    assert len(log.read()) == 4


def test_append_returns_only_once_the_bytes_and_the_name_are_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker acks a batch after append: the part's data, then the folder holding its
    name, must be on disk by then. One file and two fsyncs per batch, whatever its dates."""
    log = FeedbackLog(tmp_path)
    synced: list[tuple[str, list[str]]] = []
    real_fsync = os.fsync

    def recording_fsync(descriptor: int) -> None:
        kind = "folder" if stat.S_ISDIR(os.fstat(descriptor).st_mode) else "file"
        synced.append((kind, sorted(p.name for p in tmp_path.glob("part-*.parquet"))))
        real_fsync(descriptor)

    monkeypatch.setattr(module.os, "fsync", recording_fsync)
    log.append(spread(days=30))
    # The bytes before the name exists; the folder after the link made it.
    assert synced == [("file", []), ("folder", ["part-0.parquet"])]


def test_a_crash_while_writing_leaves_no_readable_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = FeedbackLog(tmp_path)
    kept = spread(days=3)
    log.append(kept)

    def dying_write(where: Path, data: Any) -> None:
        with open(where, "xb") as handle:  # half the file is on disk when the writer dies
            handle.write(bytes(data)[: data.size // 2])
        raise OSError("disk gone")

    monkeypatch.setattr(module, "_write_durably", dying_write)
    with pytest.raises(OSError, match="disk gone"):
        log.append(spread(days=3, start=100))
    monkeypatch.undo()
    assert names(log) == ["part-0.parquet"] and not list(tmp_path.glob(".part-*"))
    # A killed process cannot clean up: its hidden temporary file stays, and is ignored.
    (tmp_path / f".part-{'0' * 32}.tmp").write_bytes(b"PAR1 half a part")
    assert log.read() == sorted(kept, key=lambda r: (r.event_time, r.user_id, r.event_id))
    assert len(pd.read_parquet(tmp_path)) == len(kept)
    (later,) = log.append(spread(days=1, start=200))
    assert later.name == "part-1.parquet" and len(log.read()) == len(kept) + 2


def test_small_parts_roll_into_one_without_loss(tmp_path: Path) -> None:
    log = FeedbackLog(tmp_path, compact_parts=4, part_rows=1000)
    records = [feedback_record(f"u{i}", 10 + i * DAY, (2, 1), 7, 7, i % 2 == 0) for i in range(5)]
    for one in records[:3]:
        log.append([one])
    log.append(records[:1])  # a duplicate in the fourth part
    # The fourth part triggered the merge: one part with the three unique records.
    assert names(log) == ["part-4.parquet"]
    assert log.read() == records[:3]
    log.append(records[3:])
    assert log.read() == records
    assert log.compact() == [tmp_path / "part-6.parquet"]
    assert log.compact() == []  # one part: nothing to merge
    assert log.read() == records
    assert log.read(since=date(1998, 1, 2), until=date(1998, 1, 4)) == records[1:4]


def test_a_background_merge_rolls_parts_up_while_appends_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's mode: the append that reaches the threshold returns before the merge."""
    log = FeedbackLog(tmp_path, compact_parts=3, merge_in_background=True)
    release = threading.Event()
    merge = log._merge

    def slow_merge(parts: Any) -> Any:
        release.wait(10)
        return merge(parts)

    monkeypatch.setattr(log, "_merge", slow_merge)
    batches = [spread(days=2, per_day=1, start=10 * b) for b in range(4)]
    for batch in batches[:3]:
        log.append(batch)
    log.append(batches[3])  # while the merge of the first three waits
    assert len(log.parts()) == 4 and len(log.read()) == 8
    release.set()
    log.wait_for_merge(10)
    assert names(log) == ["part-3.parquet", "part-4.parquet"]
    assert len(log.read()) == 8


def test_merged_parts_keep_date_pruning_across_row_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(module, "MERGED_ROW_GROUP", 4)
    log = FeedbackLog(tmp_path, compact_parts=3)
    batches = [spread(days=10, per_day=1, start=100 * b) for b in range(3)]
    for batch in batches:
        log.append(batch)
    (merged,) = log.parts()
    metadata = pq.read_metadata(merged)
    assert metadata.num_row_groups == 8  # 30 rows sorted by time, groups of 4
    first, last = (metadata.row_group(i).column(SCHEMA.names.index("date")) for i in (0, 7))
    assert first.statistics.max <= last.statistics.min
    window = log.read(since=date(1998, 1, 4), until=date(1998, 1, 5))
    assert len(window) == 6 and {r.event_time.day for r in window} == {4, 5}
    assert len(log.read()) == 30


def test_writers_count_each_others_parts_towards_a_merge(tmp_path: Path) -> None:
    one, other = FeedbackLog(tmp_path, compact_parts=4), FeedbackLog(tmp_path, compact_parts=4)
    records = spread(days=4, per_day=1)
    one.append(records[:1])
    other.append(records[1:2])
    one.append(records[2:3])
    other.append(records[3:])
    assert names(one) == ["part-4.parquet"] and one.read() == other.read() == records


def test_a_failed_merge_does_not_fail_the_durable_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    log = FeedbackLog(tmp_path, compact_parts=2)
    log.append(spread(days=1))

    def broken(parts: Any) -> None:
        raise OSError("no space left")

    monkeypatch.setattr(log, "_merge", broken)
    (part,) = log.append(spread(days=1, start=10))
    assert part.name == "part-1.parquet" and len(log.read()) == 4
    assert "merging small parts failed" in caplog.text


def test_a_part_merged_away_while_reading_is_found_in_its_successor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = FeedbackLog(tmp_path, compact_parts=100)
    for i in range(3):
        log.append([feedback_record(f"u{i}", 10 + i, (2, 1), 7, 7, True)])
    original = module.pq.read_table
    calls = {"n": 0}

    def compacting_reader(path: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:  # another writer merges while we read the second part
            monkeypatch.setattr(module.pq, "read_table", original)
            assert FeedbackLog(tmp_path).compact() == [tmp_path / "part-3.parquet"]
        return original(path, **kwargs)

    monkeypatch.setattr(module.pq, "read_table", compacting_reader)
    assert [r.user_id for r in log.read()] == ["u0", "u1", "u2"]


def test_logs_in_the_old_per_date_layout_are_read_and_compacted_into_the_new(
    tmp_path: Path,
) -> None:
    """Before one part per batch, the log kept ``date=YYYY-MM-DD/part-<n>.parquet`` folders
    without a date column: readers still see those records, and ``compact`` moves them."""
    log = FeedbackLog(tmp_path)
    old = spread(days=3, per_day=1)
    for n, record in enumerate(old):
        folder = tmp_path / f"date={record.event_time.date().isoformat()}"
        folder.mkdir()
        pq.write_table(to_table([record]).drop_columns(["date"]), folder / f"part-{n}.parquet")
    new = spread(days=3, per_day=1, start=10)
    log.append(new + old[:1])  # a retried record, in both layouts
    assert names(log)[:3] == [
        "date=1998-01-01/part-0.parquet",
        "date=1998-01-02/part-1.parquet",
        "date=1998-01-03/part-2.parquet",
    ]
    expected = sorted(old + new, key=lambda r: (r.event_time, r.user_id, r.event_id))
    assert log.read() == expected
    assert log.read(since=date(1998, 1, 2), until=date(1998, 1, 2)) == [old[1], new[1]]
    assert log.stats().as_dict()["dates"] == 3 and log.stats().as_dict()["rows"] == 7
    assert log.compact() == [tmp_path / "part-1.parquet"]  # numbers count in the new layout
    assert names(log) == ["part-1.parquet"] and not list(tmp_path.glob("date=*"))
    assert log.read() == expected
    assert len(pd.read_parquet(tmp_path)) == 6


def test_a_second_writer_never_merges_the_parts_another_is_merging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers both reaching the threshold used to merge the same parts twice (4,479 rows
    for 2,350 records). The merge lock lets one merge; the other skips, and loses nothing."""
    one, other = FeedbackLog(tmp_path, compact_parts=3), FeedbackLog(tmp_path, compact_parts=3)
    records = spread(days=6, per_day=1)
    for record in records[:2]:
        one.append([record])
    reading, release = threading.Event(), threading.Event()
    write_part = one._write_part

    def slow_write(table: Any, *args: Any, **kwargs: Any) -> Path:
        if threading.current_thread().name == "merging" and "row_group_size" in kwargs:
            reading.set()  # the merge has read its inputs and is about to write them
            release.wait(10)
        return write_part(table, *args, **kwargs)

    monkeypatch.setattr(one, "_write_part", slow_write)
    merging = threading.Thread(target=one.append, args=([records[2]],), name="merging")
    merging.start()
    assert reading.wait(10)  # `one` holds the lock and has read the three parts
    other.append([records[3]])  # four small parts: `other` would merge them too
    release.set()
    merging.join(10)
    frame = pd.read_parquet(tmp_path)
    assert sorted(frame["user_id"]) == sorted(r.user_id for r in records[:4])  # each once
    other.append(records[4:])  # the next merge takes what the first one left
    frame = pd.read_parquet(tmp_path)
    assert len(frame) == len(records)
    assert sorted(frame["user_id"]) == sorted(r.user_id for r in records)
    assert one.read() == records


def test_a_crash_between_merge_and_delete_duplicates_and_the_next_merge_repairs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The merged part is durable before any input goes, so a crash in between loses nothing;
    readers dedupe meanwhile, and the next merge deletes the inputs its metadata names."""
    # A merged part of 3 rows is full (part_rows=3): it is not merged again, so only the
    # metadata can tell that the inputs left beside it are duplicates.
    log = FeedbackLog(tmp_path, compact_parts=3, part_rows=3)
    records = spread(days=5, per_day=1)
    unlink = Path.unlink

    def crash(path: Path, missing_ok: bool = False) -> None:
        if path.name.startswith("part-"):
            raise OSError("power cut")
        unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", crash)
    for record in records[:3]:
        log.append([record])  # the third merges, then "crashes" before deleting the inputs
    monkeypatch.undo()
    assert names(log) == [f"part-{n}.parquet" for n in range(4)]
    assert len(pd.read_parquet(tmp_path)) == 6  # duplicates, never a loss
    assert log.read() == records[:3]
    for record in records[3:]:
        log.append([record])
    assert len(log.parts()) < 4
    frame = pd.read_parquet(tmp_path)
    assert sorted(frame["user_id"]) == sorted(r.user_id for r in records)
    assert log.read() == records


# -- the worker's journal ------------------------------------------------------------------


def journals(root: Path) -> list[str]:
    return sorted(p.name for p in root.glob(".journal-*.jsonl"))


def test_a_journal_append_is_readable_at_once_and_becomes_a_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's mode: durable in its journal on return, the part written behind it."""
    log = FeedbackLog(tmp_path, journal=True)
    release = threading.Event()
    write_part = log._write_part

    def slow_write_part(table: Any, *args: Any, **kwargs: Any) -> Path:
        release.wait(10)
        return write_part(table, *args, **kwargs)

    monkeypatch.setattr(log, "_write_part", slow_write_part)
    batch = spread(days=3)
    assert log.append(batch) == []
    # No part yet: the records are read from the journal, one line each, fsynced.
    assert log.parts() == [] and len(journals(tmp_path)) == 1
    assert log.read() == sorted(batch, key=lambda r: (r.event_time, r.user_id, r.event_id))
    assert len(log.read(since=date(1998, 1, 2), until=date(1998, 1, 2))) == 2
    release.set()
    log.settle()
    assert names(log) == ["part-0.parquet"]
    assert len(log.read()) == len(batch)  # the journal's copy deduped against the part's


def test_a_journal_all_in_parts_is_replaced_once_it_is_big(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(module, "JOURNAL_ROTATE_BYTES", 1)
    log = FeedbackLog(tmp_path, journal=True)
    for b in range(3):
        log.append(spread(days=1, start=10 * b))
        log.settle()
        assert journals(tmp_path) == []  # every record is in a part: the journal went
    assert len(log.parts()) == 3 and len(log.read()) == 6


def test_a_dead_writers_journal_is_recovered_and_a_live_ones_is_left(tmp_path: Path) -> None:
    """A worker killed after its journal write: the records are read from the journal at
    once, and the next writer (or compact) turns them into a part; a torn last line, from a
    write that never returned, is skipped. A live writer's journal is not touched."""
    live = FeedbackLog(tmp_path, journal=True)
    live.append(spread(days=1, start=100))  # holds its journal while it lives
    dead = spread(days=2)
    lines = b"".join(r.encoded + b"\n" for r in dead) + b'{"user_id": "u9", "ev'
    (tmp_path / f".journal-{'a' * 32}.jsonl").write_bytes(lines)
    assert len(FeedbackLog(tmp_path).read()) == len(dead) + 2
    successor = FeedbackLog(tmp_path, journal=True)
    successor.append(spread(days=1, start=200))
    successor.settle()
    live.settle()
    left = journals(tmp_path)
    assert f".journal-{'a' * 32}.jsonl" not in left and len(left) == 2
    assert len(FeedbackLog(tmp_path).read()) == len(dead) + 4
    # The recovered records are in a part of their own: readable without any journal.
    in_parts = pd.read_parquet(tmp_path)
    assert set(in_parts["user_id"]) >= {r.user_id for r in dead}


def test_compact_recovers_a_dead_writers_journal(tmp_path: Path) -> None:
    dead = spread(days=2)
    path = tmp_path / f".journal-{'b' * 32}.jsonl"
    path.write_bytes(b"".join(r.encoded + b"\n" for r in dead))
    FeedbackLog(tmp_path).compact()
    assert not path.exists() and len(pd.read_parquet(tmp_path)) == len(dead)


def test_the_journal_becomes_one_part_per_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Appends within ``PART_INTERVAL_S`` of the last part share the next one; settle writes
    it at once."""
    monkeypatch.setattr(module, "PART_INTERVAL_S", 60.0)
    log = FeedbackLog(tmp_path, journal=True)
    log.append(spread(days=1))
    deadline = time.monotonic() + 10
    while not log.parts() and time.monotonic() < deadline:  # the first part goes at once
        time.sleep(0.01)
    for b in range(1, 4):
        log.append(spread(days=1, start=10 * b))
    assert names(log) == ["part-0.parquet"] and len(log.read()) == 8  # three from the journal
    log.settle()
    assert names(log) == ["part-0.parquet", "part-1.parquet"]
    assert len(pq.read_table(log.root / "part-1.parquet")) == 6 and len(log.read()) == 8
