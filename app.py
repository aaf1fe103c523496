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
from streamlit.delta_generator_singletons import context_dg_stack, get_default_dg_stack_value
from streamlit.runtime.pages_manager import PagesManager

from core.browser import BrowserCookie
from core.direct_links import DirectLinks
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


# Streamlit runs in its old multipage mode (each file in pages/ a page, run alone) while a pages/
# directory sits beside the entry script and no run has called st.navigation yet. So the first
# visitor after a start who opened /status directly ran pages/status.py without this file and left
# every later session in that mode: a sidebar of file names ("app", "shared"), no page config. Our
# pages/ are st.navigation's; this is set before any session starts (Streamlit 1.67's own switch).
PagesManager.uses_pages_directory = False

# The pages: (file, title, icon, URL path). The first is the default, at "/" only.
PAGES = (("pages/chat.py", "Chat", "💬", None), ("pages/status.py", "Status", "📈", "status"),
         ("pages/chaos.py", "Chaos", "🧨", "chaos"), ("pages/followups.py", "Follow-ups", "📥", "followups"))

# BrowserCookie gives each browser a random token (st.context.cookies can only read): without
# login, it is whose conversations these are (core/browser.py). DirectLinks tells the HTML served
# at a page's own path (/status) where the server is, or the frontend probes /status/_stcore/…
# first and logs two 404s (core/direct_links.py).
app = st.App("app.py", routes=[Route("/healthz", _healthz), Route("/metrics", _metrics)],
             middleware=[Middleware(BrowserCookie), Middleware(DirectLinks, pages=[p[3] for p in PAGES[1:]])])

if __name__ == "__main__":
    # A full run starts drawing at the top of the page. Streamlit (1.67) runs a fragment (a timed
    # refresh) with the containers it was declared in as the place `st.*` draws, and puts that back
    # only when the run ends in st.rerun. When a full run was asked for while a fragment ran (a
    # click, another fragment's st.rerun), the same script thread starts it straight after, still
    # inside that fragment's containers: the Chaos page was then drawn inside its own Scenarios tab,
    # at places the browser doesn't have, and went blank ("Bad delta path index").
    context_dg_stack.set(get_default_dg_stack_value())
    st.set_page_config(page_title="Understudy", page_icon="🎭", layout="wide")
    runtime()  # one Router per process, shared by every session
    page_style()
    st.navigation([st.Page(file, title=title, icon=icon, url_path=path, default=i == 0)
                   for i, (file, title, icon, path) in enumerate(PAGES)]).run()
