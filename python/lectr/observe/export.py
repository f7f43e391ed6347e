"""CSV rendering of request records: RFC 4180 quoting, and cells that a
spreadsheet would run as a formula neutralised (client-controlled strings such
as feature tags may start with `=`, `+`, `-` or `@`)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from lectr.types import RECORD_FIELDS, LogFilter, Record

COLUMNS = ("time_utc", *RECORD_FIELDS)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> object:
    """A cell value that no spreadsheet evaluates: text starting like a
    formula gets a leading apostrophe (OWASP's CSV-injection advice)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    if isinstance(value, bool):
        return int(value)
    return value


def header() -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerow(COLUMNS)
    return buf.getvalue()


def rows(records: Iterable[Record]) -> str:
    """CSV lines for records (CRLF line ends, quoted where needed)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    for r in records:
        when = datetime.fromtimestamp(r.ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        w.writerow([when, *(safe_cell(getattr(r, f)) for f in RECORD_FIELDS)])
    return buf.getvalue()


def filename(org_name: str) -> str:
    """The download's file name for an org (only filename-safe characters)."""
    return f"lectr-{re.sub(r'[^A-Za-z0-9_.-]', '_', org_name)[:64]}-requests.csv"


async def stream(proto: Any, store: Any, f: LogFilter, org_name: str) -> None:
    """Answer an RSGI request with every record matching `f` as CSV, in
    bounded batches (the admin API and the console both send it so)."""
    transport = proto.response_stream(
        200,
        [
            ("content-type", "text/csv; charset=utf-8"),
            ("content-disposition", f'attachment; filename="{filename(org_name)}"'),
        ],
    )
    await transport.send_str(header())
    async for batch in store.export_requests(f):
        await transport.send_str(rows(batch))
