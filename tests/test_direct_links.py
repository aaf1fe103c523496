"""DirectLinks: the HTML served at a page's own path tells Streamlit's frontend where the server is.
The inner app here stands in for Streamlit's static server: its real index.html, gzip, ETags. The
browser test (tests/test_e2e_chaos_ui.py) checks the result: no 404s on a direct link."""

from __future__ import annotations

from pathlib import Path

import streamlit
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import FileResponse, PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from core.direct_links import HINT, DirectLinks

INDEX = Path(streamlit.__file__).parent / "static" / "index.html"
seen: list[dict] = []


def _index(request):
    seen.append(dict(request.headers))
    return FileResponse(INDEX)  # with an ETag, and a 304 for a matching If-None-Match


def _health(request):
    return PlainTextResponse("ok")


def client() -> TestClient:
    inner = Starlette(routes=[Route("/_stcore/health", _health), Route("/{path:path}", _index)],
                      middleware=[Middleware(DirectLinks, pages=["status", "chaos"]),
                                  Middleware(GZipMiddleware, minimum_size=10)])
    return TestClient(inner)


def test_a_pages_html_says_where_the_server_is():
    with client() as c:
        r = c.get("/status", headers={"accept-encoding": "gzip", "if-none-match": "whatever"})
    assert r.status_code == 200 and r.headers.get("content-encoding") is None
    assert r.content.count(HINT) == 1 and r.content.index(HINT) < r.content.index(b'type="module"')
    assert int(r.headers["content-length"]) == len(r.content) and "etag" not in r.headers
    assert "accept-encoding" not in seen[-1] and "if-none-match" not in seen[-1]  # never a gzip body or a 304


def test_under_a_prefix_too_and_with_a_query():
    with client() as c:
        assert HINT in c.get("/understudy/chaos?tab=Load").content


def test_other_paths_are_left_alone():
    with client() as c:
        for path in ("/", "/status/", "/nothing", "/static/status.js"):
            r = c.get(path, headers={"accept-encoding": "gzip"})
            assert HINT not in r.content, path
        assert c.get("/_stcore/health").text == "ok"
        compressed = c.get("/", headers={"accept-encoding": "gzip"})
        assert compressed.headers["content-encoding"] == "gzip"  # untouched: still the inner app's gzip
