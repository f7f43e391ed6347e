"""`make demo` (`python -m devtools.demo`): the gateway on a local mock provider
with minutes of varied traffic, for the console."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from devtools.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
FEATURES = ("search", "summarise", "support-chat", "classifier", "")  # "" sends no tag
TASKS = ("chat", "summarization", "classification", None)
MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-4.1-mini", "llama-3.1-8b-instant", "claude-3-5-haiku-latest")


def parser() -> argparse.ArgumentParser:
    """The demo's options."""
    p = argparse.ArgumentParser(
        prog="python -m devtools.demo",
        description="Start a mock provider and the gateway, send varied traffic, keep serving until Ctrl-C.",
    )
    p.add_argument("--port", type=int, default=8080, help="gateway port (default 8080)")
    p.add_argument("--minutes", type=float, default=3.0, help="how long to send traffic (default 3)")
    p.add_argument("--rate", type=float, default=8.0, help="requests per second (default 8)")
    p.add_argument("--dir", help="data directory, kept (default: a new temporary one)")
    p.add_argument("--exit", action="store_true", help="stop after the traffic (default: keep serving)")
    return p


def _wait(port: int, path: str, proc: subprocess.Popen[bytes], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"demo: the {what} exited with {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", path)
            if c.getresponse().status < 500:
                return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit(f"demo: the {what} did not start within {timeout:.0f}s")


def _one(port: int, key: str, rng: random.Random) -> int:
    """One varied request: feature, task, model, some errors and a streamed share."""
    model = rng.choices(MODELS, weights=(4, 5, 2, 2, 1))[0]
    feature = rng.choices(FEATURES, weights=(5, 3, 4, 2, 2))[0]
    task = rng.choice(TASKS)
    stream = rng.random() < 0.25
    headers = {
        "content-type": "application/json",
        "authorization": "Bearer sk-demo",
        "x-api-key": "sk-demo",
        "x-lectr-key": key,
        "x-mock-latency-ms": str(int(rng.lognormvariate(4.0, 0.6))),
    }
    if feature:
        headers["x-lectr-feature"] = feature
    if task:
        headers["x-lectr-task"] = task
    if rng.random() < 0.04:
        headers["x-mock-status"] = rng.choice(("500", "429", "503"))
    body = {
        "model": model,
        "stream": stream,
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "word " * rng.randint(20, 400)}],
    }
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request("POST", "/v1/chat/completions", json.dumps(body), headers)
        r = c.getresponse()
        r.read()
        return r.status
    except OSError:
        return 0
    finally:
        c.close()


def main(args: argparse.Namespace) -> None:
    """Run the demo: mock, gateway, org, traffic; serve until Ctrl-C."""
    data_dir = Path(args.dir or tempfile.mkdtemp(prefix="lectr-demo-"))
    mock_port = free_port()
    token = secrets.token_urlsafe(24)
    mock_url = f"http://127.0.0.1:{mock_port}"
    env = {
        **os.environ,
        "LECTR_DATA_DIR": str(data_dir),
        "LECTR_ADMIN_TOKEN": token,
        "LECTR_OPENAI_BASE_URL": f"{mock_url}/v1",
        "LECTR_ANTHROPIC_BASE_URL": f"{mock_url}/anthropic/v1",
        "LECTR_GROQ_BASE_URL": f"{mock_url}/groq/openai/v1",
        "LECTR_GEMINI_BASE_URL": f"{mock_url}/gemini/v1beta/openai",
    }
    lectr = [sys.executable, "-m", "lectr"]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        mock = subprocess.Popen(
            [sys.executable, "-m", "devtools.mock_provider", "--port", str(mock_port), "--chunks", "8"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(mock)
        _wait(mock_port, "/_mock/stats", mock, "mock provider")
        made = subprocess.run(
            [*lectr, "orgs", "create", "demo"], env=env, capture_output=True, text=True, check=False
        )
        if made.returncode == 0:
            key = made.stdout.strip().splitlines()[-1]
        else:  # a kept --dir: the org exists already, give it a new key
            made = subprocess.run(
                [*lectr, "keys", "create", "demo"], env=env, capture_output=True, text=True, check=True
            )
            key = made.stdout.strip().splitlines()[-1]
        gw = subprocess.Popen([*lectr, "serve", "--port", str(args.port)], env=env)
        procs.append(gw)
        _wait(args.port, "/healthz", gw, "gateway")
        url = f"http://127.0.0.1:{args.port}/console"
        print(
            f"\nLectr demo\n  console:     {url}\n  admin token: {token}\n  org key:     {key}\n"
            f"  data:        {data_dir}\nSending {args.minutes:g} min of traffic...",
            flush=True,
        )
        rng = random.Random(15)  # noqa: S311 (made-up traffic, not secrets)
        end = time.monotonic() + args.minutes * 60
        sent = failed = 0
        with ThreadPoolExecutor(4) as pool:
            while time.monotonic() < end:
                batch = max(1, int(args.rate))
                for status in pool.map(lambda _: _one(args.port, key, rng), range(batch)):
                    sent += 1
                    failed += status >= 400 or status == 0
                time.sleep(1.0)
        print(f"Sent {sent} requests ({failed} failed on purpose or otherwise).", flush=True)
        print(f"Open {url} and sign in with the admin token or the org key.", flush=True)
        if not args.exit:
            print("Serving until Ctrl-C.", flush=True)
            gw.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()


if __name__ == "__main__":
    main(parser().parse_args())
