"""Throwaway servers for tests, benchmarks and the dev stack: PostgreSQL,
Redis, Prometheus and nginx on free ports of 127.0.0.1, each in a folder of
its own, ready when the constructor returns, stopped by `stop()`/`destroy()`.
Missing programs are installed from Debian's packages (devtools.install)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg

from devtools.install import postgres_bindir, program
from devtools.ports import free_port
from devtools.process import Service, ServiceError, http_ok, spawn


def _traversable_by_others(path: Path) -> bool:
    """Whether another user (PostgreSQL's) can reach `path` through its parents."""
    return all(p.stat().st_mode & stat.S_IXOTH for p in [path, *path.parents])


class Postgres:
    """One PostgreSQL server with one database, `lectr`. As root it runs as the
    `postgres` user (it refuses root). `fast` turns fsync off for tests and
    benchmarks; the dev stack keeps it on."""

    def __init__(
        self, home: Path | None = None, port: int | None = None, *, fast: bool = True, log: Path | None = None
    ) -> None:
        self.bindir = postgres_bindir()
        self.port = port or free_port()
        self.fast = fast
        self.user = "postgres" if os.geteuid() == 0 else None
        self._own_dir = home is None
        if home is not None and self.user and not _traversable_by_others(home.parent):
            # The postgres user cannot enter the caller's folder: data goes to
            # a temp dir instead, deleted by destroy().
            home, self._own_dir = None, True
        self.dir = Path(tempfile.mkdtemp(prefix="lectr-pg-")) if home is None else home
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.user:
            shutil.chown(self.dir, self.user, self.user)
        self.data = self.dir / "data"
        self.log = log or self.dir / "log"
        self.url = self.dsn("lectr")
        self.service: Service | None = None
        if not (self.data / "PG_VERSION").exists():
            self._initdb()
        self.start()
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as c:
            if c.execute("SELECT 1 FROM pg_database WHERE datname = 'lectr'").fetchone() is None:
                c.execute("CREATE DATABASE lectr")

    def _initdb(self) -> None:
        argv = [str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust"]
        argv += ["-E", "UTF8", "--locale=C", "--no-sync"]
        r = subprocess.run(argv, cwd=self.dir, user=self.user, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise ServiceError(f"initdb failed:\n{r.stdout}{r.stderr}")

    def dsn(self, db: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def new_database(self, prefix: str, template: str | None = None) -> str:
        """A fresh database on this server (empty, or a copy of `template`); its URL."""
        db = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as c:
            c.execute(f"CREATE DATABASE {db}" + (f" TEMPLATE {template}" if template else ""))
        return self.dsn(db)

    def _ready(self) -> bool:
        try:
            psycopg.connect(self.dsn("postgres"), connect_timeout=1).close()
        except psycopg.OperationalError:
            return False
        return True

    def start(self) -> None:
        """Start the server (again) and wait until it accepts connections."""
        argv = [
            str(self.bindir / "postgres"),
            "-D",
            str(self.data),
            "-p",
            str(self.port),
            "-k",
            str(self.dir),
        ]
        argv += ["-c", "listen_addresses=127.0.0.1"]
        if self.fast:
            argv += ["-c", "fsync=off", "-c", "full_page_writes=off"]
        self.service = spawn(
            "postgres",
            argv,
            self.log,
            self.url,
            cwd=self.dir,
            user=self.user,
            # SIGINT is PostgreSQL's fast shutdown; SIGTERM would wait for every client.
            stop_signal=signal.SIGINT,
            stop_timeout=30.0,
        )
        self.service.wait_ready(self._ready, 60)

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()
            self.service = None

    def wait_down(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self._ready():
            if time.monotonic() > deadline:
                raise TimeoutError("postgres did not stop")
            time.sleep(0.05)

    def destroy(self) -> None:
        """Stop, and delete the data unless the caller chose the folder."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


class RedisServer:
    """redis-server with no persistence (counters only; budgets are re-seeded
    from the request log)."""

    def __init__(self, home: Path | None = None, port: int | None = None, log: Path | None = None) -> None:
        self.binary = program("redis-server", "redis-server", "/usr/bin/redis-server")
        self._own_dir = home is None
        self.dir = Path(tempfile.mkdtemp(prefix="lectr-redis-")) if home is None else home
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = log or self.dir / "log"
        self.service: Service | None = None
        self.start()

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        """The running process, or None once killed."""
        return self.service.proc if self.service is not None else None

    def _ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> None:
        argv = [str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.dir)]
        self.service = spawn("redis", argv, self.log, self.url)
        self.service.wait_ready(self._ready, 20)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.service is not None:
            self.service.kill()
            self.service.proc.wait()
            self.service = None

    def destroy(self) -> None:
        self.kill()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def scrape_config(targets: list[str], interval: str) -> str:
    """A Prometheus config scraping `targets` as job `lectr`."""
    quoted = ", ".join(f"'{t}'" for t in targets)
    return (
        f"global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\n"
        f"scrape_configs:\n  - job_name: lectr\n    static_configs:\n      - targets: [{quoted}]\n"
    )


class Prometheus:
    """Prometheus with its own data dir. It scrapes `targets` with a config of
    its own, or, given `config` (the deploy file), discovers them from
    `targets/gateways.json` beside it."""

    TARGETS_FILE = Path("targets/gateways.json")

    def __init__(
        self,
        tmp: Path,
        targets: list[str],
        interval: str = "1s",
        *,
        config: str | None = None,
        home: Path | None = None,
        port: int | None = None,
        log: Path | None = None,
    ) -> None:
        binary = program("prometheus", "prometheus", "/usr/bin/prometheus")
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.home = home or tmp / f"prometheus-{self.port}"
        (self.home / self.TARGETS_FILE).parent.mkdir(parents=True, exist_ok=True)
        file = self.home / "prometheus.yml"
        file.write_text(config if config is not None else scrape_config(targets, interval))
        # File discovery, for a given config that reads it (the deploy file does).
        (self.home / self.TARGETS_FILE).write_text(
            json.dumps([{"targets": targets, "labels": {"stack": "dev"}}], indent=2) + "\n"
        )
        self.log = log or self.home / "prometheus.log"
        argv = [
            str(binary),
            f"--config.file={file}",
            f"--storage.tsdb.path={self.home / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        self.service = spawn("prometheus", argv, self.log, self.url)
        self.service.wait_ready(http_ok(f"{self.url}/-/ready"), 30)

    def stop(self) -> None:
        self.service.stop()

    def api(self, path: str, **params: Any) -> Any:
        r = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = r.json()
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query at the current time; the result vector."""
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"] if data["resultType"] == "vector" else []
        return result

    def scalar(self, expr: str) -> float | None:
        """The single value of an instant query, or None when it has none."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, expr: str, ok: Callable[[float | None], bool], timeout: float = 20.0) -> float | None:
        """Poll `expr` until `ok(value)`; the last value is returned or reported."""
        deadline = time.monotonic() + timeout
        value = self.scalar(expr)
        while not ok(value):
            if time.monotonic() > deadline:
                targets = self.api("targets")
                raise TimeoutError(f"{expr} = {value} after {timeout}s; targets: {targets}")
            time.sleep(0.2)
            value = self.scalar(expr)
        return value


def nginx_config(home: Path, http: str, *, access_log: bool = True, worker_connections: int = 1024) -> str:
    """A self-contained nginx.conf around the `http` block's contents: every
    path inside `home`, in the foreground, one worker, no system files touched."""
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (home / "tmp" / d).mkdir(parents=True, exist_ok=True)
    # As root, workers would run as nobody, who cannot write the temp paths here.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (
        f"{user}daemon off;\n"
        "worker_processes 1;\n"
        f"pid {home / 'nginx.pid'};\n"
        f"error_log {home / 'error.log'} warn;\n"
        f"events {{ worker_connections {worker_connections}; }}\n"
        "http {\n"
        f"    access_log {home / 'access.log' if access_log else 'off'};\n"
        f"    client_body_temp_path {home / 'tmp' / 'body'};\n"
        f"    proxy_temp_path {home / 'tmp' / 'proxy'};\n"
        f"    fastcgi_temp_path {home / 'tmp' / 'fastcgi'};\n"
        f"    uwsgi_temp_path {home / 'tmp' / 'uwsgi'};\n"
        f"    scgi_temp_path {home / 'tmp' / 'scgi'};\n"
        f"{http}\n"
        "}\n"
    )


class Nginx:
    """nginx in the foreground with `home` as its prefix, running `config`
    (from nginx_config); ready when `ready_url` answers."""

    def __init__(self, home: Path, config: str, ready_url: str, log: Path | None = None) -> None:
        binary = program("nginx", "nginx", "/usr/sbin/nginx")
        self.home = home
        self.conf = home / "nginx.conf"
        self.conf.write_text(config)
        # -e: the error log from the very start, before nginx.conf is read
        # (else it opens /var/log/nginx/error.log).
        argv = [str(binary), "-p", str(home), "-c", str(self.conf), "-e", str(home / "error.log")]
        self.command = f"nginx -p {home} -c {self.conf}"
        # SIGQUIT: finish requests in flight, then exit.
        self.service = spawn("nginx", argv, log or home / "stdout.log", stop_signal=signal.SIGQUIT)
        self.service.wait_ready(http_ok(ready_url), 20)

    def stop(self) -> None:
        self.service.stop()
