"""Issue 18's goals, each figure of Lectr shown against nginx's and against
granian's floor (granian-proxy) in the same run: the ratio says how far a
goal is, the floor how much of it granian itself costs."""

from __future__ import annotations

from typing import Any

from benchmarks.figures import FLOOR, MAIN, fmt, get

# (figure, its path in a target's results, unit, kind, bound, goal text);
# kind "ratio": Lectr ≤ bound × nginx, "margin": Lectr ≤ nginx + bound,
# "absolute": Lectr ≤ bound.
_ROWS: tuple[tuple[str, tuple[str, ...], str, str, float, str], ...] = (
    (
        "CPU per request, 32 connections",
        ("throughput", "32", "cpu_us_per_req"),
        "µs",
        "ratio",
        5.0,
        "≤ 5× nginx",
    ),
    ("added p50, 1 connection", ("added", "p50_c1"), "ms", "absolute", 0.15, "≤ +0.15 ms"),
    ("p99, 4 connections", ("latency", "4", "p99"), "ms", "margin", 1.0, "≤ nginx's + 1 ms"),
    ("streaming: added first token", ("added", "stream_first_token_ms"), "ms", "absolute", 0.3, "≤ 0.3 ms"),
    ("streaming: added per chunk", ("added", "stream_chunk_us"), "µs", "absolute", 30.0, "≤ 30 µs"),
)


def ratios(r: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per figure: Lectr, nginx, the floor, Lectr ÷ each, the goal, met."""
    T = r["targets"]
    lt, ng, fl = T.get(MAIN), T.get("nginx"), T.get(FLOOR)
    out = []
    for name, path, unit, kind, bound, text in _ROWS:
        v, n, f = get(lt, *path), get(ng, *path), get(fl, *path)
        if v is None:
            continue
        if kind == "ratio":
            met = None if n is None else v <= bound * n
        elif kind == "margin":
            met = None if n is None else v <= n + bound
        else:
            met = v <= bound
        out.append(
            {
                "figure": name,
                "unit": unit,
                "lectr": v,
                "nginx": n,
                "floor": f,
                "x_nginx": v / n if n and n > 0 else None,
                "x_floor": v / f if f and f > 0 else None,
                "goal": text,
                "met": met,
            }
        )
    return out


def ratios_md(rows: list[dict[str, Any]]) -> list[str]:
    """The table, in Markdown."""
    if not rows:
        return []
    L = [
        "**Issue 18's goals, against nginx and granian's floor** (the same figures as above; "
        "× = Lectr's figure divided by nginx's or by granian-proxy's; an *added* figure is over direct)",
        "",
        "| figure | Lectr | nginx | floor | × nginx | × floor | goal | met |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for g in rows:
        digits = 0 if g["unit"] == "µs" else 3
        met = "–" if g["met"] is None else ("yes" if g["met"] else "**no**")
        L.append(
            f"| {g['figure']} ({g['unit']}) | {fmt(g['lectr'], digits)} | {fmt(g['nginx'], digits)} | "
            f"{fmt(g['floor'], digits)} | {fmt(g['x_nginx'], 1)} | {fmt(g['x_floor'], 1)} | "
            f"{g['goal']} | {met} |"
        )
    return L
