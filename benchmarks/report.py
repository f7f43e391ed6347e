"""Results of a run: derived figures (added over direct, goals), the raw
`results.json`, the Markdown tables (`results.md`, and `benchmarks/README.md`
between its markers after a full run) and the PNG plots."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parent / "README.md"
BEGIN = "<!-- bench-results:begin (written by python -m benchmarks --full) -->"
END = "<!-- bench-results:end -->"
MAIN = "lectr"
PLOTS = ("latency.png", "throughput.png", "streaming.png", "memory.png")


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _f(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:,.{digits}f}"


def derive(r: dict[str, Any]) -> None:
    """Added-over-direct figures and the goal verdicts, in place."""
    base = r["targets"].get("direct", {})
    zero_rules = r["extras"].get("lectr-0-rules", {})
    for group in (r["targets"], r["extras"]):
        for t in group.values():
            added: dict[str, Any] = {}
            for c, lat in (t.get("latency") or {}).items():
                b = _get(base, "latency", c)
                if b:
                    added[f"p50_c{c}"] = lat["p50"] - b["p50"]
                    added[f"p90_c{c}"] = lat["p90"] - b["p90"]
                    added[f"p99_c{c}"] = lat["p99"] - b["p99"]
                z = _get(zero_rules, "latency", c)
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


FLOOR = "granian-proxy"
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
        v, f = _get(t, *path), _get(floor, *path)
        if v is not None and f is not None:
            out[key] = v - f
    return out


def _peak_rps(t: dict[str, Any] | None) -> float | None:
    tp = _get(t, "throughput")
    return max(x["rps"] for x in tp.values()) if tp else None


def goals(r: dict[str, Any]) -> list[dict[str, Any]]:
    T = r["targets"]
    lt, ng, ll = T.get(MAIN), T.get("nginx"), T.get("litellm")
    out: list[dict[str, Any]] = []

    def goal(text: str, value: Any, shown: str, ok: bool | None) -> None:
        out.append({"goal": text, "value": value, "shown": shown, "met": ok})

    c_l = _get(lt, "throughput", "32", "cpu_us_per_req")
    c_n = _get(ng, "throughput", "32", "cpu_us_per_req")
    ratio = c_l / c_n if c_l and c_n else None
    goal(
        "CPU per request ≤ 5× nginx's (32 connections)",
        ratio,
        f"{_f(c_l, 0)} µs vs {_f(c_n, 0)} µs = {_f(ratio, 1)}×",
        None if ratio is None else ratio <= 5,
    )
    p_l, p_ll = _peak_rps(lt), _peak_rps(ll)
    ratio = p_l / p_ll if p_l and p_ll else None
    goal(
        "throughput ≥ 100× LiteLLM's (peak of 32/64 connections, 1 worker each)",
        ratio,
        f"{_f(p_l, 0)} vs {_f(p_ll, 0)} req/s = {_f(ratio, 0)}×",
        None if ratio is None else ratio >= 100,
    )
    a = _get(lt, "added", "p50_c1")
    goal("added p50 at 1 connection ≤ 0.1 ms", a, f"{_f(a)} ms", None if a is None else a <= 0.1)
    a = _get(lt, "added", "p99_c4")
    goal("added p99 at 4 connections ≤ 0.5 ms", a, f"{_f(a)} ms", None if a is None else a <= 0.5)
    a = _get(lt, "added", "stream_first_token_ms")
    goal("streaming: added first token ≤ 0.3 ms", a, f"{_f(a)} ms", None if a is None else a <= 0.3)
    a = _get(lt, "added", "stream_chunk_us")
    goal("streaming: added per chunk ≤ 20 µs", a, f"{_f(a, 0)} µs", None if a is None else a <= 20)
    cap = _get(lt, "streaming", "capture")
    share = cap["with_usage"] / cap["expected"] if cap and cap["expected"] else None
    goal(
        "streaming: usage captured on 100 %",
        share,
        f"{cap['with_usage']}/{cap['expected']}" if cap else "–",
        None if share is None else share >= 1.0,
    )
    m = _get(lt, "memory")
    peak = max(
        [
            x
            for x in (
                _get(m, "rss_during_max_mib"),
                *(v["rss_peak_mib"] for v in (_get(lt, "throughput") or {}).values()),
            )
            if x
        ],
        default=None,
    )
    goal(
        "RSS ≤ 64 MiB under load (the serving worker)",
        peak,
        f"{_f(peak, 1)} MiB",
        None if peak is None else peak <= 64,
    )
    flat, reached = _get(m, "flat"), (_get(m, "requests") or 0) >= 1_000_000
    goal(
        "RSS flat across 1 M requests",
        _get(m, "growth_after_10pct_mib"),
        f"{_f(_get(m, 'growth_after_10pct_mib'), 1)} MiB over {_f(_get(m, 'requests'))} requests"
        + ("" if reached or m is None else " (1 M not reached within the time cap: undecided)"),
        # Flat short of 1 M decides nothing; growing before it is a miss.
        None if flat is None or (flat and not reached) else bool(flat),
    )
    for placement in ("isolated", "shared"):
        for variant in ("storage", "backlog"):
            s = _get(r, "ingest_latency", "placements", placement)
            worse = None if s is None else _changed(s, variant)
            goal(
                f"latency unchanged vs no storage while writing to PostgreSQL "
                f"{'its own records' if variant == 'storage' else 'and replaying a backlog'} "
                f"({placement} placement)",
                worse,
                "–" if worse is None else "; ".join(worse) or "every shift within the no-storage spread",
                None if worse is None else not worse,
            )
    return out


# Unchanged = for each figure, the median over the rounds moved (storage vs
# none) by no more than the no-storage rounds spread among themselves.
INGEST_FIGURES = ("p50_c1", "p99_c1", "p50_c4", "p99_c4")
INGEST_VARIANTS = {"storage": "PostgreSQL", "backlog": "PostgreSQL + replaying a backlog", "none": "none"}


def _changed(s: dict[str, Any], variant: str) -> list[str]:
    out = []
    for k in INGEST_FIGURES:
        none = s["none"][k]
        shift = s[variant][k]["median"] - none["median"]
        if shift > none["max"] - none["min"]:
            out.append(f"{k.replace('_c', ' @')} +{_f(shift)} ms (spread {_f(none['max'] - none['min'])})")
    return out


def ingest_latency_md(il: dict[str, Any]) -> list[str]:
    L = [
        "",
        "**Latency while the writer ingests into PostgreSQL, vs no storage** "
        f"(ms; median of {il['rounds']} alternating rounds of {il['seconds']:g} s, range in brackets; "
        "*isolated*: Lectr's writer process and PostgreSQL on one core, everything else on the other; "
        "records written/s: the gateway's own, plus the backlog's while it is replayed)",
        "",
        "| placement | storage | 1 conn p50 | p99 | 4 conns p50 | p99 | req/s @4 | records written/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for placement, s in il["placements"].items():
        for v, label in INGEST_VARIANTS.items():
            x = s[v]
            cells = " | ".join(
                f"{_f(x[k]['median'])} [{_f(x[k]['min'])}–{_f(x[k]['max'])}]" for k in INGEST_FIGURES
            )
            L.append(
                f"| {placement} | {label} | {cells} | "
                f"{_f(x['rps_c4']['median'], 0)} | {_f(x['written_per_s'], 0)} |"
            )
    return L


# --- Markdown ---------------------------------------------------------------


def markdown(r: dict[str, Any], images: str) -> str:
    m, v = r["machine"], r["versions"]
    L: list[str] = []
    w = L.append
    w(f"### {r['date'][:10]} ({r['mode']} run)")
    w("")
    w(
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory']}, {m['os']}, kernel {m['kernel']}. "
        f"Load average before / after: {' '.join(map(str, m['loadavg_before']))} / "
        f"{' '.join(map(str, m.get('loadavg_after', [])))}."
    )
    lv = v["lectr"]
    w(
        f"Versions: Lectr {lv['version']} ({lv['git']}, {lv['build']}), Python {v['python']}, "
        f"granian {v['granian']}, nginx {v['nginx']}, {v['wrk']}"
        + (f", LiteLLM {v['litellm']} ({v['litellm_server']})" if "litellm" in v else "")
        + "."
    )
    w("")
    T = r["targets"]
    w("**Latency, non-streamed** (ms; wrk, one thread; *added* = minus direct at the same percentile)")
    w("")
    w("| target | 1 conn p50 | p90 | p99 | added p50 | 4 conns p50 | p90 | p99 | added p99 |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, t in T.items():
        l1, l4, a = _get(t, "latency", "1"), _get(t, "latency", "4"), t.get("added", {})
        w(
            f"| {name} | {_f(_get(l1, 'p50'))} | {_f(_get(l1, 'p90'))} | {_f(_get(l1, 'p99'))} | "
            f"{_f(a.get('p50_c1'))} | {_f(_get(l4, 'p50'))} | {_f(_get(l4, 'p90'))} | "
            f"{_f(_get(l4, 'p99'))} | {_f(a.get('p99_c4'))} |"
        )
    w("")
    w(
        "**Throughput and cost** (req/s; CPU = user + system time of the target's process tree per request, "
        "from /proc; RSS = largest process of the tree, peak while loaded; for *direct* the figures are the "
        "fixed upstream's own)"
    )
    w("")
    w(
        "| target | 32 conns req/s | 64 conns req/s | CPU µs/req @32 | CPU µs/req @1 "
        "| upstream CPU µs/req @32 | RSS idle MiB | RSS peak MiB | errors |"
    )
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, t in T.items():
        t32, t64, l1 = _get(t, "throughput", "32"), _get(t, "throughput", "64"), _get(t, "latency", "1")
        runs = [*(t.get("throughput") or {}).values(), *(t.get("latency") or {}).values()]
        errs = sum(x["errors"] + x["non2xx"] for x in runs)
        peak = max((x["rss_peak_mib"] for x in runs), default=None)
        w(
            f"| {name} | {_f(_get(t32, 'rps'), 0)} | {_f(_get(t64, 'rps'), 0)} | "
            f"{_f(_get(t32, 'cpu_us_per_req'), 0)} | {_f(_get(l1, 'cpu_us_per_req'), 0)} | "
            f"{_f(_get(t32, 'upstream_cpu_us_per_req'), 0)} | {_f(t.get('rss_idle_mib'), 1)} | "
            f"{_f(peak, 1)} | {errs} |"
        )
    w("")
    floored = [(n, t["above_floor"]) for n, t in T.items() if t.get("above_floor")]
    if floored:
        w(
            f"**Above granian's floor** (each figure minus {FLOOR}'s in this run: granian and Lectr's "
            "upstream client passing requests through with nothing else; what Lectr's own work costs)"
        )
        w("")
        w("| target | 1 conn p50 ms | 4 conns p99 ms | CPU µs/req @32 | first token ms | chunk transit µs |")
        w("|---|---:|---:|---:|---:|---:|")
        for name, a in floored:
            w(
                f"| {name} | {_f(a.get('p50_c1'))} | {_f(a.get('p99_c4'))} | "
                f"{_f(a.get('cpu_us_per_req_c32'), 0)} | {_f(a.get('stream_first_token_ms'))} | "
                f"{_f(a.get('stream_chunk_us'), 0)} |"
            )
        w("")
    w(
        "**Streaming fidelity** (20 chunks × 5 ms, one stream at a time; medians; *chunk transit* = arrival "
        "at the client minus the upstream's send stamp in the chunk)"
    )
    w("")
    w(
        "| target | TTFB ms | added | first token ms | added | [DONE] ms | added | chunk transit µs | "
        "added per chunk µs | events | usage captured |"
    )
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, t in T.items():
        s, a = t.get("streaming"), t.get("added", {})
        if not s:
            continue
        cap = s.get("capture")
        w(
            f"| {name} | {_f(s['ttfb_ms'])} | {_f(a.get('stream_ttfb_ms'))} | {_f(s['first_token_ms'])} | "
            f"{_f(a.get('stream_first_token_ms'))} | {_f(s['done_ms'], 2)} | "
            f"{_f(a.get('stream_done_ms'), 2)} | "
            f"{_f(s['transit_us_p50'], 0)} | {_f(a.get('stream_chunk_us'), 0)} | {s['events']} | "
            + (f"{cap['with_usage']}/{cap['expected']}" if cap else "n/a")
            + " |"
        )
    proto_rows = [
        (name, proto, ps, t.get("added", {}))
        for name, t in T.items()
        for proto, ps in ((t.get("streaming") or {}).get("protocols") or {}).items()
    ]
    if proto_rows:
        w("")
        w("Agent-protocol streams (the same 20 deltas as OpenAI Responses and Anthropic Messages events):")
        w("")
        w(
            "| target | protocol | first token ms | added | final event ms | added | "
            "event transit µs | added per event µs | usage captured |"
        )
        w("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for name, proto, ps, a in proto_rows:
            cap = ps.get("capture")
            w(
                f"| {name} | {proto} | {_f(ps['first_token_ms'])} | {_f(a.get(f'{proto}_first_token_ms'))} | "
                f"{_f(ps['done_ms'], 2)} | {_f(a.get(f'{proto}_done_ms'), 2)} | "
                f"{_f(ps['transit_us_p50'], 0)} | {_f(a.get(f'{proto}_event_us'), 0)} | "
                + (f"{cap['with_usage']}/{cap['expected']}" if cap else "n/a")
                + " |"
            )
    mem = _get(T, MAIN, "memory")
    if mem:
        w("")
        w(
            f"**Memory under sustained load** (Lectr, 32 connections for {mem['seconds']:.0f} s: "
            f"{mem['requests']:,} requests at {mem['rps']:,.0f} req/s, {mem['errors']} errors)"
        )
        w("")
        w("| RSS MiB | before | max during | after |")
        w("|---|---:|---:|---:|")
        w(
            f"| serving worker | {_f(mem['rss_before_mib'], 1)} | {_f(mem['rss_during_max_mib'], 1)} | "
            f"{_f(mem['rss_after_mib'], 1)} |"
        )
        w(
            f"| process tree | {_f(mem['rss_tree_before_mib'], 1)} | {_f(mem['rss_tree_max_mib'], 1)} | "
            f"{_f(mem['rss_tree_after_mib'], 1)} |"
        )
        w("")
        w(
            f"Growth from 10 % into the run to its end: {_f(mem['growth_after_10pct_mib'], 1)} MiB "
            f"({'flat' if mem['flat'] else 'NOT flat'}). Writer before → after: {mem['writer_before']} → "
            f"{mem['writer_after']}."
        )
    X = r.get("extras") or {}
    if X:
        w("")
        w("**Lectr variants** (ms; *vs 0 rules* = minus the variant with no rules and no limits)")
        w("")
        w(
            "| variant | 1 conn p50 | added vs direct | vs 0 rules | 4 conns p99 | vs 0 rules "
            "| CPU µs/req @1 |"
        )
        w("|---|---:|---:|---:|---:|---:|---:|")
        for name, t in X.items():
            a = t.get("added", {})
            w(
                f"| {name} ({t.get('notes', '')}) | {_f(_get(t, 'latency', '1', 'p50'))} | "
                f"{_f(a.get('p50_c1'))} | "
                f"{_f(a.get('p50_c1_vs_0_rules'))} | {_f(_get(t, 'latency', '4', 'p99'))} | "
                f"{_f(a.get('p99_c4_vs_0_rules'))} | {_f(_get(t, 'latency', '1', 'cpu_us_per_req'), 0)} |"
            )
    ing = r.get("ingest")
    if ing:
        w("")
        w(
            f"**Record writer ingest** ({ing['records']:,} records queued at once, "
            f"batches of {ing['batch']}, "
            f"through `RecordWriter`): SQLite {ing['sqlite_per_s']:,.0f} records/s, "
            f"PostgreSQL {ing['postgres_per_s']:,.0f} records/s."
        )
    if r.get("ingest_latency"):
        L.extend(ingest_latency_md(r["ingest_latency"]))
    w("")
    w("**Goals**")
    w("")
    w("| goal | figure | met |")
    w("|---|---|---|")
    for g in r["goals"]:
        met = "–" if g["met"] is None else ("yes" if g["met"] else "**no**")
        w(f"| {g['goal']} | {g['shown']} | {met} |")
    if r.get("failures"):
        w("")
        w("**Failures**: " + ", ".join(r["failures"]))
    w("")
    w(" ".join(f"![{p[:-4]}]({images}{p})" for p in PLOTS))
    return "\n".join(L) + "\n"


def commands_md(r: dict[str, Any]) -> str:
    L = ["", "Commands of this run:", "", "```"]
    for k, v in r["commands"].items():
        if isinstance(v, dict):
            L += [f"{k2}: {v2}" for k2, v2 in v.items()]
        else:
            L.append(f"{k}: {v}")
    L.append("```")
    return "\n".join(L) + "\n"


# --- plots --------------------------------------------------------------------


def plots(r: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    T = {**r["targets"], **r.get("extras", {})}
    names = list(T)
    colors = {n: plt.get_cmap("tab10")(i % 10) for i, n in enumerate(names)}

    # Latency percentiles per target.
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, c in zip(axes, ("1", "4"), strict=True):
        shown = [n for n in names if _get(T[n], "latency", c)]
        width = 0.8 / 3
        for j, q in enumerate(("p50", "p90", "p99")):
            vals = [T[n]["latency"][c][q] for n in shown]
            ax.bar([i + (j - 1) * width for i in range(len(shown))], vals, width, label=q)
        ax.set_xticks(range(len(shown)), shown, rotation=30, ha="right")
        ax.set_yscale("log")
        ax.set_ylabel("ms (log)")
        ax.set_title(f"non-streamed latency, {c} connection{'s' if c != '1' else ''}")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    plt.close(fig)

    # Throughput and CPU per request per target.
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    shown = [n for n in r["targets"] if _get(T[n], "throughput")]
    for j, c in enumerate(("32", "64")):
        axes[0].bar(
            [i + (j - 0.5) * 0.4 for i in range(len(shown))],
            [T[n]["throughput"][c]["rps"] for n in shown],
            0.4,
            label=f"{c} connections",
        )
    axes[0].set_yscale("log")
    axes[0].set_ylabel("requests/s (log)")
    axes[0].set_title("throughput, one worker each")
    axes[0].legend()
    axes[0].set_xticks(range(len(shown)), shown, rotation=30, ha="right")
    axes[1].bar(range(len(shown)), [T[n]["throughput"]["32"]["cpu_us_per_req"] or 0 for n in shown])
    axes[1].set_yscale("log")
    axes[1].set_ylabel("µs CPU per request (log)")
    axes[1].set_title("CPU time per request, 32 connections")
    axes[1].set_xticks(range(len(shown)), shown, rotation=30, ha="right")
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)
    plt.close(fig)

    # Streaming timeline: when each chunk arrived, and its transit time.
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for n in r["targets"]:
        s = _get(T[n], "streaming")
        if not s or not s["arrival_ms_by_chunk"]:
            continue
        xs = list(range(1, len(s["arrival_ms_by_chunk"]) + 1))
        axes[0].plot(xs, s["arrival_ms_by_chunk"], marker=".", label=n, color=colors[n])
        axes[1].plot(xs, s["transit_us_by_chunk"], marker=".", label=n, color=colors[n])
    axes[0].set_xlabel("content chunk")
    axes[0].set_ylabel("ms since the request was sent (median)")
    axes[0].set_title("streaming timeline, 20 chunks × 5 ms")
    axes[0].legend()
    axes[1].set_xlabel("content chunk")
    axes[1].set_ylabel("µs from upstream send to client (median, log)")
    axes[1].set_yscale("log")
    axes[1].set_title("per-chunk transit")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(out / "streaming.png", dpi=110)
    plt.close(fig)

    # RSS across the long run.
    fig, ax = plt.subplots(figsize=(8, 4))
    mem = _get(r["targets"], MAIN, "memory")
    if mem and mem["samples"]:
        prog = mem.get("progress") or [(0.0, 0), (mem["seconds"], mem["requests"])]

        def served(at: float) -> float:
            """Requests served by `at` seconds, interpolated between wrk segments."""
            for (t0, n0), (t1, n1) in itertools.pairwise(prog):
                if at <= t1:
                    return n0 + (n1 - n0) * (max(at, t0) - t0) / ((t1 - t0) or 1)
            return prog[-1][1]

        xs = [served(s[0]) for s in mem["samples"]]
        ax.plot(xs, [s[1] / 2**20 for s in mem["samples"]], label="serving worker")
        ax.plot(xs, [s[2] / 2**20 for s in mem["samples"]], label="process tree")
        ax.axhline(64, linestyle="--", color="grey", label="64 MiB goal")
        ax.set_ylim(bottom=0)
        ax.legend()
    ax.set_xlabel("requests served")
    ax.set_ylabel("RSS MiB")
    ax.set_title("Lectr memory under sustained load")
    fig.tight_layout()
    fig.savefig(out / "memory.png", dpi=110)
    plt.close(fig)


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
