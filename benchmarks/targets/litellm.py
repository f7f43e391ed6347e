"""The LiteLLM proxy (from PyPI, in its own virtualenv): one worker (its
default uvicorn server), no database, its price map loaded locally, a master
key for auth, both mock upstreams in its model list, request logging off."""

from __future__ import annotations

import hashlib
import json
import os

from benchmarks import procs
from benchmarks.targets import MODEL_FIXED, MODEL_STREAM, Env, Running
from devtools.harness import wait_http
from devtools.ports import free_port

NAME = "litellm"
DESCRIPTION = "LiteLLM proxy, 1 worker, no database (the peer)"
MASTER_KEY = "sk-" + hashlib.sha256(b"lectr-bench").hexdigest()  # a throwaway key on loopback

# uvicorn's access log off (one line per request otherwise), warnings kept.
LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"err": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "uvicorn": {"handlers": ["err"], "level": "WARNING"},
        "uvicorn.error": {"level": "WARNING"},
        "uvicorn.access": {"handlers": ["err"], "level": "WARNING", "propagate": False},
    },
}


def start(env: Env) -> Running:
    assert env.litellm, "the litellm command was not installed"
    work = env.tmp / "litellm"
    work.mkdir(exist_ok=True)
    # The streamed model is served as gpt-4o-mini, so LiteLLM counts its
    # tokens with its bundled tiktoken tables: for a Llama name it would fetch
    # a tokenizer from Hugging Face on every stream (23 s of retries offline,
    # blocking its event loop), which would measure this sandbox, not LiteLLM.
    models = [
        (MODEL_FIXED, MODEL_FIXED, f"{env.fixed.url}/v1"),
        (MODEL_STREAM, "gpt-4o-mini", f"{env.stream.url}/v1"),
    ]
    config = work / "config.yaml"
    # JSON is YAML: no YAML writer needed.
    config.write_text(
        json.dumps(
            {
                "model_list": [
                    {
                        "model_name": name,
                        "litellm_params": {"model": f"openai/{m}", "api_base": base, "api_key": "sk-bench"},
                    }
                    for name, m, base in models
                ],
                "general_settings": {"master_key": MASTER_KEY},
                "litellm_settings": {"telemetry": False},
            },
            indent=2,
        )
    )
    log_config = work / "logging.json"
    log_config.write_text(json.dumps(LOG_CONFIG))
    port = free_port()
    cmd = [
        env.litellm,
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
        "--log_config",
        str(log_config),
    ]
    proc = procs.spawn(
        cmd,
        work / "litellm.log",
        env={
            **os.environ,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_LOG": "ERROR",
            "LITELLM_TELEMETRY": "False",
            "NO_DOCS": "True",
            "HF_HUB_OFFLINE": "1",
        },
        cwd=work,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health/liveliness", proc, work / "litellm.log", timeout=120)  # type: ignore[arg-type]
    except Exception:
        procs.terminate(proc)
        raise
    return Running(
        name=NAME,
        url_fixed=f"{url}/v1/chat/completions",
        url_stream=f"{url}/v1/chat/completions",
        pid=proc.pid,
        command=" ".join(["litellm", *cmd[1:]]),
        stop=lambda: procs.terminate(proc),
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        notes="master key auth, no database",
    )
