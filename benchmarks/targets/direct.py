"""The client talks to the mock upstreams directly: the physical limit of
this machine, and the baseline every "added" figure is measured against.
Its process tree is the fixed upstream (nginx) itself."""

from __future__ import annotations

from benchmarks.targets import Env, Running

NAME = "direct"
DESCRIPTION = "client → mock upstream (the limit)"


def start(env: Env) -> Running:
    return Running(
        name=NAME,
        url_fixed=f"{env.fixed.url}/v1/chat/completions",
        url_stream=f"{env.stream.url}/v1/chat/completions",
        pid=env.fixed.pid,
        command="(no gateway)",
        stop=lambda: None,
        notes="CPU/RSS figures are the fixed upstream's own",
        protocol_streams={
            "responses": (f"{env.stream.url}/openai/v1/responses", {}),
            "messages": (f"{env.stream.url}/anthropic/v1/messages", {}),
        },
    )
