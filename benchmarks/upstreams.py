"""The two mock upstreams every target talks to.

- **fixed**: nginx answering every request with one fixed, valid
  `chat.completion` (with usage) — far cheaper than any gateway, so the
  gateway is what latency and throughput runs measure.
- **stream**: the shared aiohttp mock (`devtools/mock_provider.py`) with
  20 chunks × 5 ms and each chunk stamped with its send time, for streaming
  fidelity, where timing is the point and the mock's own cost is not.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import msgspec

from benchmarks import env, procs
from devtools.harness import wait_http
from devtools.ports import free_port

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


def nginx_conf(prefix: Path, body: str) -> Path:
    """A complete nginx.conf for one foreground nginx with one worker."""
    prefix.mkdir(parents=True, exist_ok=True)
    for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / d).mkdir(exist_ok=True)
    user = "user root;" if os.geteuid() == 0 else ""
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""{user}
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    client_body_buffer_size 1m;
    {NGINX_KEEPALIVE}
{body}
}}
"""
    )
    return conf


def start_nginx(prefix: Path, body: str, health_url: str) -> subprocess.Popen[bytes]:
    conf = nginx_conf(prefix, body)
    proc = procs.spawn([env.nginx(), "-p", str(prefix), "-c", str(conf)], prefix / "stdout.log")
    wait_http(health_url, proc, prefix / "error.log")  # type: ignore[arg-type]
    return proc


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
