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
records), Prometheus, Redis, PostgreSQL. The servers themselves start
through `devtools.services`, which installs missing binaries from Debian's
packages (apt-get as root or through passwordless sudo), else names them in
the error.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType, TracebackType

from devtools.install import ensure
from devtools.ports import free_port
from devtools.process import Service, ServiceError, spawn
from devtools.services import Nginx, Postgres, Prometheus, RedisServer, nginx_config
from lectr.healthcheck import probe

__all__ = ["DevStack", "DevStackError", "ensure", "main"]

NGINX_TEMPLATE = Path("nginx/lectr.conf.template")
PROMETHEUS_CONFIG = Path("prometheus/prometheus.yml")
PROMETHEUS_TARGETS = Prometheus.TARGETS_FILE
# The container runs `lectr serve` (ENTRYPOINT ["lectr"], CMD ["serve"]); so does every local instance.
SERVE_ARGS = ("serve",)
MIGRATE_ARGS = ("migrate",)
LECTR = (sys.executable, "-m", "lectr")
# Variables `lectr serve` sets for its own workers; inherited ones would make
# instances share (or clobber) each other's metric files and settings.
PRIVATE_ENV = ("PROMETHEUS_MULTIPROC_DIR", "LECTR__SETTINGS_JSON")


class DevStackError(ServiceError):
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
    """A self-contained nginx.conf around the rendered server block."""
    return nginx_config(home, f"    include {site};")


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
        self._postgres: Postgres | None = None
        self._redis: RedisServer | None = None

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
            self._postgres = Postgres(
                self.base / "postgres", self.pg_port, fast=False, log=self.logs / "postgres.log"
            )
            self._add(self._postgres.service)
            self._redis = RedisServer(self.base / "redis", self.redis_port, log=self.logs / "redis.log")
            self._add(self._redis.service)
            self._migrate()
            for i in range(self.instances):
                self._start_gateway(i)
            for i in range(self.instances):
                self._wait_gateway(i)
            self._start_nginx()
            self._start_prometheus()
        except BaseException as e:
            # Keep the logs of a failed start; the processes go.
            self.stop(keep=True)
            if isinstance(e, ServiceError):
                raise DevStackError(f"{e}\n(logs in {self.logs})") from None
            raise
        return self

    def _add(self, svc: Service | None) -> None:
        assert svc is not None
        self.services[svc.name] = svc

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
        # PostgreSQL's stand-in folder outside `base` (if it needed one) holds only data, never kept.
        if self._postgres is not None:
            self._postgres.destroy()
            self._postgres = None

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
        name = f"gateway-{i + 1}"
        svc = spawn(
            name,
            [*LECTR, *SERVE_ARGS],
            self.logs / f"{name}.log",
            self.gateway_urls[i],
            env=self.gateway_env(i),
            # The writer drains for up to 30 s at shutdown.
            stop_timeout=45.0,
        )
        self._add(svc)

    def _wait_gateway(self, i: int) -> None:
        self.services[f"gateway-{i + 1}"].wait_ready(_answers(self.gateway_urls[i] + "/readyz"), 60)

    def start_gateway(self, i: int) -> None:
        """(Re)start instance `i` (0-based) and wait until it is ready."""
        self._start_gateway(i)
        self._wait_gateway(i)

    def stop_gateway(self, i: int, sig: signal.Signals = signal.SIGTERM) -> int | None:
        """Send `sig` to instance `i` (0-based) and wait for it to exit; its exit code."""
        svc = self.services[f"gateway-{i + 1}"]
        svc.expected_exit = True
        svc.stop_signal = sig
        return svc.stop()

    def _start_nginx(self) -> None:
        home = self.base / "nginx"
        home.mkdir(parents=True, exist_ok=True)
        site = home / "lectr.conf"
        site.write_text(
            render_nginx(
                (self.deploy / NGINX_TEMPLATE).read_text(),
                f"127.0.0.1:{self.lb_port}",
                [f"127.0.0.1:{p}" for p in self.gateway_ports],
            )
        )
        lb = Nginx(home, nginx_main_config(home, site), self.lb_url + "/healthz", log=self.logs / "lb.log")
        lb.service.name, lb.service.url = "lb", self.lb_url
        self._add(lb.service)

    def _start_prometheus(self) -> None:
        prom = Prometheus(
            self.base,
            [f"127.0.0.1:{p}" for p in self.gateway_ports],
            config=render_prometheus((self.deploy / PROMETHEUS_CONFIG).read_text(), self.scrape_interval),
            home=self.base / "prometheus",
            port=self.prometheus_port,
            log=self.logs / "prometheus.log",
        )
        self._add(prom.service)


def _answers(url: str) -> Callable[[], bool]:
    return lambda: probe(url, timeout=1.0)


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
