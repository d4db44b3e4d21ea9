"""The lineage journal: an append-only JSON Lines file and its delivered-offset cursor.

``<state dir>/lineage/events.jsonl`` holds one OpenLineage event per line, in emission order,
written with the client's serializer and fsync'd before ``append`` returns. The cursor file
``events.jsonl.delivered`` holds the byte offset up to which events were delivered (a decimal
integer, replaced atomically). Everything after the cursor is pending. Only complete lines
(ending in a newline) are ever read, so a line being written is never half-sent.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CURSOR_SUFFIX = ".delivered"
LOCK_SUFFIX = ".lock"
REJECTED_NAME = "rejected.jsonl"
NEWLINE = b"\n"


@dataclass(frozen=True)
class JournalEntry:
    """One complete line of the journal: the event and the offset just after it."""

    text: str
    end: int


@dataclass(frozen=True)
class JournalState:
    """What ``lakehook lineage status`` shows."""

    path: Path
    size: int
    delivered: int
    pending: int


class Journal:
    """The journal file, its cursor and a lock that makes one delivery pass run at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.cursor_path = path.with_name(path.name + CURSOR_SUFFIX)
        self.lock_path = path.with_name(path.name + LOCK_SUFFIX)
        self.rejected_path = path.with_name(REJECTED_NAME)
        self._append_lock = threading.Lock()
        self._checked_tail = False

    # ---- writing ------------------------------------------------------------------------------
    def append(self, line: str) -> None:
        """Append one event line and fsync it.

        Raises:
            ValueError: ``line`` contains a newline.
            OSError: the journal cannot be written.
        """
        if "\n" in line:
            raise ValueError("a journal line must not contain a newline")
        data = line.encode("utf-8") + NEWLINE
        with self._append_lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                if not self._checked_tail:
                    data = self._terminate_torn_tail(fd) + data
                    self._checked_tail = True
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)

    def _terminate_torn_tail(self, fd: int) -> bytes:
        """A crash mid-write leaves a line without newline: end it so it stays on its own."""
        size = os.fstat(fd).st_size
        if size == 0:
            return b""
        with self.path.open("rb") as handle:
            handle.seek(size - 1)
            return b"" if handle.read(1) == NEWLINE else NEWLINE

    def reject(self, line: str, reason: str) -> None:
        """Keep an event the backend refused (4xx) next to the journal, with the reason."""
        self.rejected_path.parent.mkdir(parents=True, exist_ok=True)
        with self.rejected_path.open("a", encoding="utf-8") as handle:
            handle.write(f"# {reason.replace(chr(10), ' ')}\n{line}\n")
            handle.flush()
            os.fsync(handle.fileno())

    # ---- reading ------------------------------------------------------------------------------
    def delivered_offset(self) -> int:
        """Byte offset up to which events were delivered (0 when none were)."""
        try:
            text = self.cursor_path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return 0
        return int(text) if text.isdigit() else 0

    def set_delivered_offset(self, offset: int) -> None:
        """Persist the cursor atomically (write, fsync, rename)."""
        self.cursor_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cursor_path.with_name(self.cursor_path.name + ".tmp")
        with tmp.open("w", encoding="ascii") as handle:
            handle.write(f"{offset}\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.cursor_path)

    def entries(self, start: int) -> Iterator[JournalEntry]:
        """The complete lines from byte ``start`` on, each with the offset after it."""
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return
        with handle:
            handle.seek(start)
            offset = start
            for raw in handle:
                if not raw.endswith(NEWLINE):
                    return  # being written: not complete yet
                offset += len(raw)
                yield JournalEntry(raw.decode("utf-8", errors="replace").strip(), offset)

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def state(self) -> JournalState:
        """Size, cursor and the number of complete lines not yet delivered."""
        delivered = self.delivered_offset()
        pending = sum(1 for entry in self.entries(delivered) if entry.text)
        return JournalState(self.path, self.size(), delivered, pending)

    @contextlib.contextmanager
    def delivery_lock(self) -> Iterator[None]:
        """Exclusive across processes: the server's deliverer and ``lakehook lineage flush``."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        with self.lock_path.open("a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
