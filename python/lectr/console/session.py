"""Console sessions: a signed cookie naming who signed in (never the token or
key itself), its expiry, and the CSRF token derived from it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time

import msgspec

COOKIE = "lectr_console"
MAX_AGE = 12 * 3600


class Session(msgspec.Struct, frozen=True, array_like=True):
    """`admin` sees every org; otherwise `org_id`, signed in with the org
    key whose public `prefix` is kept so revoking the key ends the session."""

    admin: bool
    org_id: str | None
    prefix: str | None
    nonce: str
    expires: float


def secret_from(console_secret: str | None, admin_token: str | None) -> bytes:
    """The signing key: configured, else derived from the admin token (so every
    worker accepts every other's cookies), else random for this process."""
    if console_secret:
        return hashlib.sha256(b"lectr-console:" + console_secret.encode()).digest()
    if admin_token:
        return hmac.new(admin_token.encode(), b"lectr-console-session", hashlib.sha256).digest()
    return os.urandom(32)


class Signer:
    """Issues and checks session cookies and CSRF tokens."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, data: bytes) -> str:
        return base64.urlsafe_b64encode(hmac.new(self._key, data, hashlib.sha256).digest()).decode()

    def issue(self, admin: bool, org_id: str | None, prefix: str | None) -> tuple[Session, str]:
        s = Session(admin, org_id, prefix, secrets.token_urlsafe(16), time.time() + MAX_AGE)
        body = base64.urlsafe_b64encode(msgspec.json.encode(s)).decode()
        return s, f"{body}.{self._mac(body.encode())}"

    def load(self, cookie: str | None) -> Session | None:
        """The session a cookie value carries, or None when missing, forged or expired."""
        if not cookie or "." not in cookie:
            return None
        body, mac = cookie.rsplit(".", 1)
        if not hmac.compare_digest(mac, self._mac(body.encode())):
            return None
        try:
            s = msgspec.json.decode(base64.urlsafe_b64decode(body), type=Session)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
            return None
        return s if s.expires > time.time() else None

    def csrf(self, s: Session) -> str:
        return self._mac(b"csrf:" + s.nonce.encode())

    def check_csrf(self, s: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf(s), token or "")


def cookie_header(value: str, secure: bool) -> str:
    flags = "; Secure" if secure else ""
    return f"{COOKIE}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={MAX_AGE}{flags}"


def clear_cookie_header() -> str:
    return f"{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0"


def read_cookie(header: str | None, cookie: str = COOKIE) -> str | None:
    for part in (header or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == cookie:
            return value
    return None
