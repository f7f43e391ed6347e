"""Request-log reads written once for both backends: a filtered page of
records, record counts and spend."""

from __future__ import annotations

from typing import Any

from lectr.store.base import encode_cursor, filter_sql
from lectr.store.primitives import Primitives
from lectr.types import RECORD_FIELDS, LogFilter, Record


def record_select(ts: str) -> str:
    """SELECT of every record field from the request log, `ts` being the SQL
    that reads the ts column as Unix seconds."""
    return "SELECT {} FROM requests".format(", ".join(ts if f == "ts" else f for f in RECORD_FIELDS))


def record_of(r: Any) -> Record:
    return Record(**dict(zip(RECORD_FIELDS, r, strict=True)))


class RequestLog(Primitives):
    """Request-log reads on the backend's `_fetch`."""

    # How a Unix-seconds parameter compares with the ts column, whether the
    # page cursor compares rows (`filter_sql`), and the records' SELECT.
    _ts_param = "%s"
    _row_compare = True
    _select = record_select("ts")

    async def query_requests(
        self, f: LogFilter, cursor: str | None = None, limit: int = 100
    ) -> tuple[list[Record], str | None]:
        where, args = filter_sql(f, cursor, ts=self._ts_param, row_compare=self._row_compare)
        rows = await self._fetch(
            f"{self._select} WHERE {where} ORDER BY ts DESC, id DESC LIMIT %s", (*args, limit + 1)
        )
        records = [record_of(r) for r in rows[:limit]]
        nxt = encode_cursor(records[-1].ts, records[-1].id) if len(rows) > limit else None
        return records, nxt

    async def count_records(self, org_id: str | None = None) -> int:
        if org_id is None:
            rows = await self._fetch("SELECT count(*) FROM requests", ())
        else:
            rows = await self._fetch("SELECT count(*) FROM requests WHERE org_id = %s", (org_id,))
        return int(rows[0][0]) if rows else 0

    async def spend(self, org_id: str, feature: str | None, since: float) -> float:
        """USD recorded for an org (or one feature) since a Unix time."""
        query = (
            "SELECT coalesce(sum(cost_usd), 0) FROM requests WHERE org_id = %s AND ts >= " + self._ts_param
        )
        args: tuple[Any, ...] = (org_id, since)
        if feature is not None:
            query += " AND feature = %s"
            args += (feature,)
        rows = await self._fetch(query, args)
        return float(rows[0][0]) if rows else 0.0
