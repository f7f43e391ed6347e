"""The admin API and the request log over real HTTP, and the log through the
CLI: auth, org isolation, pagination, CSV export."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devtools.harness import Gateway, Mock, running
from tests.integration.test_proxy import CHAT, error_of, post

TOKEN = "admin-token-for-tests-5b1f"


@pytest.fixture(scope="module")
def admin_gw(tmp_root: Path, mock: Mock) -> Iterator[Gateway]:
    with running(tmp_root, mock, LECTR_ADMIN_TOKEN=TOKEN) as gw:
        gw.start()
        yield gw


def api(gw: Gateway, method: str, path: str, token: str | None = TOKEN, **kw: object) -> httpx.Response:
    h = {"Authorization": f"Bearer {token}"} if token else {}
    h.update(kw.pop("headers", {}))  # type: ignore[arg-type]
    return httpx.request(method, gw.url + path, headers=h, timeout=30, **kw)  # type: ignore[arg-type]


def until_ok(gw: Gateway, key: str) -> None:
    deadline = time.monotonic() + 3
    while post(gw, key, CHAT).status_code != 200:
        assert time.monotonic() < deadline, "key never became valid"
        time.sleep(0.02)


def test_auth_is_required_and_checked(admin_gw: Gateway) -> None:
    r = api(admin_gw, "GET", "/admin/orgs", token=None)
    assert r.status_code == 401 and error_of(r)["code"] == "admin_auth_required"
    r = api(admin_gw, "GET", "/admin/orgs", token="wrong")
    assert r.status_code == 401 and error_of(r)["code"] == "admin_auth_required"
    assert api(admin_gw, "GET", "/admin/orgs").status_code == 200
    doc = api(admin_gw, "GET", "/admin/openapi.json", token=None).json()
    assert doc["openapi"].startswith("3.")
    assert "/admin/orgs/{org}/requests.csv" in doc["paths"]


def test_org_and_key_lifecycle(admin_gw: Gateway) -> None:
    r = api(admin_gw, "POST", "/admin/orgs", json={"name": "apiorg"})
    assert r.status_code == 201
    key = r.json()["key"]
    assert api(admin_gw, "POST", "/admin/orgs", json={"name": "apiorg"}).status_code == 409
    assert api(admin_gw, "POST", "/admin/orgs", json={"nam": "x"}).status_code == 400
    until_ok(admin_gw, key)
    keys = api(admin_gw, "GET", "/admin/orgs/apiorg/keys").json()["data"]
    assert [k["prefix"] for k in keys] == [key[7:15]] and key not in str(keys)

    r = api(admin_gw, "POST", f"/admin/orgs/apiorg/keys/{key[7:15]}/rotate")
    assert r.status_code == 201
    new_key = r.json()["key"]
    deadline = time.monotonic() + 1.0
    while post(admin_gw, key, CHAT).status_code != 401:
        assert time.monotonic() < deadline, "rotated key still accepted after 1 s"
    until_ok(admin_gw, new_key)

    r = api(admin_gw, "PATCH", "/admin/orgs/apiorg", json={"disabled": True})
    assert r.json()["disabled"] is True
    deadline = time.monotonic() + 1.0
    while (r := post(admin_gw, new_key, CHAT)).status_code == 200:
        assert time.monotonic() < deadline, "disabled org still served after 1 s"
    assert error_of(r)["code"] == "org_disabled"
    api(admin_gw, "PATCH", "/admin/orgs/apiorg", json={"disabled": False})
    until_ok(admin_gw, new_key)
    assert api(admin_gw, "DELETE", f"/admin/orgs/apiorg/keys/{new_key[7:15]}").status_code == 200
    assert api(admin_gw, "DELETE", f"/admin/orgs/apiorg/keys/{new_key[7:15]}").status_code == 404
    r = api(
        admin_gw,
        "PATCH",
        "/admin/orgs/apiorg",
        json={"azure_endpoint": "https://r.openai.azure.com", "azure_api_version": "2024-10-21"},
    )
    assert r.json()["azure_api_version"] == "2024-10-21"


def test_log_pages_filters_and_org_isolation(admin_gw: Gateway) -> None:
    a = api(admin_gw, "POST", "/admin/orgs", json={"name": "loga"}).json()["key"]
    b = api(admin_gw, "POST", "/admin/orgs", json={"name": "logb"}).json()["key"]
    until_ok(admin_gw, a)
    until_ok(admin_gw, b)
    for i in range(7):
        post(admin_gw, a, CHAT, **{"X-Lectr-Feature": f"feat-{i % 2}"})
    post(admin_gw, a, CHAT, **{"x-mock-status": "500", "X-Lectr-Feature": "feat-0"})
    deadline = time.monotonic() + 5
    while len(api(admin_gw, "GET", "/admin/orgs/loga/requests?limit=100").json()["data"]) < 9:
        assert time.monotonic() < deadline
        time.sleep(0.05)

    seen, cursor = [], None
    while True:
        q = "?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = api(admin_gw, "GET", f"/admin/orgs/loga/requests{q}").json()
        seen += page["data"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 9  # 8 above + the until_ok probe
    assert [r["ts"] for r in seen] == sorted((r["ts"] for r in seen), reverse=True)

    f0 = api(admin_gw, "GET", "/admin/orgs/loga/requests?feature=feat-0").json()["data"]
    assert len(f0) == 5 and {r["feature"] for r in f0} == {"feat-0"}
    errs = api(admin_gw, "GET", "/admin/orgs/loga/requests?status=5xx").json()["data"]
    assert [r["status_code"] for r in errs] == [500]
    assert api(admin_gw, "GET", "/admin/orgs/loga/requests?status=bad").status_code == 400
    assert api(admin_gw, "GET", "/admin/orgs/loga/requests?since=yesterday").status_code == 400

    # An org key reads its own org's log and nothing else.
    own = api(admin_gw, "GET", "/admin/orgs/loga/requests", token=None, headers={"X-Lectr-Key": a})
    assert own.status_code == 200 and len(own.json()["data"]) == 9
    other = api(admin_gw, "GET", "/admin/orgs/logb/requests", token=None, headers={"X-Lectr-Key": a})
    missing = api(admin_gw, "GET", "/admin/orgs/no-such-org/requests", token=None, headers={"X-Lectr-Key": a})
    # Another org's data and a missing org look the same to an org key.
    assert other.status_code == missing.status_code == 404 and error_of(other)["code"] == "not_found"
    assert error_of(other)["message"].replace("logb", "no-such-org") == error_of(missing)["message"]
    assert api(admin_gw, "GET", "/admin/orgs", token=None, headers={"X-Lectr-Key": a}).status_code == 403
    assert (
        api(admin_gw, "GET", "/admin/orgs/loga/keys", token=None, headers={"X-Lectr-Key": a}).status_code
        == 403
    )


def test_csv_export_quotes_and_neutralises(admin_gw: Gateway) -> None:
    key = api(admin_gw, "POST", "/admin/orgs", json={"name": "csvorg"}).json()["key"]
    until_ok(admin_gw, key)
    # (A header cannot carry a newline; export's own test covers those.)
    nasty = ['=HYPERLINK("http://x","y")', "+1", "-2", "@SUM(A1)", 'a,b "c";d', "plain"]
    for f in nasty:
        r = httpx.post(
            admin_gw.url + "/v1/chat/completions",
            json=CHAT,
            headers={"X-Lectr-Key": key, "Authorization": "Bearer sk", "X-Lectr-Feature": f},
        )
        assert r.status_code == 200, f
    deadline = time.monotonic() + 5
    while True:
        r = api(admin_gw, "GET", "/admin/orgs/csvorg/requests.csv")
        rows = list(csv.reader(io.StringIO(r.text)))
        if len(rows) >= 1 + len(nasty) + 1:
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert r.headers["content-type"].startswith("text/csv")
    assert b"\r\n" in r.content
    header, body = rows[0], rows[1:]
    assert header[:3] == ["time_utc", "id", "ts"]
    features = {row[header.index("feature")] for row in body}
    assert features >= {'\'=HYPERLINK("http://x","y")', "'+1", "'-2", "'@SUM(A1)", 'a,b "c";d', "plain"}
    assert not any(cell.startswith(("=", "+", "-", "@")) for row in body for cell in row)


def test_cli_log_and_csv(admin_gw: Gateway, tmp_path: Path) -> None:
    key = api(admin_gw, "POST", "/admin/orgs", json={"name": "cliorg"}).json()["key"]
    until_ok(admin_gw, key)
    post(admin_gw, key, CHAT, **{"X-Lectr-Feature": "cli-feature"})
    deadline = time.monotonic() + 5
    while "cli-feature" not in (out := admin_gw.cli("log", "cliorg")):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert "gpt-4o-mini" in out and "STATUS" in out
    dest = tmp_path / "out.csv"
    msg = admin_gw.cli("log", "cliorg", "--feature", "cli-feature", "--csv", str(dest))
    assert "wrote 1 records" in msg
    rows = list(csv.reader(dest.open(newline="")))
    assert len(rows) == 2 and rows[1][rows[0].index("feature")] == "cli-feature"
