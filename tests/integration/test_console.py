"""The console in a real headless Chromium (Debian's package, installed here
when missing; Playwright drives it, no browser is downloaded): sign-in, every
page without console errors at desktop and phone width in light and dark,
changes made in forms taking effect on the proxied traffic, XSS, tenancy,
CSV export, and the console's numbers against the admin API's."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.harness import ROOT, Gateway, Mock, running
from devtools.ports import free_port

TOKEN = "console-admin-token-0123456789"
CHROMIUM = "/usr/bin/chromium"
XSS = ("<script>alert(1)</script>", '"><img src=x onerror=alert(1)>')
PAGES = (
    "",
    "/features",
    "/models",
    "/requests",
    "/rules",
    "/limits",
    "/fallbacks",
    "/anomalies",
    "/recommendations",
    "/keys",
)
SHOTS = Path(os.environ.get("LECTR_CONSOLE_SHOTS", "/tmp/lectr-console-shots"))


def ensure_chromium() -> None:
    """Install Debian's chromium when it is missing (never skip)."""
    if Path(CHROMIUM).exists():
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env)


def admin(gw: Gateway, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(
        method, gw.url + path, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10, **kw
    )


def proxied(gw: Gateway, key: str, feature: str, model: str = "gpt-4o", **headers: str) -> httpx.Response:
    return httpx.post(
        gw.url + "/v1/chat/completions",
        headers={
            "X-Lectr-Key": key,
            "Authorization": "Bearer sk-test",
            "X-Lectr-Feature": feature,
            **headers,
        },
        json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16},
        timeout=10,
    )


def until(cond: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = cond()
        if out:
            return out
        time.sleep(0.05)
    raise AssertionError("condition not met before the deadline")


@pytest.fixture(scope="module")
def console_gw(tmp_root: Path, mock: Mock) -> Iterator[Gateway]:
    with running(tmp_root, mock, LECTR_ADMIN_TOKEN=TOKEN) as gw:
        gw.key = gw.create_org("acme")  # type: ignore[attr-defined]
        gw.other_key = gw.create_org("globex")  # type: ignore[attr-defined]
        gw.start()
        orgs = {o["name"]: o["id"] for o in admin(gw, "GET", "/admin/orgs").json()["data"]}
        gw.orgs = orgs  # type: ignore[attr-defined]
        for i in range(12):
            proxied(gw, gw.key, ("search", "summarise", "chat")[i % 3])  # type: ignore[attr-defined]
        proxied(gw, gw.key, "search", **{"x-mock-status": "500"})  # type: ignore[attr-defined]
        for tag in XSS:
            proxied(gw, gw.key, tag)  # type: ignore[attr-defined]
        proxied(gw, gw.other_key, "globex-secret-feature")  # type: ignore[attr-defined]
        gw.records(expect=16)
        yield gw


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    ensure_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


class Session:
    """A browser context signed in to the console, recording console errors
    and dialogs (an XSS that runs would open one)."""

    def __init__(self, browser: Any, gw: Gateway, secret: str, **ctx: Any) -> None:
        self.gw = gw
        self.ctx = browser.new_context(accept_downloads=True, **ctx)
        self.page = self.ctx.new_page()
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.confirm = False
        self.page.on("dialog", self._dialog)
        self.page.goto(gw.url + "/console")
        assert "/console/signin" in self.page.url
        self.page.fill("#token", secret)
        self.page.click("button[type=submit]")
        self.page.wait_for_url(re.compile(r"/console(\?.*)?$"))

    def _dialog(self, d: Any) -> None:
        if self.confirm and d.type == "confirm":
            d.accept()
            return
        self.dialogs.append(d.message)
        d.dismiss()

    def goto(self, path: str) -> Any:
        return self.page.goto(self.gw.url + "/console" + path)

    def close(self) -> None:
        self.ctx.close()


def test_no_session_redirects_every_url_to_sign_in(console_gw: Gateway) -> None:
    for path in (*PAGES, "/overview/live", "/requests.csv", "/request?id=x&ts=1"):
        r = httpx.get(console_gw.url + "/console" + path, timeout=10)
        assert r.status_code == 303 and r.headers["location"].startswith("/console/signin?next="), path
    r = httpx.post(console_gw.url + "/console/rules/create", data={"name": "x"}, timeout=10)
    assert r.status_code == 303 and r.headers["location"].startswith("/console/signin")
    # A forged cookie is no session either; the token never appears in one.
    r = httpx.get(console_gw.url + "/console", cookies={"lectr_console": "e30.forged"}, timeout=10)
    assert r.status_code == 303
    r = httpx.get(console_gw.url + "/console/signin", timeout=10)
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp


def test_session_cookie_flags_and_secure_behind_tls(console_gw: Gateway) -> None:
    for proto, secure in ((None, False), ("https", True)):
        headers = {"x-forwarded-proto": proto} if proto else {}
        c = httpx.Client(base_url=console_gw.url, headers=headers, timeout=10)
        page = c.get("/console/signin")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        r = c.post("/console/signin", data={"csrf": csrf.group(1), "token": TOKEN, "next": "/console"})
        assert r.status_code == 303
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
        assert ("; Secure" in cookie) is secure
        if secure:  # the client keeps a Secure cookie for https only
            c.close()
            continue
        # Signing out clears it.
        html = c.get("/console").text
        token = re.search(r'name="csrf" value="([^"]+)"', html)
        assert token is not None
        out = c.post("/console/signout", data={"csrf": token.group(1)})
        assert out.status_code == 303 and "Max-Age=0" in out.headers["set-cookie"]
        c.close()


def test_every_page_admin_desktop_phone_light_dark(console_gw: Gateway, browser: Any) -> None:
    gw = console_gw
    SHOTS.mkdir(parents=True, exist_ok=True)
    acme = gw.orgs["acme"]  # type: ignore[attr-defined]
    for width, height, label in ((1280, 900, "desktop"), (390, 844, "phone")):
        for scheme in ("light", "dark"):
            s = Session(browser, gw, TOKEN, viewport={"width": width, "height": height}, color_scheme=scheme)
            try:
                cookie = next(c for c in s.ctx.cookies() if c["name"] == "lectr_console")
                assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
                assert TOKEN not in cookie["value"]
                for path in PAGES:
                    r = s.goto(f"{path}?org={acme}&range=24h")
                    assert r.status == 200, path
                    assert TOKEN not in s.page.content()
                    name = (path.strip("/") or "overview").replace("/", "-")
                    if path == "":
                        s.page.wait_for_selector(".chart canvas")
                    s.page.screenshot(path=str(SHOTS / f"{name}-{label}-{scheme}.png"), full_page=True)
                # The org switcher reaches the other org.
                s.goto(f"?org={gw.orgs['globex']}")  # type: ignore[attr-defined]
                assert s.page.locator("#org-switch").input_value() == gw.orgs["globex"]  # type: ignore[attr-defined]
                assert s.errors == [], s.errors
            finally:
                s.close()


def test_overview_refreshes_without_reload(console_gw: Gateway, browser: Any) -> None:
    gw = console_gw
    s = Session(browser, gw, TOKEN)
    try:
        s.goto(f"?org={gw.orgs['acme']}")  # type: ignore[attr-defined]
        before = int(s.page.locator("[data-metric=requests]").inner_text().split()[0])
        proxied(gw, gw.key, "search")  # type: ignore[attr-defined]
        s.page.wait_for_function(
            "n => parseInt(document.querySelector('[data-metric=requests]').textContent) > n",
            arg=before,
            timeout=15000,
        )
        assert s.errors == []
    finally:
        s.close()


def test_live_fragment_is_one_render_per_period_for_every_session(console_gw: Gateway, browser: Any) -> None:
    """Open consoles cost the serving loop one render of the live fragment per
    org and range per period (views.LIVE_TTL, 4 s), whatever the number of
    polling sessions: the admin's and the org's sessions get the same bytes
    within it (`data-rendered` is the render's own time), a new render after."""
    gw = console_gw
    org = gw.orgs["acme"]  # type: ignore[attr-defined]
    sessions = [Session(browser, gw, TOKEN), Session(browser, gw, gw.key)]  # type: ignore[attr-defined]
    try:
        jars = [{c["name"]: c["value"] for c in s.ctx.cookies()} for s in sessions]

        def live(jar: dict[str, str]) -> str:
            r = httpx.get(f"{gw.url}/console/overview/live?org={org}&range=24h", cookies=jar, timeout=10)
            assert r.status_code == 200
            return r.text

        t0 = time.monotonic()
        first = live(jars[0])
        seen = [live(jars[i % 2]) for i in range(6)]
        # Seven loopback GETs fit in one period by far; were they slower,
        # equal bytes could not be expected, so that is checked first.
        assert time.monotonic() - t0 < 4.0
        assert set(seen) == {first}
        stamp = re.compile(r'data-rendered="([\d.]+)"')
        m0 = stamp.search(first)
        assert m0 is not None
        later = until(lambda: (m := stamp.search(live(jars[1]))) and float(m[1]) > float(m0[1]) and m, 10.0)
        assert float(later[1]) >= float(m0[1]) + 4.0
    finally:
        for s in sessions:
            s.close()


def test_xss_tags_render_as_text(console_gw: Gateway, browser: Any) -> None:
    gw = console_gw
    s = Session(browser, gw, TOKEN)
    try:
        org = gw.orgs["acme"]  # type: ignore[attr-defined]
        for path in ("", "/features", "/requests", "/anomalies"):
            s.goto(f"{path}?org={org}")
            if path in ("/features", "/requests"):
                text = s.page.locator("main").inner_text()
                assert all(tag in text for tag in XSS), path
            assert s.page.locator("main img[src=x]").count() == 0
            assert s.page.locator("main script:not([type='application/json'])").count() == 0
        s.goto(f"/requests?org={org}&feature={XSS[1]}")
        assert s.page.locator("#f-feature").input_value() == XSS[1]
        assert s.page.locator("main img[src=x]").count() == 0
        # The one record, in full, still as text.
        s.page.locator("table.log a").first.click()
        s.page.wait_for_url(re.compile(r"/console/request\?"))
        assert XSS[1] in s.page.locator("table.kv").inner_text()
        assert s.page.locator("main img[src=x]").count() == 0
        assert s.dialogs == [] and s.errors == []
    finally:
        s.close()


def test_rule_made_in_console_routes_the_next_request(console_gw: Gateway, browser: Any) -> None:
    gw = console_gw
    s = Session(browser, gw, TOKEN)
    try:
        s.goto(f"/rules?org={gw.orgs['acme']}")  # type: ignore[attr-defined]
        # An invalid split is refused with the message beside its field.
        s.page.fill("#rule-create-name", "mini-for-summaries")
        s.page.fill("#rule-create-match_feature", "summarise")
        s.page.fill("#rule-create-target_model", "gpt-4o-mini")
        s.page.fill("#rule-create-split_percent", "0")
        s.page.click("#rule-create button[type=submit]")
        err = s.page.locator("#rule-create-split_percent-err")
        assert "split_percent must be between 1 and 100" in err.inner_text()
        assert s.page.locator("#rule-create-name").input_value() == "mini-for-summaries"
        # The refused form came back as a 400, which Chromium logs; nothing else may.
        assert all("status of 400" in e for e in s.errors)
        s.errors.clear()
        s.page.fill("#rule-create-split_percent", "100")
        s.page.click("#rule-create button[type=submit]")
        s.page.wait_for_selector("tr[data-rule=mini-for-summaries]")
        rule_id = next(
            r["id"]
            for r in admin(gw, "GET", f"/admin/orgs/{gw.orgs['acme']}/rules").json()["data"]  # type: ignore[attr-defined]
            if r["name"] == "mini-for-summaries"
        )
        # Applied at once on this instance (Manager's on_change), so the next request is routed.
        r = proxied(gw, gw.key, "summarise")  # type: ignore[attr-defined]
        assert r.status_code == 200
        rec = until(lambda: [x for x in gw.records(feature="summarise") if x["rule_id"] == rule_id])
        assert rec[-1]["model_requested"] == "gpt-4o" and rec[-1]["model_actual"] == "gpt-4o-mini"
        # The rule's share of traffic, from the rollups (written with the record).
        s.goto(f"/rules?org={gw.orgs['acme']}")  # type: ignore[attr-defined]
        share = s.page.locator("tr[data-rule=mini-for-summaries] [data-share]").get_attribute("data-share")
        assert share == "1"
        # Disable, then delete, from the console.
        s.page.locator("tr[data-rule=mini-for-summaries] button", has_text="Disable").click()
        s.page.wait_for_selector("tr[data-rule=mini-for-summaries] .pill.off")
        s.confirm = True
        s.page.locator("tr[data-rule=mini-for-summaries] button", has_text="Delete").click()
        s.page.wait_for_selector("text=Rule deleted.")
        assert s.page.locator("tr[data-rule=mini-for-summaries]").count() == 0
        assert s.errors == []
    finally:
        s.close()


def test_budget_made_in_console_is_enforced(console_gw: Gateway, browser: Any) -> None:
    gw = console_gw
    s = Session(browser, gw, TOKEN)
    try:
        s.goto(f"/limits?org={gw.orgs['acme']}")  # type: ignore[attr-defined]
        s.page.fill("#budget-scope", "capped")
        s.page.fill("#budget-hard_usd", "0.00001")
        s.page.click("#budget-form button[type=submit]")
        s.page.wait_for_selector("tr[data-budget='capped/month']")
        first = proxied(gw, gw.key, "capped")  # type: ignore[attr-defined]

        def rejected() -> httpx.Response | None:
            r = proxied(gw, gw.key, "capped")  # type: ignore[attr-defined]
            return r if r.status_code >= 400 else None

        r = first if first.status_code >= 400 else until(rejected)
        assert r.json()["error"]["code"] == "budget_exceeded"
        s.goto(f"/limits?org={gw.orgs['acme']}")  # type: ignore[attr-defined]
        # Refused before any spend: the reservation alone would pass the cap.
        assert "$0.000010" in s.page.locator("tr[data-budget='capped/month']").inner_text()
        # Other features are not capped.
        assert proxied(gw, gw.key, "search").status_code == 200  # type: ignore[attr-defined]
        assert s.errors == []
    finally:
        s.close()


def test_dismiss_anomaly(console_gw: Gateway, browser: Any) -> None:
    from lectr.store.sqlite import SQLiteStore
    from lectr.types import Anomaly

    gw = console_gw
    org = gw.orgs["acme"]  # type: ignore[attr-defined]
    now = time.time()
    anomaly = Anomaly(
        id="an_console",
        org_id=org,
        feature="search",
        type="cost_spike",
        metric="cost_usd",
        baseline=0.01,
        sigma=0.002,
        observed=0.05,
        deviation=20.0,
        severity="high",
        window_start=int(now) // 300 * 300,
        window_end=int(now) // 300 * 300 + 300,
        detected_at=now,
        state="active",
        ongoing=True,
    )

    async def put() -> None:
        st = SQLiteStore(gw.data_dir / "lectr.db")
        assert await st.open_anomaly(anomaly, None)
        await st.close()

    # Playwright's sync API holds an event loop on this thread: store from another.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, put()).result()
    s = Session(browser, gw, TOKEN)
    try:
        s.goto(f"/anomalies?org={org}")
        assert "Building baseline" in s.page.locator("main").inner_text()
        s.page.locator("tr[data-anomaly=an_console] button", has_text="Dismiss").click()
        s.page.wait_for_selector("text=Anomaly dismissed.")
        assert s.page.locator("tr[data-anomaly=an_console]").count() == 0
        s.goto(f"/anomalies?org={org}&all=1")
        assert "dismissed" in s.page.locator("tr[data-anomaly=an_console]").inner_text()
        feed = admin(gw, "GET", f"/admin/orgs/{org}/anomalies?all=1").json()
        assert next(a for a in feed["data"] if a["id"] == "an_console")["dismissed_at"] is not None
        assert s.errors == []
    finally:
        s.close()


def test_org_key_session_is_read_only_and_sees_only_its_org(console_gw: Gateway, browser: Any) -> None:
    gw = console_gw
    own, other = gw.orgs["acme"], gw.orgs["globex"]  # type: ignore[attr-defined]
    s = Session(browser, gw, gw.key)  # type: ignore[attr-defined]
    try:
        cookie = next(c for c in s.ctx.cookies() if c["name"] == "lectr_console")
        assert gw.key not in cookie["value"]  # type: ignore[attr-defined]
        assert s.page.locator("#org-switch").count() == 0
        cookies = {c["name"]: c["value"] for c in s.ctx.cookies()}

        def get(path: str) -> httpx.Response:
            return httpx.get(gw.url + "/console" + path, cookies=cookies, timeout=10)

        for path in PAGES:
            r = s.goto(f"{path}?org={own}")
            assert r.status == 200, path
            assert "globex" not in s.page.content()
            assert s.page.locator("main form[method=post]").count() == 0, path
        for path in (*PAGES, "/overview/live", "/requests.csv"):
            assert get(f"{path}?org={own}").status_code == 200, path
            assert get(f"{path}?org={other}").status_code == 403, path
            assert get(f"{path}?org=globex").status_code == 403, path
        assert "globex-secret-feature" not in get("/requests.csv").text
        # No org parameter: its own org, never the first org in the store.
        s.goto("/requests")
        assert "globex-secret-feature" not in s.page.content()
        rec = gw.records(org_id=other)[0]
        assert get(f"/request?org={other}&id={rec['id']}&ts={rec['ts']}").status_code == 403
        assert get(f"/request?id={rec['id']}&ts={rec['ts']}").status_code == 404
        # Every form, posted with this session's own valid CSRF token: refused.
        html = get(f"/keys?org={own}").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', html)
        assert csrf is not None
        forms = (
            "/rules/create",
            "/rules/update",
            "/rules/toggle",
            "/rules/delete",
            "/rules/move",
            "/budgets/set",
            "/budgets/delete",
            "/limits/set",
            "/limits/delete",
            "/targets/set",
            "/targets/delete",
            "/fallbacks/set",
            "/fallbacks/delete",
            "/anomalies/dismiss",
            "/recommendations/apply",
            "/keys/create",
            "/keys/rotate",
            "/keys/revoke",
            "/settings/azure",
        )
        keys_before = admin(gw, "GET", f"/admin/orgs/{other}/keys").json()
        for form in forms:
            for org in (own, other):
                r = httpx.post(
                    gw.url + "/console" + form,
                    data={
                        "csrf": csrf.group(1),
                        "org": org,
                        "name": "evil",
                        "target_model": "x",
                        "hard_usd": "1",
                    },
                    cookies=cookies,
                    timeout=10,
                )
                assert r.status_code == 403, (form, org, r.status_code)
        assert admin(gw, "GET", f"/admin/orgs/{other}/keys").json() == keys_before
        assert all(r["name"] != "evil" for r in admin(gw, "GET", f"/admin/orgs/{own}/rules").json()["data"])
    finally:
        s.close()


def test_forms_need_the_csrf_token(console_gw: Gateway, browser: Any) -> None:
    gw = console_gw
    s = Session(browser, gw, TOKEN)
    try:
        cookies = {c["name"]: c["value"] for c in s.ctx.cookies()}
        for token in (None, "wrong"):
            data = {"org": gw.orgs["acme"], "form": "rule-create", "name": "csrf-test", "target_model": "m"}  # type: ignore[attr-defined]
            if token:
                data["csrf"] = token
            r = httpx.post(gw.url + "/console/rules/create", data=data, cookies=cookies, timeout=10)
            assert r.status_code == 403
        rules = admin(gw, "GET", f"/admin/orgs/{gw.orgs['acme']}/rules").json()["data"]  # type: ignore[attr-defined]
        assert all(r["name"] != "csrf-test" for r in rules)
    finally:
        s.close()


def test_csv_export_downloads_the_filtered_rows(console_gw: Gateway, browser: Any, tmp_path: Path) -> None:
    gw = console_gw
    s = Session(browser, gw, TOKEN)
    try:
        s.goto(f"/requests?org={gw.orgs['acme']}&feature=chat")  # type: ignore[attr-defined]
        with s.page.expect_download() as info:
            s.page.click("text=Export CSV")
        path = tmp_path / "export.csv"
        info.value.save_as(path)
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
        want = gw.records(feature="chat", org_id=gw.orgs["acme"])  # type: ignore[attr-defined]
        assert rows and {r["id"] for r in rows} == {r["id"] for r in want}
        assert all(r["feature"] == "chat" for r in rows)
    finally:
        s.close()


def test_console_numbers_equal_the_admin_api_and_records(console_gw: Gateway, browser: Any) -> None:
    gw = console_gw
    org = gw.orgs["acme"]  # type: ignore[attr-defined]
    s = Session(browser, gw, TOKEN)
    try:
        s.goto(f"?org={org}&range=24h")
        live = s.page.locator("#live")
        since, until_ = live.get_attribute("data-since"), live.get_attribute("data-until")
        shown = int(s.page.locator("[data-metric=requests]").inner_text().split()[0])
        errors = int(s.page.locator("[data-metric=errors]").inner_text().split()[0])
        api = admin(gw, "GET", f"/admin/orgs/{org}/overview?since={since}&until={until_}").json()["totals"]
        assert (shown, errors) == (api["requests"], api["errors"])
        recs = [r for r in gw.records(org_id=org) if float(since or 0) <= r["ts"] < float(until_ or 0)]
        assert shown == len(recs)
        assert errors == sum(1 for r in recs if r["status_code"] >= 400)
        cost = float(s.page.locator("[data-metric=cost]").get_attribute("data-value") or "nan")
        assert cost == pytest.approx(api["cost_usd"], rel=1e-12)
        assert cost == pytest.approx(sum(r["cost_usd"] or 0 for r in recs), rel=1e-9)
    finally:
        s.close()


def test_console_can_be_turned_off(tmp_root: Path, mock: Mock) -> None:
    with running(tmp_root, mock, LECTR_CONSOLE_ENABLED="false") as gw:
        gw.start()
        assert httpx.get(gw.url + "/console", timeout=10).status_code == 404


def test_demo_sends_traffic_and_prints_the_console_url(tmp_path: Path) -> None:
    port = free_port()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "devtools.demo",
            "--port",
            str(port),
            "--minutes",
            "0.05",
            "--rate",
            "4",
            "--exit",
            "--dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert f"http://127.0.0.1:{port}/console" in out
    key = re.search(r"org key: +(lc_key_\S+)", out)
    assert key is not None
    sent = re.search(r"Sent (\d+) requests", out)
    assert sent is not None and int(sent.group(1)) >= 4
    conn = sqlite3.connect(tmp_path / "lectr.db")
    try:
        n = conn.execute("SELECT count(*) FROM requests").fetchone()[0]
    finally:
        conn.close()
    assert n == int(sent.group(1))
