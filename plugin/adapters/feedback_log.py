"""The offline feedback log: Parquet files, partitioned by engagement date, append-only.

Layout (``feedback.log_dir``, default ``var/feedback``)::

    var/feedback/
      date=1998-03-30/            # UTC date of the engagement (event time, not write time)
        part-0.parquet
        part-1.parquet            # one part per appended batch and date, numbered in order
        ...

Each row is one :class:`~plugin.feedback.FeedbackRecord`; the columns and their types are
:data:`SCHEMA` (times are UTC microseconds). Parts are immutable once they exist:

* a part is written to a hidden temporary file in its date folder, then hard-linked to the
  next free ``part-<n>.parquet``; the link fails when another writer took that number, and the
  writer tries the next one. A reader never sees half a file, and writers never overwrite;
* the log is at-least-once: a retried batch appends its records again. Readers dedupe by
  ``(user_id, event_id)`` (:meth:`FeedbackLog.read`), keeping the first;
* rolling: once a date folder holds ``compact_parts`` parts smaller than ``part_rows`` rows,
  the writer merges them into one part (deduplicated) and then deletes the merged ones. A
  crash in between leaves duplicates, which readers drop.

Glob-friendly: ``pandas.read_parquet("var/feedback")`` reads the whole log with a ``date``
column from the folder names.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from plugin.feedback import FeedbackRecord, dedupe

log = logging.getLogger(__name__)

SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("event_time", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("history", pa.list_(pa.int64()), nullable=False),
        pa.field("planned_cluster", pa.int64(), nullable=False),
        pa.field("engaged_cluster", pa.int64(), nullable=False),
        pa.field("engaged_rank", pa.int64()),
        pa.field("accepted", pa.bool_(), nullable=False),
        pa.field("positive", pa.bool_(), nullable=False),
        pa.field("novel", pa.bool_(), nullable=False),
        pa.field("planned_novel", pa.bool_(), nullable=False),
        pa.field("rating", pa.float64()),
        pa.field("watch_ratio", pa.float64()),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("catalog_version", pa.string(), nullable=False),
        pa.field("planned_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("source", pa.string(), nullable=False),
    ]
)
_PART = re.compile(r"^part-(\d+)\.parquet$")
_DATE = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")


def date_folder(moment: datetime) -> str:
    return f"date={moment.astimezone(UTC).date().isoformat()}"


def to_table(records: Sequence[FeedbackRecord]) -> pa.Table:
    return pa.Table.from_pylist([r.model_dump() for r in records], schema=SCHEMA)


def from_table(table: pa.Table) -> list[FeedbackRecord]:
    names = set(SCHEMA.names)
    return [
        FeedbackRecord.model_validate({k: v for k, v in row.items() if k in names})
        for row in table.to_pylist()
    ]


@dataclass(frozen=True)
class LogStats:
    dates: int
    parts: int
    rows: int
    bytes: int

    def as_dict(self) -> dict[str, int]:
        return {"dates": self.dates, "parts": self.parts, "rows": self.rows, "bytes": self.bytes}


class FeedbackLog:
    """Appends records as Parquet parts and reads them back, deduplicated."""

    def __init__(self, root: Path, compact_parts: int = 64, part_rows: int = 100_000) -> None:
        self.root = root
        self.compact_parts = compact_parts
        self.part_rows = part_rows

    # -- writing ---------------------------------------------------------------------------

    def append(self, records: Sequence[FeedbackRecord]) -> list[Path]:
        """Write ``records`` durably: one new part per engagement date. Returns the parts."""
        by_date: dict[str, list[FeedbackRecord]] = defaultdict(list)
        for record in records:
            by_date[date_folder(record.event_time)].append(record)
        written = []
        for folder, rows in sorted(by_date.items()):
            directory = self.root / folder
            written.append(self._write_part(directory, to_table(rows)))
            self._maybe_compact(directory)
        return written

    def _write_part(self, directory: Path, table: pa.Table) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        temporary = directory / f".part-{uuid.uuid4().hex}.tmp"
        pq.write_table(table, temporary)
        with temporary.open("rb") as handle:
            os.fsync(handle.fileno())
        number = _next_number(directory)
        try:
            while True:
                final = directory / f"part-{number}.parquet"
                try:
                    os.link(temporary, final)  # fails if the name exists: never overwrites
                    return final
                except FileExistsError:
                    number += 1
        finally:
            temporary.unlink(missing_ok=True)

    def _maybe_compact(self, directory: Path) -> None:
        if len(_parts(directory)) >= self.compact_parts:
            self.compact_folder(directory)

    def compact_folder(self, directory: Path) -> Path | None:
        """Merge the folder's small parts into one; the new part, or None if nothing merged."""
        small = [p for p in _parts(directory) if _rows(p) < self.part_rows]
        if len(small) < 2:
            return None
        merged = dedupe(record for part in small for record in _read_part(part))
        target = self._write_part(directory, to_table(merged))
        for part in small:
            part.unlink(missing_ok=True)
        log.info("feedback log: merged %d parts of %s into %s", len(small), directory, target)
        return target

    def compact(self) -> list[Path]:
        """Merge the small parts of every date folder (``explore feedback compact``)."""
        return [p for d in self.dates() if (p := self.compact_folder(self.root / d)) is not None]

    # -- reading ---------------------------------------------------------------------------

    def dates(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _DATE.match(p.name))

    def parts(self) -> list[Path]:
        return [part for d in self.dates() for part in _parts(self.root / d)]

    def read(self, since: date | None = None, until: date | None = None) -> list[FeedbackRecord]:
        """Every record (one per key), ordered by event time; ``since``/``until`` bound the
        engagement dates, both inclusive."""
        records: list[FeedbackRecord] = []
        for folder in self.dates():
            day = date.fromisoformat(folder.removeprefix("date="))
            if (since is not None and day < since) or (until is not None and day > until):
                continue
            records.extend(_read_folder(self.root / folder))
        unique = dedupe(records)
        unique.sort(key=lambda r: (r.event_time, r.user_id, r.event_id))
        return unique

    def stats(self) -> LogStats:
        parts = self.parts()
        return LogStats(
            dates=len(self.dates()),
            parts=len(parts),
            rows=sum(_rows(p) for p in parts),
            bytes=sum(p.stat().st_size for p in parts),
        )


def _parts(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _PART.match(p.name))]
    return [p for _, p in sorted(found)]


def _next_number(directory: Path) -> int:
    numbers = [int(m.group(1)) for p in directory.iterdir() if (m := _PART.match(p.name))]
    return max(numbers, default=-1) + 1


def _rows(part: Path) -> int:
    try:
        return int(pq.ParquetFile(part).metadata.num_rows)
    except FileNotFoundError:  # merged away by another writer meanwhile
        return 0


def _read_part(part: Path) -> list[FeedbackRecord]:
    try:
        table = pq.read_table(part, schema=SCHEMA)
    except FileNotFoundError:
        return []  # merged away by another writer between listing and reading
    return from_table(table)


def _read_folder(directory: Path, attempts: int = 5) -> list[FeedbackRecord]:
    """A folder's records; listed again when a part vanished (merged) while being read, since
    its rows then live in a part the first listing did not hold."""
    for _ in range(attempts):
        records: list[FeedbackRecord] = []
        complete = True
        for part in _parts(directory):
            try:
                records.extend(from_table(pq.read_table(part, schema=SCHEMA)))
            except FileNotFoundError:
                complete = False
                break
        if complete:
            return records
    raise RuntimeError(f"{directory}: parts kept vanishing while reading (compaction storm?)")


def read_records(paths: Iterable[Path]) -> list[FeedbackRecord]:
    """Records of any Parquet files in :data:`SCHEMA` (deduplicated), for tools and tests."""
    return dedupe(record for path in paths for record in _read_part(path))


def record_rows(records: Sequence[FeedbackRecord]) -> list[dict[str, Any]]:
    """Records as plain dicts (for reports)."""
    return [r.model_dump(mode="json") for r in records]
