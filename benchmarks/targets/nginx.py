"""nginx as a plain reverse proxy with a keep-alive upstream pool and
unbuffered responses: the ideal proxy (Debian's nginx, one worker)."""

from __future__ import annotations

from benchmarks import procs, upstreams
from benchmarks.targets import Env, Running
from devtools.ports import free_port

NAME = "nginx"
DESCRIPTION = "nginx reverse proxy, keep-alive upstream, 1 worker (the ideal proxy)"

_PROXY = 'proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off;'


def start(env: Env) -> Running:
    port = free_port()
    fixed, stream = env.fixed.url.removeprefix("http://"), env.stream.url.removeprefix("http://")
    body = f"""    upstream fixed {{ server {fixed}; keepalive 128; {upstreams.NGINX_KEEPALIVE} }}
    upstream stream {{ server {stream}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{port};
        location = /healthz {{ return 200 'ok'; }}
        location /stream/ {{ proxy_pass http://stream/; {_PROXY} }}
        location / {{ proxy_pass http://fixed; {_PROXY} }}
    }}"""
    prefix = env.tmp / "nginx-proxy"
    proc = upstreams.start_nginx(prefix, body, f"http://127.0.0.1:{port}/healthz")
    url = f"http://127.0.0.1:{port}"
    return Running(
        name=NAME,
        url_fixed=f"{url}/v1/chat/completions",
        url_stream=f"{url}/stream/v1/chat/completions",
        pid=proc.pid,
        command=f"nginx -p {prefix} -c {prefix}/nginx.conf",
        stop=lambda: procs.terminate(proc),
    )
