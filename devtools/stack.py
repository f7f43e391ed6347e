"""`make stack`: the compose stack (PostgreSQL, Redis, gateways, nginx, Prometheus) on local binaries.

Run from a checkout: `python -m devtools.stack [--instances N] [--port P]`.

One start-up path with the container image: every instance is `lectr serve`
(the image's ENTRYPOINT + CMD) configured only through `LECTR_*` variables,
migrations run once first with `lectr migrate` (compose's `migrate` service),
and nginx and Prometheus get the very files `deploy/compose.yaml` mounts:
`deploy/nginx/lectr.conf.template`, rendered with the same two variables the
nginx image's envsubst fills in, and `deploy/prometheus/prometheus.yml`
unchanged (optionally with a shorter scrape interval) next to a
`targets/gateways.json` listing the local instances.

Services run on free ports of 127.0.0.1, each in its own session so a Ctrl-C
in the terminal reaches only this process, which then stops them in order:
nginx (graceful), the gateways (SIGTERM drains in-flight requests and
records), Prometheus, Redis, PostgreSQL. Missing binaries are installed from
Debian's packages when running as root with apt-get, else named in the error.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import re
import shutil
import signal
import socket
import stat
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType

from devtools.ports import free_port
from lectr.healthcheck import probe

NGINX_TEMPLATE = Path("nginx/lectr.conf.template")
PROMETHEUS_CONFIG = Path("prometheus/prometheus.yml")
PROMETHEUS_TARGETS = Path("targets/gateways.json")
# The container runs `lectr serve` (ENTRYPOINT ["lectr"], CMD ["serve"]); so does every local instance.
SERVE_ARGS = ("serve",)
MIGRATE_ARGS = ("migrate",)
LECTR = (sys.executable, "-m", "lectr")
# Variables `lectr serve` sets for its own workers; inherited ones would make
# instances share (or clobber) each other's metric files and settings.
PRIVATE_ENV = ("PROMETHEUS_MULTIPROC_DIR", "LECTR__SETTINGS_JSON")


class DevStackError(RuntimeError):
    """The stack could not start; the message says which service and why."""


def find_deploy_dir(explicit: Path | None = None) -> Path:
    """The repository's `deploy/` folder: `explicit`, else `./deploy`, else the
    one beside the source tree this module was loaded from."""
    candidates = (
        [explicit] if explicit else [Path.cwd() / "deploy", Path(__file__).resolve().parents[1] / "deploy"]
    )
    for c in candidates:
        if (c / NGINX_TEMPLATE).is_file() and (c / PROMETHEUS_CONFIG).is_file():
            return c
    raise DevStackError(
        f"no deploy/ folder with {NGINX_TEMPLATE} and {PROMETHEUS_CONFIG} in "
        f"{', '.join(map(str, candidates))}: run from the repository root or pass --deploy-dir"
    )


def render_nginx(template: str, listen: str, upstreams: list[str]) -> str:
    """The load balancer's server block, as the nginx image's envsubst renders it."""
    servers = " ".join(f"server {u};" for u in upstreams)
    # safe_substitute leaves nginx's own $variables alone, like envsubst given
    # an explicit list of names.
    out = string.Template(template).safe_substitute(LECTR_LB_LISTEN=listen, LECTR_LB_SERVERS=servers)
    left = sorted(set(re.findall(r"\$\{?LECTR_[A-Z0-9_]+\}?", out)))
    if left:
        raise DevStackError(f"{NGINX_TEMPLATE} uses variables the dev stack does not set: {left}")
    return out


def nginx_main_config(home: Path, site: Path) -> str:
    """A self-contained nginx.conf around the rendered server block: every path
    inside `home`, in the foreground, no system files touched."""
    return (
        "daemon off;\n"
        "worker_processes 1;\n"
        f"pid {home / 'nginx.pid'};\n"
        f"error_log {home / 'error.log'} warn;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        f"    access_log {home / 'access.log'};\n"
        f"    client_body_temp_path {home / 'tmp' / 'body'};\n"
        f"    proxy_temp_path {home / 'tmp' / 'proxy'};\n"
        f"    fastcgi_temp_path {home / 'tmp' / 'fastcgi'};\n"
        f"    uwsgi_temp_path {home / 'tmp' / 'uwsgi'};\n"
        f"    scgi_temp_path {home / 'tmp' / 'scgi'};\n"
        f"    include {site};\n"
        "}\n"
    )


def render_prometheus(config: str, scrape_interval: str | None) -> str:
    """`deploy/prometheus/prometheus.yml`, with the global scrape (and
    evaluation) interval replaced when one is given."""
    if scrape_interval is None:
        return config
    if not re.fullmatch(r"\d+(ms|s|m|h)", scrape_interval):
        raise DevStackError(f"scrape interval must look like 15s or 500ms, got {scrape_interval!r}")
    out, n = re.subn(
        r"^(  (?:scrape|evaluation)_interval: )\S+$", rf"\g<1>{scrape_interval}", config, flags=re.M
    )
    if n != 2:
        raise DevStackError(
            f"{PROMETHEUS_CONFIG}: expected one global scrape_interval and evaluation_interval"
        )
    return out


def prometheus_targets(targets: list[str]) -> str:
    """The file-discovery list Prometheus reads from `targets/gateways.json`."""
    return json.dumps([{"targets": targets, "labels": {"stack": "dev"}}], indent=2) + "\n"


def _apt_install(package: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
    if subprocess.run(install, env=env, capture_output=True, timeout=900, check=False).returncode != 0:
        # A fresh machine has no package lists yet.
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=900, check=False)
        r = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900, check=False)
        if r.returncode != 0:
            raise DevStackError(f"apt-get install {package} failed:\n{r.stderr[-2000:]}")


def ensure(what: str, package: str, find: Callable[[], Path | None]) -> Path:
    """`find()`, installing Debian's `package` first when it finds nothing and
    this process may (root, apt-get present)."""
    found = find()
    if found is not None:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"devtools.stack: installing {package} (apt-get) for {what}", file=sys.stderr, flush=True)
        _apt_install(package)
        found = find()
        if found is not None:
            return found
    raise DevStackError(f"{what} not found: install it (Debian/Ubuntu package {package!r}) or put it on PATH")


def _which(name: str, *extra: str) -> Callable[[], Path | None]:
    def find() -> Path | None:
        hit = shutil.which(name) or next((p for p in extra if Path(p).is_file()), None)
        return Path(hit) if hit else None

    return find


def _postgres_bindir() -> Path | None:
    def major(path: str) -> float:
        try:
            return float(Path(path).parents[1].name)
        except ValueError:
            return 0.0

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=major)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("postgres")
    return Path(on_path).parent if on_path and Path(on_path).with_name("initdb").exists() else None


def _traversable_by_others(path: Path) -> bool:
    """Whether another user (PostgreSQL's) can reach `path` through its parents."""
    return all(p.stat().st_mode & stat.S_IXOTH for p in [path, *path.parents])


@dataclass
class Service:
    """One process of the stack."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    url: str
    stop_signal: signal.Signals = signal.SIGTERM
    stop_timeout: float = 15.0
    expected_exit: bool = field(default=False)

    def signal(self) -> None:
        """Send its stop signal without waiting. A graceful signal goes to the
        main process, which stops its own workers in order; SIGKILL goes to
        the whole process group, as a crash (or a container's end) takes
        granian's workers with it."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                if self.stop_signal == signal.SIGKILL:
                    self.kill()
                else:
                    self.proc.send_signal(self.stop_signal)

    def kill(self) -> None:
        """SIGKILL to its process group (it leads its own session)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def wait_stopped(self) -> int:
        """Wait for the exit, killing the group only if it overruns its stop timeout."""
        try:
            return self.proc.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.wait()

    def stop(self) -> int:
        """Signal, wait, and kill only if it does not exit in time."""
        self.signal()
        return self.wait_stopped()


class DevStack:
    """The local stack. `start()` returns once every service answers; `stop()`
    (or leaving the `with` block) stops them in order and, unless `keep`,
    deletes the working directory. Gateways inherit this process's environment
    plus `env` (e.g. provider base URLs, `LECTR_ADMIN_TOKEN`)."""

    def __init__(
        self,
        base: Path | None = None,
        instances: int = 2,
        lb_port: int = 0,
        scrape_interval: str | None = None,
        env: Mapping[str, str] | None = None,
        deploy_dir: Path | None = None,
        keep: bool | None = None,
    ) -> None:
        if instances < 1:
            raise DevStackError(f"instances must be at least 1, got {instances}")
        self.deploy = find_deploy_dir(deploy_dir)
        self.own_base = base is None
        self.base = Path(tempfile.mkdtemp(prefix="lectr-stack-")) if base is None else base.resolve()
        self.keep = (not self.own_base) if keep is None else keep
        self.instances = instances
        self.lb_port = lb_port or free_port()
        self.scrape_interval = scrape_interval
        self.env = {**os.environ, **(env or {})}
        self.logs = self.base / "logs"
        self.pg_port = free_port()
        self.redis_port = free_port()
        self.prometheus_port = free_port()
        self.gateway_ports = [free_port() for _ in range(instances)]
        self.database_url = f"postgresql://postgres@127.0.0.1:{self.pg_port}/lectr"
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.lb_url = f"http://127.0.0.1:{self.lb_port}"
        self.prometheus_url = f"http://127.0.0.1:{self.prometheus_port}"
        self.gateway_urls = [f"http://127.0.0.1:{p}" for p in self.gateway_ports]
        self.services: dict[str, Service] = {}
        self._pg_temp: Path | None = None

    # -- lifecycle -----------------------------------------------------------

    def __enter__(self) -> DevStack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> DevStack:
        """Start PostgreSQL and Redis, migrate, start the gateways, then nginx
        and Prometheus; stop whatever started if anything fails."""
        try:
            self.base.mkdir(parents=True, exist_ok=True)
            self.logs.mkdir(exist_ok=True)
            if self.own_base:
                # PostgreSQL runs as its own user when we are root; let it reach its folder.
                self.base.chmod(0o711)
            self._start_postgres()
            self._start_redis()
            self._wait("postgres", self._postgres_ready, 60)
            self._create_database()
            self._wait("redis", self._redis_ready, 20)
            self._migrate()
            for i in range(self.instances):
                self._start_gateway(i)
            for i in range(self.instances):
                self._wait(f"gateway-{i + 1}", _answers(self.gateway_urls[i] + "/readyz"), 60)
            self._start_nginx()
            self._start_prometheus()
            self._wait("lb", _answers(self.lb_url + "/healthz"), 20)
            self._wait("prometheus", _answers(self.prometheus_url + "/-/ready"), 30)
        except BaseException as e:
            # Keep the logs of a failed start; the processes go.
            self.stop(keep=True)
            if isinstance(e, DevStackError):
                raise DevStackError(f"{e}\n(logs in {self.logs})") from None
            raise
        return self

    def stop(self, keep: bool | None = None) -> None:
        """Stop every service, front to back, so nothing is cut off mid-request:
        nginx first, then the gateways together (each drains into PostgreSQL),
        then Prometheus and Redis, PostgreSQL last. Deletes the working
        directory unless it is kept."""
        phases = [
            ["lb"],
            [f"gateway-{i + 1}" for i in range(self.instances)],
            ["prometheus", "redis"],
            ["postgres"],
        ]
        for phase in phases:
            running = [self.services[n] for n in phase if n in self.services]
            for svc in running:
                svc.signal()
            for svc in running:
                svc.wait_stopped()
        self.services.clear()
        if not (self.keep if keep is None else keep):
            shutil.rmtree(self.base, ignore_errors=True)
        # PostgreSQL's stand-in folder outside `base` holds only data, never kept.
        if self._pg_temp is not None:
            shutil.rmtree(self._pg_temp, ignore_errors=True)
            self._pg_temp = None

    def exited(self) -> list[tuple[str, int]]:
        """Services that exited although nobody stopped them: (name, exit code)."""
        return [
            (s.name, s.proc.returncode)
            for s in self.services.values()
            if s.proc.poll() is not None and not s.expected_exit
        ]

    def describe(self) -> str:
        """The URLs a person needs, one per line."""
        rows = [
            ("gateway (nginx)", self.lb_url + "/v1"),
            *((f"gateway-{i + 1}", u) for i, u in enumerate(self.gateway_urls)),
            ("prometheus", self.prometheus_url),
            ("postgresql", self.database_url),
            ("redis", self.redis_url),
            ("logs", str(self.logs)),
        ]
        width = max(len(r[0]) for r in rows)
        return "\n".join(f"  {name.ljust(width)}  {value}" for name, value in rows)

    # -- services ------------------------------------------------------------

    def _spawn(
        self,
        name: str,
        argv: list[str],
        url: str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
        stop_timeout: float = 15.0,
    ) -> Service:
        log = self.logs / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Own session: a terminal Ctrl-C reaches only the dev stack,
                # which then stops services in order.
                start_new_session=True,
                user=user,
            )
        svc = Service(name, proc, log, url, stop_signal, stop_timeout)
        self.services[name] = svc
        return svc

    def _wait(self, name: str, ready: Callable[[], bool], timeout: float) -> None:
        svc = self.services[name]
        deadline = time.monotonic() + timeout
        while not ready():
            if svc.proc.poll() is not None:
                raise DevStackError(f"{name} exited with {svc.proc.returncode}:\n{_tail(svc.log)}")
            if time.monotonic() > deadline:
                raise DevStackError(f"{name} not ready after {timeout:.0f}s:\n{_tail(svc.log)}")
            time.sleep(0.05)

    def _start_postgres(self) -> None:
        bindir = ensure("PostgreSQL", "postgresql", _postgres_bindir)
        as_root = os.geteuid() == 0
        home = self.base / "postgres"
        if as_root and not _traversable_by_others(self.base):
            # PostgreSQL refuses to run as root and its user cannot enter this folder.
            self._pg_temp = Path(tempfile.mkdtemp(prefix="lectr-stack-postgres-"))
            home = self._pg_temp
            if self.keep:
                print(
                    f"devtools.stack: the postgres user cannot reach {self.base}; "
                    f"PostgreSQL data goes to {home} and is deleted at exit",
                    file=sys.stderr,
                    flush=True,
                )
        home.mkdir(exist_ok=True)
        user = "postgres" if as_root else None
        if user:
            shutil.chown(home, user, user)
        data = home / "data"
        if not (data / "PG_VERSION").exists():
            r = subprocess.run(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                cwd=home,
                user=user,
                capture_output=True,
                text=True,
                check=False,
            )
            if r.returncode != 0:
                raise DevStackError(f"initdb failed:\n{r.stdout}{r.stderr}")
        self._spawn(
            "postgres",
            [
                str(bindir / "postgres"),
                "-D",
                str(data),
                "-p",
                str(self.pg_port),
                "-k",
                str(home),
                "-c",
                "listen_addresses=127.0.0.1",
            ],
            self.database_url,
            cwd=home,
            user=user,
            # SIGINT is PostgreSQL's fast shutdown; SIGTERM would wait for every client.
            stop_signal=signal.SIGINT,
            stop_timeout=30.0,
        )

    def _postgres_ready(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self.database_url.rsplit("/", 1)[0] + "/postgres", connect_timeout=1).close()
        except psycopg.OperationalError:
            return False
        return True

    def _create_database(self) -> None:
        import psycopg

        with psycopg.connect(self.database_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as c:
            if c.execute("SELECT 1 FROM pg_database WHERE datname = 'lectr'").fetchone() is None:
                c.execute("CREATE DATABASE lectr")

    def _start_redis(self) -> None:
        binary = ensure("redis-server", "redis-server", _which("redis-server", "/usr/bin/redis-server"))
        home = self.base / "redis"
        home.mkdir(exist_ok=True)
        self._spawn(
            "redis",
            [
                str(binary),
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                # Counters only; budgets are re-seeded from the request log.
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(home),
            ],
            self.redis_url,
        )

    def _redis_ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.redis_port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def gateway_env(self, i: int) -> dict[str, str]:
        """Instance `i`'s environment: the caller's, plus where it listens and
        what it shares. Configuration only through `LECTR_*`, as in the container."""
        env = {k: v for k, v in self.env.items() if k not in PRIVATE_ENV}
        env.update(
            LECTR_HOST="127.0.0.1",
            LECTR_PORT=str(self.gateway_ports[i]),
            LECTR_DATABASE_URL=self.database_url,
            LECTR_REDIS_URL=self.redis_url,
            LECTR_DATA_DIR=str(self.base / f"gateway-{i + 1}"),
        )
        return env

    def _migrate(self) -> None:
        r = subprocess.run(
            [*LECTR, *MIGRATE_ARGS], env=self.gateway_env(0), capture_output=True, text=True, check=False
        )
        (self.logs / "migrate.log").write_text(r.stdout + r.stderr)
        if r.returncode != 0:
            raise DevStackError(f"lectr migrate failed:\n{r.stdout}{r.stderr}")

    def _start_gateway(self, i: int) -> None:
        self._spawn(
            f"gateway-{i + 1}",
            [*LECTR, *SERVE_ARGS],
            self.gateway_urls[i],
            env=self.gateway_env(i),
            # The writer drains for up to 30 s at shutdown.
            stop_timeout=45.0,
        )

    def start_gateway(self, i: int) -> None:
        """(Re)start instance `i` (0-based) and wait until it is ready."""
        self._start_gateway(i)
        self._wait(f"gateway-{i + 1}", _answers(self.gateway_urls[i] + "/readyz"), 60)

    def stop_gateway(self, i: int, sig: signal.Signals = signal.SIGTERM) -> int | None:
        """Send `sig` to instance `i` (0-based) and wait for it to exit; its exit code."""
        svc = self.services[f"gateway-{i + 1}"]
        svc.expected_exit = True
        svc.stop_signal = sig
        return svc.stop()

    def _start_nginx(self) -> None:
        binary = ensure("nginx", "nginx", _which("nginx", "/usr/sbin/nginx"))
        home = self.base / "nginx"
        (home / "tmp").mkdir(parents=True, exist_ok=True)
        site = home / "lectr.conf"
        site.write_text(
            render_nginx(
                (self.deploy / NGINX_TEMPLATE).read_text(),
                f"127.0.0.1:{self.lb_port}",
                [f"127.0.0.1:{p}" for p in self.gateway_ports],
            )
        )
        conf = home / "nginx.conf"
        conf.write_text(nginx_main_config(home, site))
        # -e: the error log from the very start, before nginx.conf is read
        # (else it opens /var/log/nginx/error.log).
        self._spawn(
            "lb",
            [str(binary), "-p", str(home), "-c", str(conf), "-e", str(home / "error.log")],
            self.lb_url,
            # SIGQUIT: finish requests in flight, then exit.
            stop_signal=signal.SIGQUIT,
        )

    def _start_prometheus(self) -> None:
        binary = ensure("prometheus", "prometheus", _which("prometheus", "/usr/bin/prometheus"))
        home = self.base / "prometheus"
        (home / PROMETHEUS_TARGETS).parent.mkdir(parents=True, exist_ok=True)
        config = home / "prometheus.yml"
        config.write_text(
            render_prometheus((self.deploy / PROMETHEUS_CONFIG).read_text(), self.scrape_interval)
        )
        (home / PROMETHEUS_TARGETS).write_text(
            prometheus_targets([f"127.0.0.1:{p}" for p in self.gateway_ports])
        )
        self._spawn(
            "prometheus",
            [
                str(binary),
                f"--config.file={config}",
                f"--storage.tsdb.path={home / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.prometheus_port}",
            ],
            self.prometheus_url,
        )


def _answers(url: str) -> Callable[[], bool]:
    return lambda: probe(url, timeout=1.0)


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def parser() -> argparse.ArgumentParser:
    """`python -m devtools.stack` and its options."""
    p = argparse.ArgumentParser(
        prog="python -m devtools.stack",
        description="Run the compose stack from local binaries on free ports of 127.0.0.1; Ctrl-C stops it.",
    )
    p.add_argument("--config", help="TOML config file for the gateways (else LECTR_CONFIG)")
    p.add_argument("--instances", type=int, default=2, help="gateway instances (default 2)")
    p.add_argument("--port", type=int, default=0, help="load balancer port (default: a free one)")
    p.add_argument("--dir", help="working directory, kept and reused (default: a temporary one, deleted)")
    p.add_argument("--scrape-interval", help="Prometheus scrape interval (default: the file's, 15s)")
    p.add_argument("--deploy-dir", help="the repository's deploy/ folder (default: ./deploy)")
    return p


def main(argv: list[str] | None = None) -> None:
    """Run the stack until Ctrl-C or SIGTERM, or until a service dies."""
    args = parser().parse_args(argv)

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    env = dict(os.environ)
    if args.config:
        env["LECTR_CONFIG"] = str(Path(args.config).resolve())
    try:
        stack = DevStack(
            base=Path(args.dir) if args.dir else None,
            instances=args.instances,
            lb_port=args.port,
            scrape_interval=args.scrape_interval,
            env=env,
            deploy_dir=Path(args.deploy_dir) if args.deploy_dir else None,
        )
    except DevStackError as e:
        sys.exit(f"devtools.stack: {e}")
    failed: str | None = None
    try:
        print(f"devtools.stack: starting in {stack.base}", flush=True)
        stack.start()
        print(f"devtools.stack: {args.instances} gateway instance(s) behind nginx\n{stack.describe()}")
        print(
            f"Create an org: LECTR_DATABASE_URL={stack.database_url} lectr orgs create NAME\n"
            "Ctrl-C stops everything.",
            flush=True,
        )
        while not failed:
            time.sleep(0.5)
            dead = stack.exited()
            if dead:
                name, code = dead[0]
                failed = f"{name} exited with {code}; see {stack.services[name].log}"
    except KeyboardInterrupt:
        pass
    except DevStackError as e:
        failed = str(e)
    finally:
        # A second Ctrl-C must not cut the orderly stop short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("devtools.stack: stopping", flush=True)
        # After a failure the logs stay for reading.
        stack.stop(keep=True if failed else None)
    if failed:
        sys.exit(f"devtools.stack: {failed}")


if __name__ == "__main__":
    main()
