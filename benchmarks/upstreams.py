"""The two mock upstreams every target talks to.

- **fixed**: nginx answering every request with one fixed, valid
  `chat.completion` (with usage) — far cheaper than any gateway, so the
  gateway is what latency and throughput runs measure.
- **stream**: the shared aiohttp mock (`devtools/mock_provider.py`) with
  20 chunks × 5 ms and each chunk stamped with its send time, for streaming
  fidelity, where timing is the point and the mock's own cost is not.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import msgspec

from benchmarks import env, procs
from devtools.harness import wait_http
from devtools.ports import free_port
from devtools.services import Nginx, nginx_config

FIXED_BODY = msgspec.json.encode(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello from the benchmark upstream."},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 18, "completion_tokens": 7, "total_tokens": 25},
        "system_fingerprint": "fp_bench",
    }
).decode()
STREAM_CHUNKS = 20
STREAM_INTERVAL_MS = 5

# Keep-alive without a request cap everywhere (nginx closes a connection
# after 1000 requests by default, the gateways never do).
NGINX_KEEPALIVE = "keepalive_requests 100000000; keepalive_timeout 300s;"


def start_nginx(prefix: Path, body: str, health_url: str) -> subprocess.Popen[bytes]:
    """One foreground nginx with one worker serving `body` (server blocks)."""
    prefix.mkdir(parents=True, exist_ok=True)
    http = f"    client_body_buffer_size 1m;\n    {NGINX_KEEPALIVE}\n{body}"
    conf = nginx_config(prefix, http, access_log=False, worker_connections=4096)
    return Nginx(prefix, conf, health_url).service.proc


@dataclass
class Upstream:
    name: str
    url: str  # base, no trailing slash; OpenAI paths go under {url}/v1
    proc: subprocess.Popen[bytes]
    command: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        procs.terminate(self.proc)


def start_fixed(tmp: Path) -> Upstream:
    port = free_port()
    body = f"""    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type application/json;
            return 200 '{FIXED_BODY}';
        }}
    }}"""
    assert "'" not in FIXED_BODY, "the body goes between single quotes"
    assert "$" not in FIXED_BODY, "nginx would expand variables"
    prefix = tmp / "upstream-fixed"
    proc = start_nginx(prefix, body, f"http://127.0.0.1:{port}/healthz")
    return Upstream("fixed", f"http://127.0.0.1:{port}", proc, f"nginx -p {prefix} -c {prefix}/nginx.conf")


def start_stream(tmp: Path) -> Upstream:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "devtools.mock_provider",
        "--port",
        str(port),
        "--chunks",
        str(STREAM_CHUNKS),
        "--interval-ms",
        str(STREAM_INTERVAL_MS),
        "--stamp",
    ]
    log = tmp / "upstream-stream.log"
    proc = procs.spawn(cmd, log, cwd=env.ROOT)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/_mock/stats", proc, log)  # type: ignore[arg-type]
    return Upstream("stream", url, proc, " ".join(["python", *cmd[1:]]))
