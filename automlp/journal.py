"""The journal file, kept readable after a process died (or the disk filled) in the middle of an append.

What Optuna 5's `JournalFileBackend` does with a bad line: `read_logs` skips a last line that has no newline
or does not parse, and raises the error of a bad line only once a later line exists. Its `append_logs` writes at
the end of the file whatever is there, so the first record written after a torn tail is glued to the torn
bytes: that line does not parse, and the next record makes every later read raise `JSONDecodeError`. The study
cannot be opened again, and the records after the damage are unreachable.

What automlp adds:
- `repair_torn_tail(path)`, on opening: a last line that is incomplete (no newline) or does not parse is moved
  aside, into `<journal>.torn-<UTC time>` next to the journal, and every complete record is kept; the caller
  shows the returned note. Done under the journal's write lock, so a live writer is never cut.
- `RepairingJournalFileBackend`: before each append (under the same lock) the file must end in a newline; a
  torn tail left by a writer that died while this process runs is moved aside the same way, so a record is
  never glued to it.
- A bad line anywhere but at the end (damage in the middle: a disk error, a hand edit) is not guessed at:
  `StorageError` names the file, the line, and what to restore.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator

from optuna.storages.journal import JournalFileBackend

from automlp.adapters import get_lock_file
from automlp.errors import StorageError

_log = logging.getLogger(__name__)


def _backup_path(journal: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path, n = journal.with_name(f"{journal.name}.torn-{stamp}"), 1
    while path.exists():
        n += 1
        path = journal.with_name(f"{journal.name}.torn-{stamp}-{n}")
    return path


def _torn_start(f, size: int | None = None) -> int | None:
    """Offset where the torn last line of the open journal `f` (cut at `size`, default its end) begins, or None
    when it ends in a complete record."""
    size = f.seek(0, os.SEEK_END) if size is None else size
    if size == 0:
        return None
    block = min(size, 1 << 16)
    f.seek(size - block)
    tail = f.read(block)
    while b"\n" not in tail[:-1] and block < size:  # a last line longer than the block: read more
        block = min(size, block * 4)
        f.seek(size - block)
        tail = f.read(block)
    if tail.endswith(b"\n"):
        prev = tail.rfind(b"\n", 0, len(tail) - 1)
        last = tail[prev + 1:]
        try:
            json.loads(last)
            return None
        except ValueError:  # a complete-looking line that does not parse: torn bytes with a record glued on
            return size - len(last)
    return size - (len(tail) - tail.rfind(b"\n") - 1)


def _cut(f, journal: Path, start: int) -> str:
    """Move the bytes of `f` from `start` to a backup file; returns the note."""
    f.seek(start)
    torn = f.read()
    backup = _backup_path(journal)
    backup.write_bytes(torn)
    f.truncate(start)
    f.flush()
    os.fsync(f.fileno())
    return (f"{journal} ended in an incomplete record ({len(torn)} bytes, left by a process stopped while "
            f"writing); kept every complete record and moved the torn bytes to {backup}")


def repair_torn_tail(journal: Path, lock) -> str | None:
    """Cut a torn last line off `journal` (under `lock`, the journal's write lock); the note, or None."""
    if not journal.exists():
        return None
    with get_lock_file(lock), open(journal, "r+b") as f:
        start = end = _torn_start(f)
        while end is not None:  # torn bytes with a record glued on, then torn again: cut back to a good line
            start, end = end, _torn_start(f, end)
        return None if start is None else _cut(f, journal, start)


class RepairingJournalFileBackend(JournalFileBackend):
    """Optuna's journal file backend that never glues a record to a torn tail, and names a damaged line."""

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode("utf-8")
        with get_lock_file(self._lock):
            with open(self._file_path, "r+b") as f:
                end = f.seek(0, os.SEEK_END)
                start = None
                if end and (f.seek(end - 1), f.read(1))[1] != b"\n":  # the cheap look first: one byte
                    start = _torn_start(f)
                if start is not None:  # a writer died mid-append while this process ran
                    _log.warning("%s", _cut(f, Path(self._file_path), start))
                f.seek(0, os.SEEK_END)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())

    def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
        try:
            yield from super().read_logs(log_number_from)
        except ValueError as e:  # json.JSONDecodeError is a ValueError, and so is Optuna's "Invalid log format."
            raise StorageError(_damaged(Path(self._file_path), e)) from None


def _damaged(journal: Path, error: ValueError) -> str:
    line, following = _first_bad_line(journal)
    backups = sorted(journal.parent.glob(f"{journal.name}.torn-*"))
    where = f"line {line}" if line else "a line"
    restore = f"restore it from your backup of {journal.name}"
    if backups:
        restore += f" (torn bytes cut off earlier are in {backups[-1].name})"
    return (f"{journal}: {where} is not a complete record ({str(error).splitlines()[0]}) and "
            f"{following} lines follow it; automlp repairs only a torn last line. The journal is damaged in the "
            f"middle: {restore}, or keep the {max(line - 1, 0)} records before it "
            f"(head -n {max(line - 1, 0)} {journal.name} > kept && mv kept {journal.name})")


def _first_bad_line(journal: Path) -> tuple[int, int]:
    """(1-based number of the first line that is not a JSON record, lines after it); (0, 0) when none."""
    with contextlib.suppress(OSError), open(journal, "rb") as f:
        lines = f.read().split(b"\n")
        for i, raw in enumerate(lines[:-1]):
            try:
                json.loads(raw)
            except ValueError:
                return i + 1, sum(1 for x in lines[i + 1:] if x)
    return 0, 0
