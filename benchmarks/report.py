"""Results of a run: derived figures (added over direct, above granian's
floor, goals), then the raw `results.json`, the Markdown tables
(`benchmarks.tables`: `results.md`, and `benchmarks/README.md` between its
markers after a full run) and the plots (`benchmarks.plots`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.figures import FLOOR, MAIN, fmt, get
from benchmarks.plots import plots
from benchmarks.ratios import ratios
from benchmarks.tables import changed, commands_md, markdown

README = Path(__file__).resolve().parent / "README.md"
BEGIN = "<!-- bench-results:begin (written by python -m benchmarks --full) -->"
END = "<!-- bench-results:end -->"


def derive(r: dict[str, Any]) -> None:
    """Added-over-direct figures and the goal verdicts, in place."""
    base = r["targets"].get("direct", {})
    zero_rules = r["extras"].get("lectr-0-rules", {})
    for group in (r["targets"], r["extras"]):
        for t in group.values():
            added: dict[str, Any] = {}
            for c, lat in (t.get("latency") or {}).items():
                b = get(base, "latency", c)
                if b:
                    added[f"p50_c{c}"] = lat["p50"] - b["p50"]
                    added[f"p90_c{c}"] = lat["p90"] - b["p90"]
                    added[f"p99_c{c}"] = lat["p99"] - b["p99"]
                z = get(zero_rules, "latency", c)
                if z and group is r["extras"]:
                    added[f"p50_c{c}_vs_0_rules"] = lat["p50"] - z["p50"]
                    added[f"p99_c{c}_vs_0_rules"] = lat["p99"] - z["p99"]
            s, bs = t.get("streaming"), base.get("streaming")
            if s and bs:
                for k in ("ttfb_ms", "first_token_ms", "done_ms"):
                    added[f"stream_{k}"] = s[k] - bs[k]
                added["stream_chunk_us"] = s["transit_us_p50"] - bs["transit_us_p50"]
                added["stream_chunk_us_p90"] = s["transit_us_p90"] - bs["transit_us_p90"]
                for proto, ps in (s.get("protocols") or {}).items():
                    bp = (bs.get("protocols") or {}).get(proto)
                    if bp:
                        added[f"{proto}_first_token_ms"] = ps["first_token_ms"] - bp["first_token_ms"]
                        added[f"{proto}_done_ms"] = ps["done_ms"] - bp["done_ms"]
                        added[f"{proto}_event_us"] = ps["transit_us_p50"] - bp["transit_us_p50"]
            t["added"] = added
    floor = r["targets"].get(FLOOR)
    for group in (r["targets"], r["extras"]):
        for name, t in group.items():
            if floor and name.startswith("lectr"):
                t["above_floor"] = _above(t, floor)
    r["goals"] = goals(r)
    r["ratios"] = ratios(r)


# (key, path to the figure): what "above granian's floor" is shown for.
_FLOOR_FIGURES = (
    ("p50_c1", ("latency", "1", "p50")),
    ("p99_c4", ("latency", "4", "p99")),
    ("cpu_us_per_req_c32", ("throughput", "32", "cpu_us_per_req")),
    ("stream_first_token_ms", ("streaming", "first_token_ms")),
    ("stream_chunk_us", ("streaming", "transit_us_p50")),
)


def _above(t: dict[str, Any], floor: dict[str, Any]) -> dict[str, Any]:
    """A target's figures minus granian's pass-through floor's, where both have them."""
    out: dict[str, Any] = {}
    for key, path in _FLOOR_FIGURES:
        v, f = get(t, *path), get(floor, *path)
        if v is not None and f is not None:
            out[key] = v - f
    return out


def _peak_rps(t: dict[str, Any] | None) -> float | None:
    tp = get(t, "throughput")
    return max(x["rps"] for x in tp.values()) if tp else None


def goals(r: dict[str, Any]) -> list[dict[str, Any]]:
    T = r["targets"]
    lt, ng, ll = T.get(MAIN), T.get("nginx"), T.get("litellm")
    out: list[dict[str, Any]] = []

    def goal(text: str, value: Any, shown: str, ok: bool | None) -> None:
        out.append({"goal": text, "value": value, "shown": shown, "met": ok})

    c_l = get(lt, "throughput", "32", "cpu_us_per_req")
    c_n = get(ng, "throughput", "32", "cpu_us_per_req")
    ratio = c_l / c_n if c_l and c_n else None
    goal(
        "CPU per request ≤ 5× nginx's (32 connections)",
        ratio,
        f"{fmt(c_l, 0)} µs vs {fmt(c_n, 0)} µs = {fmt(ratio, 1)}×",
        None if ratio is None else ratio <= 5,
    )
    p_l, p_ll = _peak_rps(lt), _peak_rps(ll)
    ratio = p_l / p_ll if p_l and p_ll else None
    goal(
        "throughput ≥ 100× LiteLLM's (peak of 32/64 connections, 1 worker each)",
        ratio,
        f"{fmt(p_l, 0)} vs {fmt(p_ll, 0)} req/s = {fmt(ratio, 0)}×",
        None if ratio is None else ratio >= 100,
    )
    a = get(lt, "added", "p50_c1")
    goal("added p50 at 1 connection ≤ 0.1 ms", a, f"{fmt(a)} ms", None if a is None else a <= 0.1)
    a = get(lt, "added", "p99_c4")
    goal("added p99 at 4 connections ≤ 0.5 ms", a, f"{fmt(a)} ms", None if a is None else a <= 0.5)
    a = get(lt, "added", "stream_first_token_ms")
    goal("streaming: added first token ≤ 0.3 ms", a, f"{fmt(a)} ms", None if a is None else a <= 0.3)
    a = get(lt, "added", "stream_chunk_us")
    goal("streaming: added per chunk ≤ 20 µs", a, f"{fmt(a, 0)} µs", None if a is None else a <= 20)
    cap = get(lt, "streaming", "capture")
    share = cap["with_usage"] / cap["expected"] if cap and cap["expected"] else None
    goal(
        "streaming: usage captured on 100 %",
        share,
        f"{cap['with_usage']}/{cap['expected']}" if cap else "–",
        None if share is None else share >= 1.0,
    )
    m = get(lt, "memory")
    peak = max(
        [
            x
            for x in (
                get(m, "rss_during_max_mib"),
                *(v["rss_peak_mib"] for v in (get(lt, "throughput") or {}).values()),
            )
            if x
        ],
        default=None,
    )
    goal(
        "RSS ≤ 64 MiB under load (the serving worker)",
        peak,
        f"{fmt(peak, 1)} MiB",
        None if peak is None else peak <= 64,
    )
    flat, reached = get(m, "flat"), (get(m, "requests") or 0) >= 1_000_000
    goal(
        "RSS flat across 1 M requests",
        get(m, "growth_after_10pct_mib"),
        f"{fmt(get(m, 'growth_after_10pct_mib'), 1)} MiB over {fmt(get(m, 'requests'))} requests"
        + ("" if reached or m is None else " (1 M not reached within the time cap: undecided)"),
        # Flat short of 1 M decides nothing; growing before it is a miss.
        None if flat is None or (flat and not reached) else bool(flat),
    )
    for placement in ("isolated", "shared"):
        for variant in ("storage", "backlog"):
            s = get(r, "ingest_latency", "placements", placement)
            worse = None if s is None else changed(s, variant)
            goal(
                f"latency unchanged vs no storage while writing to PostgreSQL "
                f"{'its own records' if variant == 'storage' else 'and replaying a backlog'} "
                f"({placement} placement)",
                worse,
                "–" if worse is None else "; ".join(worse) or "every shift within the no-storage spread",
                None if worse is None else not worse,
            )
    return out


def finish(r: dict[str, Any], out: Path, update_readme: bool) -> None:
    derive(r)
    try:
        plots(r, out)
    except Exception as e:
        r["failures"]["plots"] = f"{type(e).__name__}: {e}"
    (out / "results.json").write_text(json.dumps(r, indent=1, default=str) + "\n")
    (out / "results.md").write_text(markdown(r, "") + commands_md(r))
    if update_readme and README.exists():
        text = README.read_text()
        rel = out.resolve().relative_to(README.parent) if out.resolve().is_relative_to(README.parent) else out
        block = f"{BEGIN}\n{markdown(r, f'{rel}/')}{commands_md(r)}{END}"
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            text = head + block + rest.split(END, 1)[1]
        else:
            text = text.rstrip() + "\n\n## Latest results\n\n" + block + "\n"
        README.write_text(text)
