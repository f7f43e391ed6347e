"""How the PostgreSQL store encodes records for binary COPY: timestamps rounded
exactly as datetime rounds them, and a wire type for every record field."""

from __future__ import annotations

import random
import typing
from datetime import UTC, datetime, timedelta

import pytest

from lectr.store import postgres_writes
from lectr.types import RECORD_FIELDS, Record

EPOCH_2000 = datetime(2000, 1, 1, tzinfo=UTC)


def via_datetime(ts: float) -> int:
    return (datetime.fromtimestamp(ts, UTC) - EPOCH_2000) // timedelta(microseconds=1)


def test_timestamps_round_as_datetime_does() -> None:
    rng = random.Random(3)
    values = [rng.uniform(1.6e9, 1.9e9) for _ in range(200_000)]
    values += [rng.uniform(0, 10) for _ in range(20_000)]
    # Exact halves of a microsecond (half to even), values just below a whole
    # second (the rounding carries), whole seconds, the epochs, negatives.
    values += [
        0.0,
        0.5e-6,
        1.5e-6,
        2.5e-6,
        0.9999995,
        1.9999999,
        946_684_800.0,
        1_700_000_000.0,
        1_700_000_000.9999996,
        1_700_000_000.0000005,
        -0.5e-6,
        -1.5,
        -86_400.25,
    ]
    values += [int(v) + k / 1e6 + 0.5e-6 for v in values[:1000] for k in (0, 1, 999_998)]
    bad = [v for v in values if postgres_writes.pg_micros(v) != via_datetime(v)]
    assert bad == []


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_impossible_timestamps_fail_as_before(bad: float) -> None:
    with pytest.raises((ValueError, OverflowError)):
        postgres_writes.pg_micros(bad)
    with pytest.raises((ValueError, OverflowError)):
        via_datetime(bad)


def test_every_record_field_has_its_wire_type() -> None:
    hints = typing.get_type_hints(Record)
    for field, wire in zip(RECORD_FIELDS, postgres_writes._COPY_TYPES, strict=True):
        base = {t for t in typing.get_args(hints[field]) if t is not type(None)} or {hints[field]}
        expected = {
            str: "text",
            bool: "bool",
            int: "int2" if field == "status_code" else "int4",
            float: "int8" if field == "ts" else "float8",
        }[base.pop()]
        assert wire == expected, field
    assert set(postgres_writes._TYPES) <= set(RECORD_FIELDS)
