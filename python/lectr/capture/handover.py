"""The record writer in a process of its own: the serving process hands its
records over a pipe to a child that stores them (`RecordWriter` and the
store), so that no store work holds the serving process's GIL or loop.

The serving side keeps every record until the child reports it stored,
spilled or dropped, so a child that dies loses nothing: a new one is started
and given them again (stores ignore ids they already hold). The child drains
and exits when its input closes: at shutdown, and when the serving process
dies, even by SIGKILL.

Frames both ways are a 4-byte little-endian length and a msgpack body: a list
of records one way, a `Report` the other.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import struct
import sys
from pathlib import Path

import msgspec
import uvloop

from lectr.capture.spill import Quarantine, Spill
from lectr.capture.writer import RecordWriter, WriterStats
from lectr.config import SETTINGS_ENV, Settings, settings_from_env
from lectr.types import Record

log = logging.getLogger("lectr.writer")

SEND_EVERY = 0.01  # the serving side hands records over this often (s)
SEND_MAX = 1000  # ... at most this many at a time (~0.8 ms to encode)
REPORT_EVERY = 0.05  # the child reports progress at most this often (s)
CHILD_DRAIN = 25.0  # the child's shutdown drain, inside the serving side's 30 s
_LEN = struct.Struct("<I")


class Report(msgspec.Struct, array_like=True):
    """The child's progress: how many of the records it received are stored,
    spilled or dropped (always the oldest ones: its queue is first in, first
    out), and its counters."""

    handled: int
    stats: WriterStats


_encode = msgspec.msgpack.Encoder().encode
_decode_records = msgspec.msgpack.Decoder(list[Record]).decode
_decode_report = msgspec.msgpack.Decoder(Report).decode


def _frame(body: bytes) -> bytes:
    return _LEN.pack(len(body)) + body


async def _read_frame(reader: asyncio.StreamReader) -> bytes | None:
    """The next frame's body; None at the end of the stream."""
    try:
        head = await reader.readexactly(_LEN.size)
        (n,) = _LEN.unpack(head)
        return await reader.readexactly(n)
    except asyncio.IncompleteReadError:
        return None


def _add(a: WriterStats, b: WriterStats) -> WriterStats:
    pairs = zip(msgspec.structs.astuple(a), msgspec.structs.astuple(b), strict=True)
    return WriterStats(*(x + y for x, y in pairs))


class WriterProcess:
    """The serving side: a bounded queue of records the child has not yet
    handled, handed over every few milliseconds; keeps a child running."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._max = settings.writer.queue_size
        self._unsent: list[Record] = []
        self._sent: collections.deque[Record] = collections.deque()  # not yet handled by the child
        self._handled = 0  # as last reported by the current child
        self._proc: asyncio.subprocess.Process | None = None
        self._reports: asyncio.Task[None] | None = None
        self._child = WriterStats()  # the current child's counters
        self._past = WriterStats()  # counters of the children that exited
        self._own = WriterStats()  # queued and dropped here, spilled here when no child could
        self._restarts = 0
        self.spill = Spill(Path(settings.data_dir) / "spill")
        self.quarantine = Quarantine(Path(settings.data_dir) / "quarantine")

    @property
    def depth(self) -> int:
        """Records not yet stored or spilled."""
        return len(self._unsent) + len(self._sent)

    @property
    def stats(self) -> WriterStats:
        """Counters over this side and every child so far (a record is
        counted as queued once, here, though the child queues it too)."""
        total = _add(_add(self._own, self._past), self._child)
        total.queued = self._own.queued
        return total

    @property
    def process(self) -> dict[str, int | None]:
        """The child (for /readyz): its pid, how many times one was
        restarted, and how many records it holds not yet stored."""
        return {
            "pid": self._proc.pid if self._proc else None,
            "restarts": self._restarts,
            "holding": len(self._sent),
        }

    def submit(self, record: Record) -> None:
        """Queue a record; never blocks. A full queue drops and counts it
        (the child spills long before that while the store is down)."""
        if self.depth >= self._max:
            self._own.dropped += 1
            dropped = self.stats.dropped
            if dropped == 1 or dropped % 1000 == 0:
                log.error("record queue full (%d): %d records dropped so far", self._max, dropped)
            return
        self._unsent.append(record)
        self._own.queued += 1

    async def run(self) -> None:
        """Start the child, hand it records, restart it if it exits; runs
        until cancelled (the child keeps running for `drain`)."""
        loop = asyncio.get_running_loop()
        backoff = 0.5
        while True:
            started = loop.time()
            try:
                await self._start()
                await self._feed()
                reason = f"exited with code {await self._stop_child()}"
            except OSError as e:
                reason = f"could not start ({e})"
            self._child_gone()
            self._restarts += 1
            backoff = 0.5 if loop.time() - started > 30 else min(backoff * 2, 30.0)
            log.error("record writer process %s; restarting it in %.1fs", reason, backoff)
            if self.depth >= self._max // 2:
                self._spill_all()
            await asyncio.sleep(backoff)

    async def _start(self) -> None:
        env = {**os.environ, SETTINGS_ENV: msgspec.json.encode(self._settings).decode()}
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "lectr.capture.handover",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        assert self._proc.stdout is not None
        self._reports = asyncio.ensure_future(self._read_reports(self._proc.stdout))

    async def _feed(self) -> None:
        """Hand queued records over every SEND_EVERY seconds until the child
        stops reporting (it exited)."""
        while self._reports is not None and not self._reports.done():
            self._send()
            await asyncio.sleep(SEND_EVERY)

    async def _stop_child(self) -> int | None:
        """The child's exit code, once it has exited; killed if it has not
        (its reports stopped making sense): what it held is still here."""
        proc = self._proc
        if proc is None:
            return None
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        return await proc.wait()

    def _send(self) -> None:
        proc = self._proc
        if not self._unsent or proc is None or proc.stdin is None or proc.stdin.is_closing():
            return
        # Capped, so that a backlog (a new child taking over) does not stall the loop.
        batch = self._unsent[:SEND_MAX]
        del self._unsent[:SEND_MAX]
        proc.stdin.write(_frame(_encode(batch)))
        self._sent.extend(batch)

    async def _read_reports(self, stdout: asyncio.StreamReader) -> None:
        while (body := await _read_frame(stdout)) is not None:
            report = _decode_report(body)
            for _ in range(min(report.handled - self._handled, len(self._sent))):
                self._sent.popleft()
            self._handled = report.handled
            self._child = report.stats

    def _child_gone(self) -> None:
        """What the child did not handle goes back to the front of the queue."""
        self._past = _add(self._past, self._child)
        self._child = WriterStats()
        self._unsent[:0] = self._sent
        self._sent.clear()
        self._handled = 0
        self._proc = None
        self._reports = None

    def _spill_all(self) -> None:
        """Keep the queue on disk, for a child to replay, when none can take it."""
        records = self._unsent + list(self._sent)
        if not records:
            return
        try:
            self.spill.append(records)
            self.spill.rotate()  # closed, so a child may claim and replay it
        except OSError as e:
            log.error("cannot spill %d records (%s); keeping them in memory", len(records), e)
            return
        self._unsent.clear()
        self._sent.clear()
        self._own.spilled += len(records)
        log.warning("no record writer process: spilled %d records to %s", len(records), self.spill.folder)

    async def drain(self, timeout: float) -> bool:  # noqa: ASYNC109 - a deadline, not a cancel scope
        """At shutdown: hand over what is queued, close the child's input and
        wait for it to store or spill everything; spill here what it did not.
        False if any record was lost."""
        proc, reports = self._proc, self._reports
        if proc is not None and proc.stdin is not None and reports is not None:
            self._send()
            proc.stdin.close()
            try:
                await asyncio.wait_for(asyncio.shield(reports), timeout)
                await asyncio.wait_for(proc.wait(), 5.0)
            except TimeoutError:
                log.error("record writer process did not finish in %.0fs; stopping it", timeout)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                reports.cancel()
            self._child_gone()
        self._spill_all()
        if self.depth:
            log.error("shutdown: %d records could be neither written nor spilled", self.depth)
        return not self.depth


# --- the child ----------------------------------------------------------------


async def _child(settings: Settings, inp: asyncio.StreamReader, out: int) -> bool:
    """Store the records arriving on `inp`, report progress on `out`; at the
    end of the input, drain and return whether nothing was lost."""
    from lectr.store.base import open_store  # here: the serving side never needs it

    store = open_store(settings)
    writer = RecordWriter(
        store,
        settings.writer.queue_size,
        settings.writer.batch_size,
        settings.writer.flush_interval,
        Path(settings.data_dir) / "spill",
        settings.writer.spill_after_failures,
    )
    received = 0
    last: Report | None = None

    def report() -> None:
        nonlocal last
        now = Report(received - writer.depth, msgspec.structs.replace(writer.stats))
        if now != last:
            with contextlib.suppress(BrokenPipeError):  # the serving side is gone; carry on draining
                os.write(out, _frame(_encode(now)))
            last = now

    async def reporter() -> None:
        while True:
            await asyncio.sleep(REPORT_EVERY)
            report()

    tasks = [asyncio.ensure_future(writer.run()), asyncio.ensure_future(reporter())]
    try:
        while (body := await _read_frame(inp)) is not None:
            records = _decode_records(body)
            for record in records:
                writer.submit(record)
            received += len(records)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        ok = await writer.drain(CHILD_DRAIN)
        report()
        await store.close()
    return ok


def main() -> int:
    # The serving side decides when this ends (by closing our input): a
    # Ctrl-C or SIGTERM to the whole process group must not cut a drain short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Reports go on a private copy of stdout; stray prints go to stderr.
    out = os.dup(1)
    os.dup2(2, 1)
    settings = settings_from_env()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    async def run() -> bool:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=2**26)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
        return await _child(settings, reader, out)

    return 0 if uvloop.run(run()) else 1


if __name__ == "__main__":
    sys.exit(main())
