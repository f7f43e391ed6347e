"""Load generation: `wrk` for latency and throughput (its Lua `done` hook
prints the exact histogram figures as JSON), and a small sequential client
for streaming fidelity that timestamps every SSE event as it arrives."""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

MARK = "WRKJSON "

_LUA = r"""
wrk.method = "POST"
wrk.body = {body}
{headers}
done = function(summary, latency, requests)
  local pct = {{}}
  for _, q in ipairs({{50, 75, 90, 99, 99.9}}) do
    pct[#pct + 1] = string.format('"%s":%.1f', q, latency:percentile(q))
  end
  local e = summary.errors
  io.write(string.format(
    '{mark}{{"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"min_us":%.1f,"max_us":%.1f,"mean_us":%.2f,"stdev_us":%.2f,"pct_us":{{%s}}}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.min, latency.max, latency.mean, latency.stdev, table.concat(pct, ",")))
end
"""


def _lua_string(s: str) -> str:
    return json.dumps(s)  # a JSON string literal is a valid Lua string literal for ASCII


def lua_script(body: bytes, headers: dict[str, str]) -> str:
    lines = "\n".join(f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items())
    return _LUA.format(body=_lua_string(body.decode()), headers=lines, mark=MARK)


@dataclass
class WrkResult:
    """One wrk run; latencies in milliseconds."""

    conns: int
    seconds: float
    requests: int
    rps: float
    p50: float
    p75: float
    p90: float
    p99: float
    p999: float
    mean: float
    max: float
    errors: int  # connect/read/write errors and timeouts
    non2xx: int
    command: str


def wrk(
    exe: str,
    url: str,
    conns: int,
    seconds: float,
    body: bytes,
    headers: dict[str, str],
    workdir: Path,
    threads: int = 1,
    timeout_s: int = 10,
) -> WrkResult:
    script = workdir / "wrk-post.lua"
    script.write_text(lua_script(body, headers))
    cmd = [
        exe,
        f"-t{min(threads, conns)}",
        f"-c{conns}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={timeout_s}s",
        "-s",
        str(script),
        url,
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=seconds + 120)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith(MARK)), None)
    if r.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({r.returncode}): {r.stdout}\n{r.stderr}")
    d = json.loads(line[len(MARK) :])
    secs = d["duration_us"] / 1e6
    pct = d["pct_us"]
    return WrkResult(
        conns=conns,
        seconds=secs,
        requests=d["requests"],
        rps=d["requests"] / secs if secs else 0.0,
        p50=pct["50"] / 1000,
        p75=pct["75"] / 1000,
        p90=pct["90"] / 1000,
        p99=pct["99"] / 1000,
        p999=pct["99.9"] / 1000,
        mean=d["mean_us"] / 1000,
        max=d["max_us"] / 1000,
        errors=d["connect"] + d["read"] + d["write"] + d["timeout"],
        non2xx=d["status"],
        command=" ".join(cmd),
    )


# --- streaming -----------------------------------------------------------

_STAMP = re.compile(rb"@(\d{6,})")


@dataclass
class StreamSample:
    """One streamed request; times in ms from just before the request was sent."""

    status: int
    ttfb: float  # response headers received
    first_token: float | None  # first event with content
    done: float | None  # `data: [DONE]`
    events: int  # data events received, [DONE] included
    content_events: int
    usage_events: int  # events carrying a non-null usage (the client did not ask for any)
    arrivals: list[float] = field(default_factory=list)  # per content event, ms from start
    transit_us: list[float] = field(default_factory=list)  # per content event: arrival - mock send


# The agent protocols: (content event marker, final event marker) in the data.
PROTOCOL_MARKERS = {
    "responses": (b'"type":"response.output_text.delta"', b'"type":"response.completed"'),
    "messages": (b'"type":"content_block_delta"', b'"type":"message_stop"'),
}


def stream_once(
    conn: http.client.HTTPConnection,
    path: str,
    body: bytes,
    headers: dict[str, str],
    protocol: str | None = None,
) -> StreamSample:
    """One stream; for a `protocol` stream, `done` is its final event and
    content events are its text deltas (other events repeat the text)."""
    content_marker, done_marker = PROTOCOL_MARKERS.get(protocol or "", (None, None))
    t0 = time.monotonic_ns()
    conn.request("POST", path, body=body, headers=headers)
    resp = conn.getresponse()
    t_hdr = time.monotonic_ns()
    first = done = None
    events = content = usage = 0
    arrivals: list[float] = []
    transit: list[float] = []
    while True:
        line = resp.readline()
        if not line:
            break
        if not line.startswith(b"data:"):
            continue
        now = time.monotonic_ns()
        events += 1
        payload = line[5:].strip()
        if payload == b"[DONE]" or (done_marker is not None and done_marker in payload):
            done = (now - t0) / 1e6
            continue
        if content_marker is not None:
            is_content = content_marker in payload
        else:
            is_content = b'"content"' in payload or b'"text"' in payload
        if is_content:
            m = _STAMP.search(payload)
            if m is not None:
                content += 1
                if first is None:
                    first = (now - t0) / 1e6
                arrivals.append((now - t0) / 1e6)
                transit.append((now - int(m.group(1))) / 1e3)
        if b'"usage":{' in payload.replace(b" ", b""):
            usage += 1
    resp.read()
    return StreamSample(
        status=resp.status,
        ttfb=(t_hdr - t0) / 1e6,
        first_token=first,
        done=done,
        events=events,
        content_events=content,
        usage_events=usage,
        arrivals=arrivals,
        transit_us=transit,
    )


def stream_many(
    url: str, n: int, body: bytes, headers: dict[str, str], warmup: int = 3, protocol: str | None = None
) -> list[StreamSample]:
    """`n` streamed requests one after another on one keep-alive connection."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port or 80, timeout=30)
    out = []
    try:
        for i in range(warmup + n):
            s = stream_once(conn, u.path, body, headers, protocol)
            if i >= warmup:
                out.append(s)
    finally:
        conn.close()
    return out


def as_dict(x: Any) -> dict[str, Any]:
    return asdict(x)
