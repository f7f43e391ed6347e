"""Console session cookies: signed, expiring, bound to their CSRF token."""

from __future__ import annotations

import base64

import msgspec
import pytest

from lectr.console import session
from lectr.console.session import Session, Signer, read_cookie, secret_from


def test_cookie_round_trip_and_tampering() -> None:
    signer = Signer(b"k" * 32)
    s, cookie = signer.issue(False, "org_a", "abcd1234")
    assert signer.load(cookie) == s
    _, mac = cookie.rsplit(".", 1)
    # Another org in the same body, the old MAC: refused.
    forged = msgspec.structs.replace(s, org_id="org_b", admin=True)
    forged_body = base64.urlsafe_b64encode(msgspec.json.encode(forged)).decode()
    assert signer.load(f"{forged_body}.{mac}") is None
    assert signer.load(cookie + "x") is None
    assert signer.load("") is None and signer.load("nodot") is None
    # Another key signs differently (a restart without a configured secret).
    assert Signer(b"j" * 32).load(cookie) is None


def test_expired_cookie_is_no_session(monkeypatch: pytest.MonkeyPatch) -> None:
    signer = Signer(b"k" * 32)
    _, cookie = signer.issue(True, None, None)
    real = session.time.time
    monkeypatch.setattr(session.time, "time", lambda: real() + session.MAX_AGE + 1)
    assert signer.load(cookie) is None


def test_csrf_token_is_per_session() -> None:
    signer = Signer(b"k" * 32)
    a, _ = signer.issue(True, None, None)
    b, _ = signer.issue(True, None, None)
    assert signer.check_csrf(a, signer.csrf(a))
    assert not signer.check_csrf(a, signer.csrf(b))
    assert not signer.check_csrf(a, None) and not signer.check_csrf(a, "")


def test_secret_is_stable_across_workers_and_never_the_token() -> None:
    assert secret_from(None, "tok") == secret_from(None, "tok") != b"tok"
    assert secret_from("configured", "tok") != secret_from(None, "tok")
    assert secret_from(None, None) != secret_from(None, None)  # random per process


def test_read_cookie_picks_the_named_one() -> None:
    header = "a=1; lectr_console_pre=pre; lectr_console=sess"
    assert read_cookie(header) == "sess"
    assert read_cookie(header, "lectr_console_pre") == "pre"
    assert read_cookie(None) is None
    assert isinstance(Session(True, None, None, "n", 0.0), Session)
