"""The capture pipeline off the request path: a bounded in-memory queue of
records, a background task writing them to the store in batches, and a spill
file that keeps them when the store is down (replayed when it returns; the
files are `capture.spill`'s). It runs in the writer process (`capture.handover`)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import sqlite3
from pathlib import Path

import msgspec

from lectr.capture.spill import Quarantine, Spill
from lectr.store.base import Store
from lectr.types import Record

log = logging.getLogger("lectr.writer")

_decode = msgspec.json.Decoder(Record).decode
RETRY_MAX = 0.5  # the longest wait (s) between tries while the store fails
# Bounds of what the stores hold (PostgreSQL: int4 tokens, int2 status): a
# record past them is quarantined, never sent to fail its batch forever.
TOKENS_MAX = 2**31 - 1
COST_MAX = 1e9  # USD for one request; more is a corrupt usage figure
_TOKEN_FIELDS = ("prompt_tokens", "completion_tokens", "cached_tokens")


def record_problem(r: Record) -> str | None:
    """Why a record cannot be stored as it is, or None."""
    for f in _TOKEN_FIELDS:
        v = getattr(r, f)
        if v is not None and not 0 <= v <= TOKENS_MAX:
            return f"{f} out of range ({v})"
    if r.cost_usd is not None and not (math.isfinite(r.cost_usd) and 0 <= r.cost_usd <= COST_MAX):
        return f"cost_usd out of range ({r.cost_usd})"
    if not 0 <= r.status_code <= 32767:
        return f"status_code out of range ({r.status_code})"
    for name, ms in (("latency_ms", r.latency_ms), ("ttfb_ms", r.ttfb_ms)):
        if ms is not None and not math.isfinite(ms):
            return f"{name} is not finite"
    if not math.isfinite(r.ts):
        return "ts is not finite"
    return None


def _data_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "this data", not "this store": retrying the same
    records cannot help, so the batch is split to find the bad ones."""
    errors: tuple[type[BaseException], ...] = (
        ValueError,
        TypeError,
        OverflowError,
        sqlite3.DataError,
        sqlite3.IntegrityError,
        sqlite3.InterfaceError,
    )
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return errors
    return (*errors, psycopg.DataError, psycopg.IntegrityError, psycopg.errors.InvalidTextRepresentation)


DATA_ERRORS = _data_errors()


class WriterStats(msgspec.Struct):
    """Counters of the capture pipeline (shown by /readyz and metrics)."""

    queued: int = 0
    written: int = 0
    retried: int = 0
    spilled: int = 0
    replayed: int = 0
    dropped: int = 0
    failures: int = 0
    quarantined: int = 0


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
        self.quarantine = Quarantine(spill_dir.parent / "quarantine")
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

    def _quarantine(self, items: list[tuple[str, dict[str, object]]]) -> None:
        if not items:
            return
        try:
            self.quarantine.add(items)
        except OSError as e:
            log.error("cannot write %d records to quarantine (%s); dropping them", len(items), e)
            self.stats.dropped += len(items)
            return
        self.stats.quarantined += len(items)
        log.error(
            "quarantined %d records the store cannot take (first: %s) in %s",
            len(items),
            items[0][0],
            self.quarantine.folder,
        )

    async def _store_batch(self, batch: list[Record], done: set[str]) -> None:
        """Write a batch; when the store refuses its data (not when it is
        down), split it to quarantine the bad records alone and store the
        rest. Ids quarantined go into `done`."""
        bad = []
        good = []
        for r in batch:
            problem = record_problem(r)
            if problem is None:
                good.append(r)
            elif r.id not in done:
                bad.append((problem, {"record": msgspec.to_builtins(r)}))
                done.add(r.id)
        self._quarantine(bad)
        await self._isolate([r for r in good if r.id not in done], done)

    async def _isolate(self, batch: list[Record], done: set[str]) -> None:
        if not batch:
            return
        try:
            await self._store.write_records(batch)
        except DATA_ERRORS as e:
            if len(batch) == 1:
                done.add(batch[0].id)
                self._quarantine(
                    [(f"{type(e).__name__}: {e}"[:500], {"record": msgspec.to_builtins(batch[0])})]
                )
                return
            mid = len(batch) // 2
            await self._isolate(batch[:mid], done)
            await self._isolate(batch[mid:], done)

    async def flush_once(self) -> int:
        """Write one batch; on failure the batch goes back to the queue front
        (less any record quarantined meanwhile)."""
        if not self._queue:
            return 0
        n = min(self._batch, len(self._queue))
        batch = [self._queue.popleft() for _ in range(n)]
        self._writing = n
        done: set[str] = set()
        try:
            await self._store_batch(batch, done)
        except BaseException as e:
            self._writing = 0
            # Cancelled or failed, the batch goes back: nothing is lost, and a
            # batch that did commit is not stored twice (ids are unique).
            self._queue.extendleft(reversed([r for r in batch if r.id not in done]))
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
        self.stats.written += n - len(done)
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
        """Write spilled records back (one file per call); 0 if none could be.
        A line that does not decode and a record the store refuses are
        quarantined, a file that cannot be read is moved to quarantine:
        replay always gets past them."""
        self.spill.rotate()
        for path in self.spill.pending():
            with self.spill.claim(path) as f:
                if f is None:
                    continue
                total = 0
                done: set[str] = set()
                batch: list[Record] = []
                bad: list[tuple[str, dict[str, object]]] = []
                try:
                    for line in f:
                        try:
                            batch.append(_decode(line))
                        except (msgspec.DecodeError, msgspec.ValidationError) as e:
                            if line.strip():  # (a torn last line after a crash is kept too)
                                bad.append(
                                    (
                                        f"undecodable spill line: {e}",
                                        {"line": line[:100_000].decode(errors="replace")},
                                    )
                                )
                        if len(batch) >= self._batch:
                            await self._store_batch(batch, done)
                            total += len(batch)
                            batch = []
                except OSError as e:
                    log.error("spill file %s is unreadable (%s); moved to quarantine", path.name, e)
                    with contextlib.suppress(OSError):
                        self.quarantine.take_file(path)
                    self.stats.quarantined += 1
                    return 0
                if batch:
                    await self._store_batch(batch, done)
                    total += len(batch)
                self._quarantine(bad)
                path.unlink()
            stored = total - len(done)
            self.stats.replayed += stored
            log.info("replayed %d spilled records from %s", stored, path.name)
            return max(stored, 1)
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
