"""The offline feedback log: append-only Parquet parts, one per appended batch.

Layout (``feedback.log_dir``, default ``var/feedback``)::

    var/feedback/
      part-0.parquet              # one part per appended batch, numbered in order
      part-1.parquet
      ...

Each row is one :class:`~plugin.core.feedback.FeedbackRecord` plus its ``date``, the UTC date of
the engagement (event time, not write time); the columns and their types are :data:`SCHEMA`
(times are UTC microseconds). A batch's records span many dates (a MovieLens batch about 90),
so the date is a column, not a folder: one file and one fsync per batch, and readers prune by
date with the column's statistics (:meth:`FeedbackLog.read`). Parts are immutable once they
exist:

* a part is written to a hidden temporary file, fsynced, hard-linked to the next free
  ``part-<n>.parquet`` and the folder fsynced, so :meth:`FeedbackLog.append` returns only once
  the records are durable under their final name. The link fails when another writer took that
  number, and the writer tries the next one. A reader never sees half a file (a crash leaves at
  most a hidden ``.part-*.tmp``, which readers ignore), and writers never overwrite;
* the log is at-least-once: a retried batch appends its records again. Readers dedupe by
  ``(user_id, event_id)`` (:meth:`FeedbackLog.read`), keeping the first;
* rolling: once the log holds ``compact_parts`` parts smaller than ``part_rows`` rows, the
  writer merges them into one part (deduplicated, sorted by event time) and then deletes the
  merged ones;
* compaction is safe with several writers (workers) on one filesystem: a merge runs only
  under an exclusive ``flock`` on the hidden ``.compact.lock`` in the folder, and merges
  only the parts that still exist once it holds the lock (a merge deletes its inputs before
  it lets go of the lock, so those are in no other merged part). A writer that finds the
  lock taken skips its merge (the holder merges, and the next append tries again), so no two
  writers merge the same parts and no record is written to two parts. Appends never take
  the lock. The order makes a crash safe: the merged part is durable under its final name
  before any input is deleted, so a crash in between leaves duplicates (never a lost record),
  which readers drop. The merged part names its inputs in its Parquet metadata
  (``explore.merged_from``), and the next merge deletes any input that survived such a
  crash, so the duplicates do not last.

Logs written before this layout kept one folder per date (``date=YYYY-MM-DD/part-<n>.parquet``,
no ``date`` column). Readers still read those folders, and :meth:`FeedbackLog.compact` moves
them into the flat layout.

The worker's journal (``journal=True``): a batch must wait until its records are durable before
it writes anything, and a Parquet part (encoding, a new file, two fsyncs) was the longest step
of a batch with the feedback loop on. So the worker appends each batch's records as JSON lines
(the feedback topic's encoding) to a journal of its own, ``.journal-<id>.jsonl``, with one write
(safe from the worker's death on return; ``fdatasync`` too with ``sync_each_append``, else the
part writer syncs the journal before its part), and writes its records as Parquet parts in the
background, at most one part per ``PART_INTERVAL_S`` (:meth:`FeedbackLog.settle` writes the
rest now). The journal is part of the log:

* readers read every journal too (journals first, then parts: a journal whose records moved into
  a part meanwhile is then read twice, never missed), and dedupe;
* a writer holds an exclusive ``flock`` on its journal while it lives; once all of a journal's
  records are in parts and it has grown past ``JOURNAL_ROTATE_BYTES``, the writer deletes it and
  starts another;
* a journal nobody holds was left by a writer that died: the next journal writer to start, or
  :meth:`FeedbackLog.compact`, writes its records as a part and deletes it. Records already in
  a part come back as duplicates, which readers drop; a torn last line (the writer died in that
  write, before its batch wrote anything) is skipped.

Glob-friendly: ``pandas.read_parquet("var/feedback")`` reads the log's parts, ``date`` included
(it skips the hidden files, journals included: a live worker's last batch or two, or a dead
one's journal until it is recovered). Its rows are unique except after a crash mid-merge or a
retried batch (at-least-once); :meth:`FeedbackLog.read` dedupes those too.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from plugin.core.coalesce import Coalescer
from plugin.core.feedback import FeedbackRecord, dedupe

log = logging.getLogger(__name__)

RECORD_SCHEMA = pa.schema(
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
# The columns of a part: the record's, then the UTC date of ``event_time`` (derived).
SCHEMA = RECORD_SCHEMA.append(pa.field("date", pa.date32(), nullable=False))
# Row groups of merged parts (sorted by event time), so a date filter skips most of them.
MERGED_ROW_GROUP = 16_384

# The merge lock (hidden, so Parquet readers skip it) and the metadata key naming a merged
# part's inputs (paths relative to the log's folder).
COMPACTION_LOCK = ".compact.lock"
MERGED_FROM = b"explore.merged_from"

_PART = re.compile(r"^part-(\d+)\.parquet$")
_JOURNAL = re.compile(r"^\.journal-[0-9a-f]{32}\.jsonl$")
# A journal whose records are all in parts is replaced once it is this big: small enough to
# read quickly, large enough that its creation (a new name, a folder fsync) is rare.
JOURNAL_ROTATE_BYTES = 4 << 20
# The worker writes its journal's records as a part at most once a second: each part is a new
# file and two fsyncs, and the journal's fdatasync waited behind them when every batch wrote
# one (8 ms a batch at 1,000 events/s); fewer parts also mean fewer merges.
PART_INTERVAL_S = 1.0
_LEGACY_DATE = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
_ORDER = [("event_time", "ascending"), ("user_id", "ascending"), ("event_id", "ascending")]


def to_table(records: Sequence[FeedbackRecord]) -> pa.Table:
    """Records as a table in :data:`SCHEMA`, built column by column (no per-record dict)."""
    columns = {name: [getattr(r, name) for r in records] for name in RECORD_SCHEMA.names}
    return _with_date(pa.Table.from_pydict(columns, schema=RECORD_SCHEMA))


def from_table(table: pa.Table) -> list[FeedbackRecord]:
    names = set(RECORD_SCHEMA.names)
    return [
        FeedbackRecord.model_validate({k: v for k, v in row.items() if k in names})
        for row in table.to_pylist()
    ]


def _with_date(table: pa.Table) -> pa.Table:
    """``table`` (the record columns) with its ``date`` column, computed in Arrow."""
    day = pc.cast(table["event_time"], pa.date32())  # the zone is UTC: the UTC date
    return table.append_column(SCHEMA.field("date"), day)


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

    def __init__(
        self,
        root: Path,
        compact_parts: int = 64,
        part_rows: int = 100_000,
        *,
        merge_in_background: bool = False,
        journal: bool = False,
        sync_each_append: bool = True,
    ) -> None:
        self.root = root
        self.compact_parts = compact_parts
        self.part_rows = part_rows
        # The worker merges in a thread: an inline merge stalled its batch 0.2-0.3 s every
        # ``compact_parts`` batches, the largest step in its p99 latency (docs/BENCHMARKS.md).
        # Arrow releases the GIL while it reads and writes, so the batches go on meanwhile.
        self.merge_in_background = merge_in_background
        self._merging: threading.Thread | None = None
        # Rows per part name: parts never change once they exist, and merged parts take new
        # numbers, so a name's count stays right. Saves opening every part per append.
        self._rows: dict[str, int] = {}
        self._rows_lock = threading.Lock()
        self._root_ready = False
        # The worker's journal (module docstring): appends go there, parts follow in a thread.
        self.journal = journal
        # With the journal: fdatasync it in each append (``feedback.journal_sync = "batch"``),
        # or only before its records' part is written, at most PART_INTERVAL_S later. Either
        # way a worker crash loses nothing (the bytes are in the kernel's page cache once the
        # write returns); the sync only guards against losing the machine.
        self.sync_each_append = sync_each_append
        self._journal: _Journal | None = None
        self._journal_lock = threading.Lock()
        self._part_writer: Coalescer[tuple[_Journal, list[FeedbackRecord]]] = Coalescer(
            self._part_from_journal, PART_INTERVAL_S, "feedback-part"
        )

    # -- writing ---------------------------------------------------------------------------

    def append(self, records: Sequence[FeedbackRecord]) -> list[Path]:
        """Write ``records`` as one new part (none for no records); returns the parts written.

        Durable on return: the part's bytes and its name are fsynced, so the caller may ack
        the batch. A failed merge of small parts afterwards is logged, never raised: the
        records are in the log already, and the next append or ``compact`` merges again.
        With ``journal``, durable in the journal on return, and the part is written in the
        background (:meth:`settle`): none is returned.
        """
        if not records:
            return []
        if self.journal:
            self._journal_append(records)
            return []
        part = self._write_part(to_table(records))
        self._after_part()
        return [part]

    def _after_part(self) -> None:
        if not self.merge_in_background:
            self._merge_small_parts()
        elif not self._merge_running() and len(small := self._small_parts()) >= self.compact_parts:
            # The parts are chosen now: the merge is of those that made it due.
            self._merging = threading.Thread(
                target=self._merge_small_parts, args=(small,), name="feedback-merge", daemon=True
            )
            self._merging.start()

    def _journal_append(self, records: Sequence[FeedbackRecord]) -> None:
        lines = b"".join(record.encoded + b"\n" for record in records)
        with self._journal_lock:
            journal = self._journal
            if journal is None:
                self._ensure_root()
                self._recover_journals()
                journal = self._journal = _Journal.create(self.root)
            journal.write(lines, sync=self.sync_each_append)
            journal.pending += len(records)
        # The journal's records become one part at most once per PART_INTERVAL_S.
        self._part_writer.add((journal, list(records)))

    def _part_from_journal(self, taken: list[tuple[_Journal, list[FeedbackRecord]]]) -> None:
        journals = {id(journal): journal for journal, _ in taken}.values()
        try:
            # The journals first: if the part fails, its records stay there, on disk.
            for journal in journals:
                journal.sync()
            self._write_part(to_table([record for _, batch in taken for record in batch]))
        except (OSError, pa.ArrowException) as exc:
            # The records stay in the journal (on disk, or at least in the page cache if its
            # sync failed), which now stays until it is recovered.
            log.warning("feedback log: a part from the journal failed (%s); kept there", exc)
            return
        with self._journal_lock:
            for journal, batch in taken:
                journal.pending -= len(batch)
            for journal in journals:
                if journal.pending == 0 and journal.size >= JOURNAL_ROTATE_BYTES:
                    journal.remove()
                    if self._journal is journal:
                        self._journal = None
        self._after_part()

    def settle(self) -> None:
        """Write what the journal holds beyond the parts now, and wait for a background
        merge (a worker calls it before it stops)."""
        self._part_writer.settle()
        self.wait_for_merge()

    def _recover_journals(self) -> list[Path]:
        """Write each journal that no live writer holds as a part, then delete it."""
        parts: list[Path] = []
        for path in _journals(self.root):
            if self._journal is not None and path == self._journal.path:
                continue
            with _held_journal(path) as held:
                if not held:
                    continue  # its writer is alive
                records = _journal_records(path)
                if records:
                    parts.append(self._write_part(to_table(dedupe(records))))
                path.unlink(missing_ok=True)
                log.warning("feedback log: recovered %d records from %s", len(records), path.name)
        return parts

    def _merge_running(self) -> bool:
        return self._merging is not None and self._merging.is_alive()

    def wait_for_merge(self, timeout_s: float | None = None) -> None:
        """Wait for a background merge to finish (a worker never needs to: merging is optional)."""
        if self._merging is not None:
            self._merging.join(timeout_s)

    def _merge_small_parts(self, small: Sequence[Path] | None = None) -> None:
        try:
            self._maybe_compact(small)
        except (OSError, pa.ArrowException) as exc:
            log.warning("feedback log: merging small parts failed (%s); will retry", exc)

    def _write_part(
        self,
        table: pa.Table,
        row_group_size: int | None = None,
        merged_from: Sequence[str] = (),
    ) -> Path:
        self._ensure_root()
        if merged_from:
            metadata = dict(table.schema.metadata or {})
            metadata[MERGED_FROM] = json.dumps(list(merged_from)).encode()
            table = table.replace_schema_metadata(metadata)
        # Encoded in memory, then one write and one fsync: the worker waits for this before a
        # batch's writes, and every system call gives up the GIL, to get it back only after
        # the event loop's turn (up to the 5 ms switch interval each) on a busy worker.
        encoded = pa.BufferOutputStream()
        pq.write_table(table, encoded, row_group_size=row_group_size)
        temporary = self.root / f".part-{uuid.uuid4().hex}.tmp"  # hidden: readers skip it
        try:
            _write_durably(temporary, encoded.getvalue())
            number = _next_number(self.root)
            while True:
                final = self.root / f"part-{number}.parquet"
                try:
                    os.link(temporary, final)  # fails if the name exists: never overwrites
                    break
                except FileExistsError:
                    number += 1
        finally:
            temporary.unlink(missing_ok=True)
        _fsync_directory(self.root)  # the new name is durable, not only the bytes
        with self._rows_lock:
            self._rows[final.name] = table.num_rows
        return final

    def _ensure_root(self) -> None:
        if self._root_ready:
            return
        missing = not self.root.is_dir()
        self.root.mkdir(parents=True, exist_ok=True)
        if missing:
            _fsync_directory(self.root.parent)
        self._root_ready = True

    def _small_parts(self) -> list[Path]:
        parts = _parts(self.root)
        names = {p.name for p in parts}
        with self._rows_lock:
            for name in [n for n in self._rows if n not in names]:
                del self._rows[name]  # merged away
        return [p for p in parts if self._part_rows(p) < self.part_rows]

    def _part_rows(self, part: Path) -> int:
        if part.parent != self.root:  # a part of the old layout: its name is not unique
            return _rows(part)
        rows = self._rows.get(part.name)
        if rows is None:
            rows = _rows(part)
            if rows:
                with self._rows_lock:
                    self._rows[part.name] = rows
        return rows

    @contextlib.contextmanager
    def _compaction_lock(self, wait: bool) -> Iterator[bool]:
        """Hold the folder's merge lock (across processes and threads: each call opens the
        file anew, and ``flock`` locks belong to the open file); yields False without it when
        ``wait`` is off and another writer holds it."""
        self._ensure_root()
        with (self.root / COMPACTION_LOCK).open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _maybe_compact(self, small: Sequence[Path] | None = None) -> None:
        """Merge the small parts (``small``: as listed when the merge was due) once they reach
        ``compact_parts``, unless another writer holds the merge lock."""
        if small is None:
            small = self._small_parts()
        if len(small) < self.compact_parts:
            return  # the common case: no lock, no syscall beyond the listing
        with self._compaction_lock(wait=False) as held:
            if not held:
                return  # another writer is merging; the next append looks again
            self._drop_superseded()
            # Under the lock a part that still exists is in no other merged part: a merge
            # deletes its inputs before it lets go of the lock. Those another writer merged
            # before we got here are gone.
            present = [p for p in small if p.exists()]
            if len(present) >= self.compact_parts:
                self._merge(present)

    def _drop_superseded(self) -> list[Path]:
        """Delete inputs of a merge that a crash left behind (the merged part holds their
        rows, and its metadata names them); only under the merge lock. The paths deleted."""
        removed: list[Path] = []
        for merged in _parts(self.root):
            try:
                metadata = pq.read_schema(merged).metadata or {}
            except (FileNotFoundError, pa.ArrowException):
                continue
            inputs = metadata.get(MERGED_FROM)
            if inputs is None:
                continue
            number = _part_number(merged)
            for name in json.loads(inputs):
                leftover = self.root / name
                # A name in the flat layout is only ever reused above the merged part's number
                # (numbers grow), so a higher one is a newer part, not a leftover input.
                if leftover.parent == self.root and _part_number(leftover) > number:
                    continue
                if leftover.exists():
                    leftover.unlink(missing_ok=True)
                    removed.append(leftover)
        if removed:
            _fsync_directory(self.root)
            log.warning("feedback log: removed %d parts left over by a crashed merge", len(removed))
        return removed

    def _merge(self, parts: Sequence[Path]) -> Path | None:
        """One new part with the rows of ``parts`` (deduplicated, by event time); then the
        merged parts are deleted. Only under the merge lock, so the parts stay put meanwhile;
        None when there was nothing to read."""
        tables = [t for t in (_read_arrow(p) for p in parts) if t is not None]
        if not tables:
            return None
        merged = _dedupe_table(pa.concat_tables(tables)).sort_by(_ORDER)
        # Durable under its final name before any input goes: a crash in between duplicates
        # records (readers dedupe, the next merge deletes the inputs), never loses one.
        target = self._write_part(
            _with_date(merged),
            row_group_size=MERGED_ROW_GROUP,
            merged_from=[p.relative_to(self.root).as_posix() for p in parts],
        )
        for part in parts:
            part.unlink(missing_ok=True)
        _fsync_directory(self.root)
        for folder in {p.parent for p in parts if p.parent != self.root}:
            with contextlib.suppress(OSError):  # not empty: an old writer is still at work
                folder.rmdir()  # an emptied date folder of the old layout
        log.info("feedback log: merged %d parts into %s", len(parts), target)
        return target

    def compact(self) -> list[Path]:
        """Merge the log's small parts, and every part of the old per-date layout, into one
        (``explore feedback compact``); the new parts (none when nothing needed merging).
        Waits for a merge another writer is running. Journals of dead writers are written as
        parts first."""
        self._ensure_root()
        self._recover_journals()
        with self._compaction_lock(wait=True):
            self._drop_superseded()
            small = self._small_parts()
            legacy = _legacy_parts(self.root)
            if not legacy and len(small) < 2:
                return []
            target = self._merge([*legacy, *small])
        return [target] if target is not None else []

    # -- reading ---------------------------------------------------------------------------

    def parts(self) -> list[Path]:
        """Every part: those of the old per-date layout first (they are older), in order."""
        return [*_legacy_parts(self.root), *_parts(self.root)]

    def read(self, since: date | None = None, until: date | None = None) -> list[FeedbackRecord]:
        """Every record (one per key), ordered by event time; ``since``/``until`` bound the
        engagement dates, both inclusive."""
        filters: list[tuple[str, str, date]] = []
        if since is not None:
            filters.append(("date", ">=", since))
        if until is not None:
            filters.append(("date", "<=", until))
        records: list[FeedbackRecord] = []
        for attempt in range(5):
            # Journals before parts: a journal whose records move into a part meanwhile is
            # read twice (deduped below), never missed.
            records, complete = _journal_records_in(self.root, since, until), True
            for part in self.parts():
                day = _legacy_date(part)
                if day is not None:
                    if (since is not None and day < since) or (until is not None and day > until):
                        continue
                    table = _read_arrow(part)
                else:
                    table = _read_arrow(part, filters or None)
                if table is None:
                    # Merged away while we read: its rows are in a part this listing lacks.
                    complete = False
                    break
                records.extend(from_table(table))
            if complete:
                unique = dedupe(records)
                unique.sort(key=lambda r: (r.event_time, r.user_id, r.event_id))
                return unique
            log.debug("feedback log: a part vanished while reading (attempt %d)", attempt + 1)
        raise RuntimeError(f"{self.root}: parts kept vanishing while reading (compaction storm?)")

    def stats(self) -> LogStats:
        parts = self.parts()
        days: set[Any] = set()
        for part in parts:
            legacy = _legacy_date(part)
            if legacy is not None:
                days.add(legacy)
                continue
            try:
                days.update(pq.read_table(part, columns=["date"])["date"].unique().to_pylist())
            except FileNotFoundError:
                continue
        return LogStats(
            dates=len(days),
            parts=len(parts),
            rows=sum(self._part_rows(p) for p in parts),
            bytes=sum(_size(p) for p in parts),
        )


def _parts(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    # Names first, paths only for the parts: the worker lists the folder on every append.
    found = sorted(
        (int(m.group(1)), name) for name in os.listdir(directory) if (m := _PART.match(name))
    )
    return [directory / name for _, name in found]


def _legacy_parts(root: Path) -> list[Path]:
    """Parts of the old layout (``date=YYYY-MM-DD/part-<n>.parquet``), by date then number."""
    if not root.is_dir():
        return []
    folders = sorted(p for p in root.iterdir() if p.is_dir() and _LEGACY_DATE.match(p.name))
    return [part for folder in folders for part in _parts(folder)]


def _legacy_date(part: Path) -> date | None:
    match = _LEGACY_DATE.match(part.parent.name)
    return date.fromisoformat(match.group(1)) if match else None


def _part_number(part: Path) -> int:
    match = _PART.match(part.name)
    return int(match.group(1)) if match else -1


def _next_number(directory: Path) -> int:
    numbers = [int(m.group(1)) for name in os.listdir(directory) if (m := _PART.match(name))]
    return max(numbers, default=-1) + 1


@dataclass
class _Journal:
    """One writer's journal file, held (``flock``) while the writer lives."""

    path: Path
    descriptor: int
    size: int = 0
    pending: int = 0  # records written here and not yet in a part

    @classmethod
    def create(cls, root: Path) -> _Journal:
        path = root / f".journal-{uuid.uuid4().hex}.jsonl"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o666)
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        _fsync_directory(root)  # its name survives a crash, so its records can be found
        return cls(path, descriptor)

    def write(self, lines: bytes, sync: bool) -> None:
        """Append ``lines``: in the page cache on return (safe from this process dying), and
        with ``sync`` on disk too (fdatasync: the data and the file's size)."""
        view = memoryview(lines)
        while view:
            view = view[os.write(self.descriptor, view) :]
        if sync:
            os.fdatasync(self.descriptor)
        self.size += len(lines)

    def sync(self) -> None:
        """Everything written so far on disk. Only the part writer calls it, and only it
        closes the journal (:meth:`remove`), so the descriptor is open here."""
        os.fdatasync(self.descriptor)

    def remove(self) -> None:
        # Deleted while still held, so no writer recovers it meanwhile. A crash that loses the
        # deletion brings it back: its records are in parts, and come back as duplicates.
        self.path.unlink(missing_ok=True)
        os.close(self.descriptor)


def _journals(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return [root / name for name in sorted(os.listdir(root)) if _JOURNAL.match(name)]


@contextlib.contextmanager
def _held_journal(path: Path) -> Iterator[bool]:
    """Hold a journal's lock; yields False when its writer is alive (or it is gone)."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        yield False
        return
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(descriptor)


def _journal_records(path: Path) -> list[FeedbackRecord]:
    """A journal's records; a line that does not parse is skipped."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:  # deleted meanwhile: its records are in parts
        return []
    records: list[FeedbackRecord] = []
    lines = data.splitlines()
    for number, line in enumerate(lines, 1):
        try:
            records.append(FeedbackRecord.model_validate_json(line))
        except ValueError:
            # An unfinished last line is expected: a write in progress as we read, or one a
            # crash cut short (its batch then wrote nothing). Anywhere else it is damage.
            last = number == len(lines) and not data.endswith(b"\n")
            (log.debug if last else log.warning)(
                "feedback log: %s line %d is not a record; skipped", path.name, number
            )
    return records


def _journal_records_in(root: Path, since: date | None, until: date | None) -> list[FeedbackRecord]:
    """Every journal's records with an engagement date in ``[since, until]``."""
    return [
        record
        for path in _journals(root)
        for record in _journal_records(path)
        if (since is None or _utc_date(record) >= since)
        and (until is None or _utc_date(record) <= until)
    ]


def _utc_date(record: FeedbackRecord) -> date:
    """The engagement's UTC date, as the parts' ``date`` column holds it."""
    return record.event_time.astimezone(UTC).date()


def _write_durably(path: Path, data: pa.Buffer) -> None:
    """A new file holding ``data``, its bytes on disk on return."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_directory(directory: Path) -> None:
    """Make the folder's entries (a new name, a removed one) survive a crash."""
    descriptor = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _rows(part: Path) -> int:
    try:
        return int(pq.read_metadata(part).num_rows)
    except FileNotFoundError:  # merged away by another writer meanwhile
        return 0


def _size(part: Path) -> int:
    try:
        return part.stat().st_size
    except FileNotFoundError:  # merged away meanwhile
        return 0


def _read_arrow(part: Path, filters: list[tuple[str, str, date]] | None = None) -> pa.Table | None:
    """A part's record columns (filtered by ``date``: parts of the old layout lack it), or
    None when it was merged away between listing and reading."""
    try:
        table = pq.read_table(part, columns=RECORD_SCHEMA.names, filters=filters)
    except FileNotFoundError:
        return None
    return table.cast(RECORD_SCHEMA)


def _dedupe_table(table: pa.Table) -> pa.Table:
    """One row per ``(user_id, event_id)``, the first, as :func:`plugin.core.feedback.dedupe`."""
    numbered = table.append_column("_row", pa.array(range(table.num_rows), pa.int64()))
    first = numbered.group_by(["user_id", "event_id"], use_threads=False).aggregate(
        [("_row", "min")]
    )
    rows = first["_row_min"]
    return table.take(rows.take(pc.sort_indices(rows)))  # in input order


def read_records(paths: Iterable[Path]) -> list[FeedbackRecord]:
    """Records of any Parquet files in :data:`SCHEMA` (deduplicated), for tools and tests."""
    return dedupe(
        record
        for path in paths
        if (table := _read_arrow(path)) is not None
        for record in from_table(table)
    )


def record_rows(records: Sequence[FeedbackRecord]) -> list[dict[str, Any]]:
    """Records as plain dicts (for reports)."""
    return [r.model_dump(mode="json") for r in records]
