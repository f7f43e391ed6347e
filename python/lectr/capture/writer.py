"""The capture pipeline off the request path: a bounded in-memory queue of
records, a background task writing them to the store in batches, and a spill
file that keeps them when the store is down (replayed when it returns). It
runs in the writer process (`capture.handover`)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import msgspec

from lectr.store.base import Store
from lectr.types import Record

log = logging.getLogger("lectr.writer")

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Record).decode
RETRY_MAX = 0.5  # the longest wait (s) between tries while the store fails


class WriterStats(msgspec.Struct):
    """Counters of the capture pipeline (shown by /readyz and metrics)."""

    queued: int = 0
    written: int = 0
    retried: int = 0
    spilled: int = 0
    replayed: int = 0
    dropped: int = 0
    failures: int = 0


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


class RecordWriter:
    """Bounded queue, batch writer and spill file."""

    def __init__(
        self,
        store: Store,
        queue_size: int,
        batch_size: int,
        interval: float,
        spill_dir: Path,
        spill_after_failures: int = 3,
    ) -> None:
        self._store = store
        self._queue: collections.deque[Record] = collections.deque()
        self._max = queue_size
        self._batch = batch_size
        self._interval = interval
        self._wake = asyncio.Event()
        self._backoff = 0.0
        self._failures_in_row = 0
        self._spill_after = spill_after_failures
        self.spill = Spill(spill_dir)
        self.stats = WriterStats()
        self._writing = 0

    @property
    def depth(self) -> int:
        """Records in memory not yet stored or spilled (the batch being written included)."""
        return len(self._queue) + self._writing

    def submit(self, record: Record) -> None:
        """Queue a record; never blocks. A full queue drops and counts it
        (the loop spills long before that while the store is down)."""
        if len(self._queue) >= self._max:
            self.stats.dropped += 1
            if self.stats.dropped == 1 or self.stats.dropped % 1000 == 0:
                log.error("record queue full (%d): %d records dropped so far", self._max, self.stats.dropped)
            return
        self._queue.append(record)
        self.stats.queued += 1
        if len(self._queue) >= self._batch:
            self._wake.set()

    async def flush_once(self) -> int:
        """Write one batch; on failure the batch goes back to the queue front."""
        if not self._queue:
            return 0
        n = min(self._batch, len(self._queue))
        batch = [self._queue.popleft() for _ in range(n)]
        self._writing = n
        try:
            await self._store.write_records(batch)
        except BaseException as e:
            self._writing = 0
            # Cancelled or failed, the batch goes back: nothing is lost, and a
            # batch that did commit is not stored twice (ids are unique).
            self._queue.extendleft(reversed(batch))
            if isinstance(e, Exception):
                self.stats.retried += n
                self.stats.failures += 1
                self._failures_in_row += 1
                # Capped low: the store reconnects on every try, so a short
                # fixed interval finds a database that came back promptly.
                self._backoff = min(max(self._backoff * 2, 0.1), RETRY_MAX)
                log.warning(
                    "writing %d records failed (%s); retry in %.1fs", n, type(e).__name__, self._backoff
                )
            raise
        self._writing = 0
        self._backoff = 0.0
        self._failures_in_row = 0
        self.stats.written += n
        return n

    def spill_queue(self) -> int:
        """Move every queued record to the spill file."""
        records = list(self._queue)
        if not records:
            return 0
        try:
            self.spill.append(records)
        except OSError as e:
            log.error("cannot spill %d records (%s); keeping them in memory", len(records), e)
            return 0
        self._queue.clear()
        self.stats.spilled += len(records)
        log.warning("store unavailable: spilled %d records to %s", len(records), self.spill.folder)
        return len(records)

    async def replay(self) -> int:
        """Write spilled records back (one file per call); 0 if none could be."""
        self.spill.rotate()
        for path in self.spill.pending():
            with self.spill.claim(path) as f:
                if f is None:
                    continue
                total = 0
                batch: list[Record] = []
                for line in f:
                    with contextlib.suppress(msgspec.DecodeError):  # a torn last line after a crash
                        batch.append(_decode(line))
                    if len(batch) >= self._batch:
                        await self._store.write_records(batch)
                        total += len(batch)
                        batch = []
                if batch:
                    await self._store.write_records(batch)
                    total += len(batch)
                path.unlink()
            self.stats.replayed += total
            log.info("replayed %d spilled records from %s", total, path.name)
            return total
        return 0

    async def run(self) -> None:
        """Flush every interval, or sooner when a batch fills; spill while the
        store fails; replay spills once it works. Runs until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval + self._backoff)
            self._wake.clear()
            try:
                while await self.flush_once() == self._batch:
                    pass
                if self.spill.pending() or self.stats.spilled > self.stats.replayed:
                    await self.replay()
            except Exception:
                if self._failures_in_row >= self._spill_after or len(self._queue) >= self._max // 2:
                    self.spill_queue()

    async def drain(self, timeout: float) -> bool:  # noqa: ASYNC109 - a deadline, not a cancel scope
        """At shutdown: write what is queued, or spill it; then replay the
        spill files while the deadline allows, retrying on a short interval
        while the store fails (it may be coming back). Logs how many records
        remain spilled, and where. False if any was lost."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._queue and loop.time() < deadline:
            try:
                await asyncio.wait_for(self.flush_once(), timeout=max(0.1, deadline - loop.time()))
            except Exception:
                break
        self.spill_queue()
        self.spill.rotate()
        lost = len(self._queue)
        if lost:
            log.error("shutdown: %d records could be neither written nor spilled", lost)
        while (before := len(self.spill.pending())) and loop.time() < deadline:
            try:
                await asyncio.wait_for(self.replay(), timeout=max(0.1, deadline - loop.time()))
                if len(self.spill.pending()) >= before:
                    break  # what is left is held by other processes
            except Exception as e:
                log.warning("shutdown: replaying the spill failed (%s); retrying", type(e).__name__)
                await asyncio.sleep(min(RETRY_MAX, max(0.0, deadline - loop.time())))
        records, files = self.spill.remaining()
        level = logging.WARNING if records else logging.INFO
        log.log(
            level, "shutdown: %d records remain spilled in %s (%d files)", records, self.spill.folder, files
        )
        return not lost
