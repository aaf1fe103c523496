"""Whose conversations these are: a logged-in user's, else this browser's.

Without login, a browser is recognised by a random token in a cookie. Streamlit's `st.context.cookies`
can only read, so `BrowserCookie` (ASGI middleware in app.py's `st.App`) gives every browser that
arrives without one a token on the page load; the websocket that follows carries it. The database
keeps only a hash of the token, so reading the database never lets anyone act as a browser.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from http.cookies import SimpleCookie
from typing import Any

COOKIE = "understudy_browser"
MAX_AGE = 400 * 24 * 3600  # the longest browsers keep a cookie
_TOKEN = re.compile(r"[0-9a-f]{32}")


def new_token() -> str:
    return secrets.token_hex(16)


def valid_token(token: object) -> bool:
    return isinstance(token, str) and _TOKEN.fullmatch(token) is not None


def owner_for(user: Mapping[str, Any], cookie: str | None) -> tuple[str, str] | None:
    """(owner, who) for a session: "user:<email or sub>" when logged in (the list follows the user to
    any browser), else "browser:<hash of the token>". None when neither is known (no cookie: the
    caller falls back to a token for this tab only)."""
    if user.get("is_logged_in"):
        ident = user.get("email") or user.get("sub")
        if isinstance(ident, str) and ident:
            return f"user:{ident}", ident
    if valid_token(cookie):
        owner = browser_owner(cookie)
        return owner, owner  # kept questions name the browser by its hash, never by its token
    return None


def browser_owner(token: str) -> str:
    return "browser:" + hashlib.sha256(token.encode()).hexdigest()[:32]


def set_cookie_header(token: str, *, secure: bool) -> bytes:
    value = f"{COOKIE}={token}; Path=/; Max-Age={MAX_AGE}; HttpOnly; SameSite=Lax"
    return (value + ("; Secure" if secure else "")).encode("latin-1")


class BrowserCookie:
    """ASGI middleware: an HTML page served to a browser without a valid token sets one."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or valid_token(_cookie(scope)):
            await self.app(scope, receive, send)
            return
        token, secure = new_token(), _https(scope)

        async def send_with_cookie(message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                if any(k.lower() == b"content-type" and v.startswith(b"text/html") for k, v in headers):
                    message = {**message, "headers": headers + [(b"set-cookie", set_cookie_header(token, secure=secure))]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def _https(scope) -> bool:
    """Whether the browser's side of the connection is TLS: the scheme, or behind a proxy that ends
    TLS (deploy/nginx.conf) its X-Forwarded-Proto. Trusting the header from anyone is safe here: a
    client that claims https over plain http only gets a cookie its browser won't send back."""
    if scope.get("scheme") == "https":
        return True
    for key, value in scope.get("headers") or ():
        if key.lower() == b"x-forwarded-proto":  # "https" or, through a chain of proxies, "https, http"
            return value.split(b",", 1)[0].strip().lower() == b"https"
    return False


def _cookie(scope) -> str | None:
    for key, value in scope.get("headers") or ():
        if key == b"cookie":
            try:
                jar = SimpleCookie(value.decode("latin-1"))
            except Exception:  # noqa: BLE001 — a malformed Cookie header: treat as none
                return None
            if COOKIE in jar:
                return jar[COOKIE].value
    return None
