"""`lectr log`: show or export an org's request log."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from lectr.cli.tables import fmt, table, when
from lectr.control import validation as check
from lectr.control.manage import Manager
from lectr.errors import InvalidRequest
from lectr.observe import export

_FILTERS = (
    ("since", "start time (Unix seconds or ISO 8601)"),
    ("until", "end time, exclusive"),
    ("feature", "feature tag"),
    ("task", "task type"),
    ("model", "requested or actual model"),
    ("provider", "provider"),
    ("status", "2xx, 4xx, 5xx, 499 or error"),
    ("rule", "routing rule id"),
)


async def log(m: Manager, a: argparse.Namespace) -> None:
    org = await m.org(a.org)
    f = check.log_filter(org.id, {n: v for n, _ in _FILTERS if (v := getattr(a, n)) is not None})
    if a.csv:
        # A CLI command owns its process: blocking file writes are fine here.
        out = sys.stdout if a.csv == "-" else open(a.csv, "w", newline="", encoding="utf-8")  # noqa: SIM115, ASYNC230
        try:
            out.write(export.header())
            n = 0
            async for batch in m.store.export_requests(f):
                out.write(export.rows(batch))
                n += len(batch)
        finally:
            if out is not sys.stdout:
                out.close()
        if a.csv != "-":
            print(f"wrote {n} records to {a.csv}")
        return
    try:
        page, cursor = await m.store.query_requests(f, a.cursor, a.limit)
    except ValueError as e:
        raise InvalidRequest(str(e)) from None
    table(
        [
            [
                when(r.ts),
                r.feature[:24],
                r.provider,
                (r.model_actual or "-")[:28],
                str(r.status_code),
                fmt(r.latency_ms, ".0f"),
                f"{fmt(r.prompt_tokens)}/{fmt(r.completion_tokens)}",
                fmt(r.cost_usd, ".6f"),
                r.error_category or "",
            ]
            for r in page
        ],
        ["TIME (UTC)", "FEATURE", "PROVIDER", "MODEL", "STATUS", "MS", "TOKENS P/C", "COST $", "ERROR"],
    )
    if cursor:
        print(f"more: --cursor {cursor}")


def add_parsers(sub: Any) -> None:
    lg = sub.add_parser("log", help="show or export an org's request log (newest first)")
    lg.add_argument("org")
    for name, what in _FILTERS:
        lg.add_argument(f"--{name}", help=what)
    lg.add_argument("--limit", type=int, default=50, help="rows to show (default 50)")
    lg.add_argument("--cursor", help="continue from a previous page")
    lg.add_argument(
        "--csv", metavar="FILE", help="export every matching record as CSV to FILE (- for stdout)"
    )
    lg.set_defaults(run=log)
