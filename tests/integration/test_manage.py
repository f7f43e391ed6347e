"""One management layer: the CLI and the admin API make each change through
the same code, so the same invalid input gets the same message from both."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.harness import LECTR, ROOT, Gateway, Mock, running
from tests.integration.test_admin import TOKEN, api
from tests.integration.test_proxy import error_of


@pytest.fixture(scope="module")
def gw(tmp_root: Path, mock: Mock) -> Iterator[Gateway]:
    with running(tmp_root, mock, LECTR_ADMIN_TOKEN=TOKEN) as g:
        g.start()
        g.cli("orgs", "create", "same")
        yield g


def cli_error(gw: Gateway, *args: str) -> str:
    r = subprocess.run([*LECTR, *args], env=gw.env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0, f"lectr {' '.join(args)} succeeded: {r.stdout}"
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("lectr: "), r.stderr
    return last.removeprefix("lectr: ")


LONG = "n" * 201
# (CLI arguments, admin method, path, JSON body)
CASES: list[tuple[list[str], str, str, Any]] = [
    (["orgs", "create", LONG], "POST", "/admin/orgs", {"name": LONG}),
    (["orgs", "create", "   "], "POST", "/admin/orgs", {"name": "   "}),
    (["orgs", "create", "same"], "POST", "/admin/orgs", {"name": "same"}),
    (["orgs", "disable", "nobody"], "PATCH", "/admin/orgs/nobody", {"disabled": True}),
    (
        ["orgs", "azure", "same", "--endpoint", "ftp://x", "--api-version", "2024-10-21"],
        "PATCH",
        "/admin/orgs/same",
        {"azure_endpoint": "ftp://x", "azure_api_version": "2024-10-21"},
    ),
    (["keys", "revoke", "same", "nokey123"], "DELETE", "/admin/orgs/same/keys/nokey123", None),
    (["keys", "rotate", "same", "-okey123"], "POST", "/admin/orgs/same/keys/-okey123/rotate", None),
    (
        ["rules", "add", "same", "bad", "--provider", "bedrock"],
        "POST",
        "/admin/orgs/same/rules",
        {"name": "bad", "target_provider": "bedrock"},
    ),
    (
        ["rules", "add", "same", "zero", "--model", "m", "--split", "0"],
        "POST",
        "/admin/orgs/same/rules",
        {"name": "zero", "target_model": "m", "split_percent": 0},
    ),
    (["rules", "add", "same", "noop"], "POST", "/admin/orgs/same/rules", {"name": "noop"}),
    (["rules", "delete", "same", "ghost"], "DELETE", "/admin/orgs/same/rules/ghost", None),
    (
        ["fallbacks", "set", "same", "openai/gpt-4o-mini", "--on-status", "200"],
        "PUT",
        "/admin/orgs/same/fallbacks/*",
        {"targets": [{"provider": "openai", "model": "gpt-4o-mini"}], "on_status": [200]},
    ),
    (
        ["fallbacks", "set", "same", "bedrock/x"],
        "PUT",
        "/admin/orgs/same/fallbacks/*",
        {"targets": [{"provider": "bedrock", "model": "x"}]},
    ),
    (
        ["budgets", "set", "same", "--soft", "5", "--hard", "2"],
        "PUT",
        "/admin/orgs/same/budgets/*/month",
        {"soft_usd": 5, "hard_usd": 2},
    ),
    (["budgets", "set", "same"], "PUT", "/admin/orgs/same/budgets/*/month", {}),
    (["limits", "set", "same", "--rpm", "0"], "PUT", "/admin/orgs/same/limits/*", {"requests_per_min": 0}),
    (
        ["targets", "set", "same", "--p95-ms", "-1"],
        "PUT",
        "/admin/orgs/same/latency-targets/*",
        {"p95_ms": -1},
    ),
    (["overview", "same", "--since", "nan"], "GET", "/admin/orgs/same/overview?since=nan", None),
    (["overview", "same", "--since", "1e308"], "GET", "/admin/orgs/same/overview?since=1e308", None),
    (["log", "same", "--status", "7xx"], "GET", "/admin/orgs/same/requests?status=7xx", None),
    (["anomalies", "dismiss", "same", "an_x"], "POST", "/admin/orgs/same/anomalies/an_x/dismiss", None),
    (
        ["recommendations", "apply", "same", "rec_x"],
        "POST",
        "/admin/orgs/same/recommendations/rec_x/apply",
        {},
    ),
]


@pytest.mark.parametrize(("argv", "method", "path", "body"), CASES, ids=[" ".join(c[0][:2]) for c in CASES])
def test_cli_and_admin_api_reject_alike(
    gw: Gateway, argv: list[str], method: str, path: str, body: Any
) -> None:
    r = api(gw, method, path, **({} if body is None else {"json": body}))
    assert 400 <= r.status_code < 500, r.text
    assert cli_error(gw, *argv) == error_of(r)["message"]


def test_a_prefix_starting_with_a_dash_reaches_the_command(gw: Gateway) -> None:
    # argparse would take "-okey123" for an option; the CLI passes it through
    # as the prefix, so the answer is "no such key", not a usage error.
    assert "no active key with prefix '-okey123'" in cli_error(gw, "keys", "revoke", "same", "-okey123")
