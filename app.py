"""Understudy: `streamlit run app.py`. Page navigation, the ops endpoints, nothing else.

`streamlit run` finds the `app` below (an st.App) and serves it with uvicorn: the Streamlit UI
plus /healthz (JSON) and /metrics (Prometheus text), and sets a browser-token cookie. Each
browser session then runs this file as its script (`__main__`), which draws the navigation.
"""

import streamlit as st
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from core.browser import BrowserCookie
from core.endpoints import healthz, prometheus
from pages.shared import page_style, runtime


async def _healthz(request):
    rt = await run_in_threadpool(runtime)
    status, body = await run_in_threadpool(healthz, rt.router, demo=rt.demo is not None)
    return JSONResponse(body, status_code=status, headers={"cache-control": "no-store"})


async def _metrics(request):
    rt = await run_in_threadpool(runtime)
    text = await run_in_threadpool(prometheus, rt.router)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")


# BrowserCookie gives each browser a random token (st.context.cookies can only read): without
# login, it is whose conversations these are (core/browser.py).
app = st.App("app.py", routes=[Route("/healthz", _healthz), Route("/metrics", _metrics)],
             middleware=[Middleware(BrowserCookie)])

if __name__ == "__main__":
    st.set_page_config(page_title="Understudy", page_icon="🎭", layout="wide")
    runtime()  # one Router per process, shared by every session
    page_style()
    st.navigation([
        st.Page("pages/chat.py", title="Chat", icon="💬", default=True),
        st.Page("pages/status.py", title="Status", icon="📈", url_path="status"),
        st.Page("pages/chaos.py", title="Chaos", icon="🧨", url_path="chaos"),
        st.Page("pages/followups.py", title="Follow-ups", icon="📥", url_path="followups"),
    ]).run()
