"""The local durable spool: append-only JSON-lines segments, written and fsync'd in batches.

Layout: ``<dir>/<seq:016d>.jsonl``, one encoded event per line. Only the newest segment of
the running process is written to (the *active* one); every other segment is *sealed*. A
process never appends to a segment it did not create: at ``open`` every existing segment is
sealed, so a line torn by a crash can only be the last line of a sealed segment, where the
reader ignores it (it was never acknowledged: its batch's fsync had not returned).

Durability: ``append`` returns after ``os.fsync`` of the segment (and of the directory when the
segment was created, so the new name survives a power cut). A failed write is rolled back with
``ftruncate`` so a half-written batch never sits in front of the retried one.

These methods block (write + fsync); the sinks call them through ``asyncio.to_thread``, one
at a time.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_SUFFIX = ".jsonl"


@dataclass(frozen=True, slots=True)
class Segment:
    """What a sealed segment holds: (event id, encoded event) in write order."""

    path: Path
    records: list[tuple[str, bytes]]
    torn_tail: bool
    corrupt_lines: int


def read_segment(path: Path) -> Segment:
    """Read a segment, tolerating a torn last line and skipping (and counting) corrupt lines."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # after the last newline: empty, or a line torn by a crash
    records: list[tuple[str, bytes]] = []
    corrupt = 0
    for number, line in enumerate(lines, 1):
        try:
            event_id = json.loads(line)["event_id"]
            if not isinstance(event_id, str):
                raise TypeError("event_id is not a string")
        except (ValueError, KeyError, TypeError) as exc:
            corrupt += 1
            log.error("spool %s:%d: unreadable line skipped (%s)", path, number, exc)
            continue
        records.append((event_id, line))
    if tail:
        log.warning("spool %s: torn last line (%d bytes) ignored", path, len(tail))
    return Segment(path, records, bool(tail), corrupt)


class Spool:
    """Append-only segmented spool in one directory, rotated by size."""

    def __init__(
        self,
        directory: Path,
        *,
        max_segment_bytes: int = 16 << 20,
        max_segment_age: float | None = None,
        fsync: bool = True,
    ) -> None:
        self.directory = directory
        self.max_segment_bytes = max_segment_bytes
        self.max_segment_age = max_segment_age
        self.fsync = fsync
        self._fd: int | None = None
        self._active: Path | None = None
        self._active_size = 0
        self._active_since = 0.0
        self._next_seq = 1

    def open(self) -> None:
        """Create the directory and seal what a previous process left."""
        self.directory.mkdir(parents=True, exist_ok=True)
        existing = self.sealed_segments()
        if existing:
            self._next_seq = int(existing[-1].stem) + 1

    def adopt(self, directory: Path) -> int:
        """Move the segments another spool left in ``directory`` (a worker that no longer runs)
        into this one, after its own and in their order, so they are replayed like ours; returns
        how many. Call after ``open``, before writing. A rename is atomic: after a crash each
        segment is in one place or the other, never lost or in both."""
        if not directory.is_dir() or directory.resolve() == self.directory.resolve():
            return 0
        theirs = _segments(directory)
        for path in theirs:
            os.rename(path, self.directory / f"{self._next_seq:016d}{_SUFFIX}")
            self._next_seq += 1
        if theirs:
            self._sync_directory()
            _sync_directory(directory, self.fsync)
            log.warning("spool: adopted %d segments left in %s", len(theirs), directory)
        return len(theirs)

    def sealed_segments(self) -> list[Path]:
        """Segments not being written to, oldest first."""
        return [p for p in _segments(self.directory) if p != self._active]

    @property
    def active_has_data(self) -> bool:
        return self._active is not None and self._active_size > 0

    def append(self, lines: Sequence[bytes], now: float = 0.0) -> None:
        """Append encoded events (no newline inside) and make them durable before returning.

        ``now`` (the caller's monotonic clock) ages the segment: one older than
        ``max_segment_age`` is sealed after this write, so billing can collect closed files
        regularly when the spool is the only store.
        """
        if not lines:
            return
        if self._fd is None:
            self._create()
            self._active_since = now
        fd = self._fd
        assert fd is not None
        payload = b"\n".join(lines) + b"\n"
        try:
            written = 0
            view = memoryview(payload)
            while written < len(payload):
                written += os.write(fd, view[written:])
            if self.fsync:
                os.fsync(fd)
        except OSError:
            # Roll back the partial batch so the retry does not leave garbage in the middle.
            os.ftruncate(fd, self._active_size)
            raise
        self._active_size += len(payload)
        too_old = self.max_segment_age is not None and now - self._active_since >= self.max_segment_age
        if self._active_size >= self.max_segment_bytes or too_old:
            self.rotate()

    def rotate(self) -> None:
        """Seal the active segment (the next append starts a new one)."""
        if self._fd is not None:
            os.close(self._fd)
        self._fd = None
        self._active = None
        self._active_size = 0

    def remove(self, path: Path) -> None:
        """Delete a sealed segment once everything in it was delivered."""
        path.unlink(missing_ok=True)
        self._sync_directory()

    def close(self) -> None:
        self.rotate()

    def _create(self) -> None:
        path = self.directory / f"{self._next_seq:016d}{_SUFFIX}"
        self._next_seq += 1
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o640)
        self._active = path
        self._active_size = 0
        self._sync_directory()

    def _sync_directory(self) -> None:
        _sync_directory(self.directory, self.fsync)


def _segments(directory: Path) -> list[Path]:
    """The segment files directly in ``directory``, oldest first."""
    return sorted(p for p in directory.iterdir() if p.suffix == _SUFFIX and p.stem.isdigit() and p.is_file())


def _sync_directory(directory: Path, fsync: bool) -> None:
    """fsync a directory, so renames and new names in it survive a power cut."""
    if not fsync:
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def abandoned_spools(own: Path, *, workers: int, worker_index: int | None) -> list[Path]:
    """Spool directories no running process writes to, which ``own`` takes over (see
    ``Spool.adopt``): the single process takes every ``w<N>`` left by earlier worker processes;
    worker 0 (its spool is ``<base>/w0``) takes the segments a single process left in ``<base>``
    and ``<base>/w<N>`` for each N the current worker count no longer runs. Other workers: none."""
    if worker_index:
        return []

    def worker_dirs(base: Path) -> list[tuple[int, Path]]:
        if not base.is_dir():
            return []
        found = [(int(d.name[1:]), d) for d in base.iterdir() if d.name[:1] == "w" and d.name[1:].isdigit()]
        return sorted(item for item in found if item[1].is_dir())

    if worker_index is None:
        return [path for _, path in worker_dirs(own)]
    base = own.parent
    return [base, *(path for index, path in worker_dirs(base) if index >= workers)]
