"""The record files beside the store: spill files to replay, and the quarantine kept for an operator."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import msgspec

from lectr.types import Record

_encode = msgspec.json.Encoder().encode


class Quarantine:
    """JSON lines of what could not be stored: `{"error", "record"}` for a
    record the store refused, `{"error", "line"}` for an unreadable spill
    line; unreadable spill files are moved here whole. Kept for an operator
    (counted in /readyz), never replayed."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def add(self, items: list[tuple[str, dict[str, object]]]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"quarantine-{os.getpid()}.jsonl"
        with path.open("ab") as f:
            f.write(b"".join(_encode({"error": e, "at": time.time(), **body}) + b"\n" for e, body in items))
            f.flush()
            os.fsync(f.fileno())

    def take_file(self, path: Path) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path.rename(self.folder / f"unreadable-{path.name}")

    def count(self) -> int:
        """Records and lines held here (what /readyz shows, across restarts)."""
        n = 0
        if not self.folder.is_dir():
            return 0
        for path in self.folder.glob("*.jsonl"):
            with contextlib.suppress(OSError), path.open("rb") as f:
                n += sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        return n


class Spill:
    """Append-only JSON-lines files of records the store could not take.

    Each process appends to a file of its own; any process may replay any
    file it can lock. Replays are safe to repeat: stores ignore record ids
    they already hold.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._file: IO[bytes] | None = None
        self._path: Path | None = None

    def append(self, records: list[Record]) -> None:
        if self._file is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._path = self.folder / f"spill-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
            self._file = self._path.open("ab")
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._file.write(b"".join(_encode(r) + b"\n" for r in records))
        self._file.flush()
        os.fsync(self._file.fileno())

    def rotate(self) -> None:
        """Close the current file so it can be replayed; later spills start a new one."""
        if self._file is not None:
            self._file.close()
            self._file = None
            self._path = None

    def remaining(self) -> tuple[int, int]:
        """Records (lines) and files in the folder not yet replayed."""
        records = files = 0
        for path in self.pending():
            with contextlib.suppress(OSError):
                with path.open("rb") as f:
                    records += sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
                files += 1
        return records, files

    def on_disk(self) -> dict[str, object]:
        """Spill files waiting for replay, by size (cheap enough for /readyz)."""
        files = size = 0
        if self.folder.is_dir():
            for path in self.folder.glob("spill-*.jsonl"):
                with contextlib.suppress(OSError):
                    size += path.stat().st_size
                    files += 1
        return {"files": files, "bytes": size, "folder": str(self.folder)}

    def pending(self) -> list[Path]:
        """Spill files waiting for replay (not the one being appended to)."""
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.glob("spill-*.jsonl") if p != self._path)

    @contextlib.contextmanager
    def claim(self, path: Path) -> Iterator[IO[bytes] | None]:
        """The file, locked for replay, or None when another process holds it."""
        try:
            f = path.open("rb")
        except FileNotFoundError:
            yield None
            return
        with f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield None
                return
            yield f
