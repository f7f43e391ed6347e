"""How the CLI prints: aligned tables and compact values."""

from __future__ import annotations

from datetime import UTC, datetime


def when(ts: float | None) -> str:
    """A Unix time as UTC `YYYY-MM-DD HH:MM:SS`, or `-`."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def table(rows: list[list[str]], header: list[str]) -> None:
    """Print rows under a header, each column as wide as its widest cell."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def fmt(v: float | int | None, spec: str = "") -> str:
    return "-" if v is None else format(v, spec)


def pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def money(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"
