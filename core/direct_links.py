"""Direct links to a page (`/status`, `/chaos`) without the 404s Streamlit's frontend causes.

A page's HTML is the same `index.html` wherever it is served. Loaded at `/status`, the frontend
can't tell a page's name from a `server.baseUrlPath`, so it first probes `/status/_stcore/health`
and `/status/_stcore/host-config` (both 404, logged in the browser's console and by any proxy)
and only then the server's root. Its documented hook for hosts, `window.__streamlit`, can name
the server's address instead: `DirectLinks` (ASGI middleware in app.py's `st.App`) adds that to
the HTML served at a page's own path. The address is relative to the page (`./`), so it stays
right behind a proxy that serves the app under a prefix.
"""

from __future__ import annotations

from collections.abc import Iterable

# Runs before the frontend's module script, which reads window.__streamlit once as it loads.
HINT = (b'<script>window.__streamlit = Object.assign({}, window.__streamlit, '
        b'{BACKEND_BASE_URL: new URL("./", window.location.href).href});</script>')
_DROPPED_REQUEST = {b"accept-encoding", b"if-none-match", b"if-modified-since", b"range"}
_DROPPED_RESPONSE = {b"content-length", b"etag", b"last-modified"}


class DirectLinks:
    """ASGI middleware: the HTML served at one of `pages`' paths says where the server is."""

    def __init__(self, app, pages: Iterable[str]) -> None:
        self.app = app
        self.pages = frozenset(pages)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or not self._is_page(scope["path"]):
            await self.app(scope, receive, send)
            return
        # The whole body, plain (not compressed) and never a 304: it is rewritten below.
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() not in _DROPPED_REQUEST]
        start: dict | None = None
        body: list[bytes] = []

        async def collect(message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            body.append(message.get("body", b""))
            if message.get("more_body"):
                return
            html = b"".join(body)
            kept = [(k, v) for k, v in start.get("headers", []) if k.lower() not in _DROPPED_RESPONSE]
            if _is_html(start) and b"<head>" in html:
                html = html.replace(b"<head>", b"<head>" + HINT, 1)
            await send({**start, "headers": kept + [(b"content-length", str(len(html)).encode())]})
            await send({"type": "http.response.body", "body": html})

        await self.app({**scope, "headers": headers}, receive, collect)

    def _is_page(self, path: str) -> bool:
        return path.rstrip("/").rsplit("/", 1)[-1] in self.pages and not path.endswith("/")


def _is_html(start: dict) -> bool:
    return start["status"] == 200 and any(k.lower() == b"content-type" and v.startswith(b"text/html")
                                          for k, v in start.get("headers", []))
