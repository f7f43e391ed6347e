"""The run's Markdown: the tables of `results.md` and of the README's
results block, the ingest-latency table, and the commands that ran."""

from __future__ import annotations

from typing import Any

from benchmarks.figures import FLOOR, MAIN, PLOTS, fmt, get
from benchmarks.ratios import ratios_md

# Unchanged = for each figure, the median over the rounds moved (storage vs
# none) by no more than the no-storage rounds spread among themselves.
INGEST_FIGURES = ("p50_c1", "p99_c1", "p50_c4", "p99_c4")
INGEST_VARIANTS = {"storage": "PostgreSQL", "backlog": "PostgreSQL + replaying a backlog", "none": "none"}


def changed(s: dict[str, Any], variant: str) -> list[str]:
    out = []
    for k in INGEST_FIGURES:
        none = s["none"][k]
        shift = s[variant][k]["median"] - none["median"]
        if shift > none["max"] - none["min"]:
            out.append(f"{k.replace('_c', ' @')} +{fmt(shift)} ms (spread {fmt(none['max'] - none['min'])})")
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
                f"{fmt(x[k]['median'])} [{fmt(x[k]['min'])}–{fmt(x[k]['max'])}]" for k in INGEST_FIGURES
            )
            L.append(
                f"| {placement} | {label} | {cells} | "
                f"{fmt(x['rps_c4']['median'], 0)} | {fmt(x['written_per_s'], 0)} |"
            )
    return L


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
        l1, l4, a = get(t, "latency", "1"), get(t, "latency", "4"), t.get("added", {})
        w(
            f"| {name} | {fmt(get(l1, 'p50'))} | {fmt(get(l1, 'p90'))} | {fmt(get(l1, 'p99'))} | "
            f"{fmt(a.get('p50_c1'))} | {fmt(get(l4, 'p50'))} | {fmt(get(l4, 'p90'))} | "
            f"{fmt(get(l4, 'p99'))} | {fmt(a.get('p99_c4'))} |"
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
        t32, t64, l1 = get(t, "throughput", "32"), get(t, "throughput", "64"), get(t, "latency", "1")
        runs = [*(t.get("throughput") or {}).values(), *(t.get("latency") or {}).values()]
        errs = sum(x["errors"] + x["non2xx"] for x in runs)
        peak = max((x["rss_peak_mib"] for x in runs), default=None)
        w(
            f"| {name} | {fmt(get(t32, 'rps'), 0)} | {fmt(get(t64, 'rps'), 0)} | "
            f"{fmt(get(t32, 'cpu_us_per_req'), 0)} | {fmt(get(l1, 'cpu_us_per_req'), 0)} | "
            f"{fmt(get(t32, 'upstream_cpu_us_per_req'), 0)} | {fmt(t.get('rss_idle_mib'), 1)} | "
            f"{fmt(peak, 1)} | {errs} |"
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
                f"| {name} | {fmt(a.get('p50_c1'))} | {fmt(a.get('p99_c4'))} | "
                f"{fmt(a.get('cpu_us_per_req_c32'), 0)} | {fmt(a.get('stream_first_token_ms'))} | "
                f"{fmt(a.get('stream_chunk_us'), 0)} |"
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
            f"| {name} | {fmt(s['ttfb_ms'])} | {fmt(a.get('stream_ttfb_ms'))} | {fmt(s['first_token_ms'])} | "
            f"{fmt(a.get('stream_first_token_ms'))} | {fmt(s['done_ms'], 2)} | "
            f"{fmt(a.get('stream_done_ms'), 2)} | "
            f"{fmt(s['transit_us_p50'], 0)} | {fmt(a.get('stream_chunk_us'), 0)} | {s['events']} | "
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
                f"| {name} | {proto} | {fmt(ps['first_token_ms'])} | "
                f"{fmt(a.get(f'{proto}_first_token_ms'))} | "
                f"{fmt(ps['done_ms'], 2)} | {fmt(a.get(f'{proto}_done_ms'), 2)} | "
                f"{fmt(ps['transit_us_p50'], 0)} | {fmt(a.get(f'{proto}_event_us'), 0)} | "
                + (f"{cap['with_usage']}/{cap['expected']}" if cap else "n/a")
                + " |"
            )
    mem = get(T, MAIN, "memory")
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
            f"| serving worker | {fmt(mem['rss_before_mib'], 1)} | {fmt(mem['rss_during_max_mib'], 1)} | "
            f"{fmt(mem['rss_after_mib'], 1)} |"
        )
        w(
            f"| process tree | {fmt(mem['rss_tree_before_mib'], 1)} | {fmt(mem['rss_tree_max_mib'], 1)} | "
            f"{fmt(mem['rss_tree_after_mib'], 1)} |"
        )
        w("")
        w(
            f"Growth from 10 % into the run to its end: {fmt(mem['growth_after_10pct_mib'], 1)} MiB "
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
                f"| {name} ({t.get('notes', '')}) | {fmt(get(t, 'latency', '1', 'p50'))} | "
                f"{fmt(a.get('p50_c1'))} | "
                f"{fmt(a.get('p50_c1_vs_0_rules'))} | {fmt(get(t, 'latency', '4', 'p99'))} | "
                f"{fmt(a.get('p99_c4_vs_0_rules'))} | {fmt(get(t, 'latency', '1', 'cpu_us_per_req'), 0)} |"
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
    if r.get("ratios"):
        w("")
        L.extend(ratios_md(r["ratios"]))
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
