"""The capture pipeline off the request path: a bounded in-memory queue of
records and a background task writing them to the store in batches, retrying
with backoff when the store fails."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging

import msgspec

from lectr.store import Store
from lectr.types import Record

log = logging.getLogger("lectr.writer")


class WriterStats(msgspec.Struct):
    """Counters of the capture pipeline (shown by /readyz and metrics)."""

    queued: int = 0
    written: int = 0
    retried: int = 0
    dropped: int = 0
    failures: int = 0


class RecordWriter:
    """Bounded queue plus batch writer."""

    def __init__(self, store: Store, queue_size: int, batch_size: int, interval: float) -> None:
        self._store = store
        self._queue: collections.deque[Record] = collections.deque()
        self._max = queue_size
        self._batch = batch_size
        self._interval = interval
        self._wake = asyncio.Event()
        self._backoff = 0.0
        self.stats = WriterStats()

    @property
    def depth(self) -> int:
        """Records waiting to be written."""
        return len(self._queue)

    def submit(self, record: Record) -> None:
        """Queue a record; never blocks. A full queue drops and counts it."""
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
        try:
            await self._store.write_records(batch)
        except Exception as e:
            self._queue.extendleft(reversed(batch))
            self.stats.retried += n
            self.stats.failures += 1
            self._backoff = min(max(self._backoff * 2, 0.1), 5.0)
            log.warning(
                "writing %d records failed (%s); retrying in %.1fs", n, type(e).__name__, self._backoff
            )
            raise
        self._backoff = 0.0
        self.stats.written += n
        return n

    async def run(self) -> None:
        """Flush every interval, or sooner when a batch fills, until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval + self._backoff)
            self._wake.clear()
            try:
                while await self.flush_once() == self._batch:
                    pass
            except Exception:  # noqa: S112 - counted and logged in flush_once; retried next round
                continue

    async def drain(self, timeout: float) -> bool:  # noqa: ASYNC109 - a deadline, not a cancel scope
        """Write everything queued (used at shutdown); False if time ran out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._queue and loop.time() < deadline:
            try:
                await self.flush_once()
            except Exception:
                await asyncio.sleep(min(self._backoff, max(0.0, deadline - loop.time())))
        if self._queue:
            log.error("shutdown: %d records could not be written", len(self._queue))
        return not self._queue
