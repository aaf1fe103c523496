"""What every page shares: the one Router per process, the banners, and small formatting helpers.
UI only — the engine is core/."""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from typing import Any

import streamlit as st

from core.router import Router
from core.runtime import Runtime, build

ADMIN_ENV = "UNDERSTUDY_ADMIN_PASSWORD"
ADMIN_UNLOCKED = "admin_unlocked"  # the st.session_state flag: this session entered the password


def secrets() -> Mapping[str, Any]:
    """st.secrets as a plain dict; {} when there is no secrets.toml (any access raises then)."""
    try:
        return {k: v for k, v in st.secrets.items() if isinstance(v, str)}
    except Exception:  # noqa: BLE001 — StreamlitSecretNotFoundError and a malformed file alike
        return {}


@st.cache_resource(show_spinner="Starting the router…", on_release=Runtime.close)
def runtime() -> Runtime:
    """Built once per process and shared by every session (and the ops endpoints)."""
    return build(None, env=os.environ, secrets=secrets(), demo=True, probing=True)


def router() -> Router:
    return runtime().router


def admin_password() -> str | None:
    return os.environ.get(ADMIN_ENV) or secrets().get(ADMIN_ENV) or None


def password_ok(given: str) -> bool:
    expected = admin_password()
    return expected is None or hmac.compare_digest(given.encode(), expected.encode())


def admin_unlocked(why: str) -> bool:
    """May this session change what every user of the server shares (breakers, cache, probes, chaos)?

    Open when `UNDERSTUDY_ADMIN_PASSWORD` is unset. Otherwise, until the right password is entered,
    this draws `why` and the password form and returns False. Success is remembered in this browser
    session only (never in the URL); the typed password is cleared from the form on submit."""
    if admin_password() is None or st.session_state.get(ADMIN_UNLOCKED):
        return True
    st.warning(f"{why} Enter the admin password (`{ADMIN_ENV}`) to unlock.", icon="🔒")
    with st.form("unlock", clear_on_submit=True):
        given = st.text_input("Admin password", type="password", key="admin_password")
        if st.form_submit_button("Unlock"):
            if password_ok(given):
                st.session_state[ADMIN_UNLOCKED] = True
                st.rerun()
            st.error("That password is not right.")
    return False


DEMO_HIDDEN = "demo_banner_hidden"  # this session closed the demo notice


def banners(*, redraw_on_change: bool = False) -> None:
    """The notices every page starts with. While chaos is on, the simulated-outage one keeps itself
    current (every second while a scenario plays, else every few), so a scenario's end clears it at
    the next refresh on every page, whatever else the page refreshes. `redraw_on_change`: for a page drawn
    from what chaos injects (Chaos): it is rerun whole as soon as that changes, so nothing on it
    contradicts the banner."""
    rt = runtime()
    if rt.config_error:
        st.error(f"**Configuration problem** — {rt.config_error}\n\nRunning on simulated providers until it is "
                 "fixed.", icon="🛠️")
    if rt.demo is not None and not st.session_state.get(DEMO_HIDDEN):
        demo_notice(real_local=rt.demo.local_model is not None)
    shared = rt.router.stores.health()["shared"]
    if shared["status"] == "unavailable":
        st.warning("**Degraded: shared state unavailable** — this replica can't reach the fleet's Redis "
                   f"({shared['where']}), so it answers on its own breakers, cache and chaos settings and this "
                   "page shows its own traffic only. It reconnects by itself.", icon="🔌")
    now = rt.router.chaos.now()
    # Polled only while something is on (nothing to clear otherwise): the Chat page streams its
    # answers in its script run, and an idle tab should cost the server nothing.
    every = 1.0 if now.scenario or any(a.injection.flap_down for a in now.providers.values()) else (
        5.0 if now.on or redraw_on_change else None)
    # In a container of its own, of which it is the only child. When a full run and then this
    # fragment's timed run are both done before the server next sends to the browser, Streamlit
    # (1.67) drops what the full run drew for the fragment (its own run redraws it), and the browser,
    # tidying up after the full run, removes the fragment's old block from its parent. With siblings
    # after it (the Chaos page's tabs), each would move up a place, and the next change addressed
    # to one by its old place blanks the page ("Cannot set a node at a delta path"). Here there is
    # nothing after it to move.
    with st.container(key="outage"):  # no room, nor a gap, while it shows nothing (_PAGE_STYLE)
        st.fragment(run_every=every)(_outage)(now.signature if redraw_on_change else None)


def demo_notice(*, real_local: bool) -> None:
    """One line, not half a phone's screen: what demo mode means, the how-to behind a button, and
    a close for this session. With the local model installed, the last row is real, and says so."""
    with st.container(horizontal=True, vertical_alignment="center", gap="small", key="demo_notice"):
        st.info("**Demo mode**: " + ("simulated clouds (*Simulated*), then a small real on-device model." if real_local
                                     else "simulated providers answer, and every answer says *Simulated*."),
                icon="🎭", width="stretch")
        with st.popover("Use real models", icon=":material/key:"):
            st.markdown("Set `ANTHROPIC_API_KEY`, `OPENAI_API_KEY`, `GEMINI_API_KEY` or `OLLAMA_HOST` (or put them "
                        "in `.streamlit/secrets.toml`), or write an `understudy.toml`, then restart. Until then "
                        + ("three simulated cloud providers (Claude, GPT, Gemini) and a small on-device model "
                           "(SmolLM2-135M, real) run on this machine." if real_local else
                           "four simulated providers (Claude, GPT, Gemini, Ollama) run on this machine."))
        st.button("", key="hide_demo_notice", icon=":material/close:", type="tertiary",
                  help="Hide this notice (for this session)",
                  on_click=st.session_state.__setitem__, args=(DEMO_HIDDEN, True))


def _outage(drawn: tuple | None) -> None:
    """The simulated-outage banner, read afresh at each refresh."""
    now = router().chaos.now()
    if drawn is not None and now.signature != drawn:
        st.rerun(scope="app")
    if not now.on:
        return
    parts = [f"**{name}** forced to fail ({a.describe()})" for name, a in now.providers.items()]
    if now.scenario:
        sc = now.scenario
        parts.insert(0, f"scenario *{sc.title}* at {sc.elapsed:.0f} s of {sc.duration:.0f} s")
    st.warning("**Simulated outage:** " + "; ".join(parts) + ". Reset it on the Chaos page.", icon="🧨")


# Wide Markdown tables (the chat's "How it got here") scroll inside themselves, never the page; on a
# phone their rows stay one line each (wrapped in a narrow column, one row was a screen tall).
# On a phone, the open sidebar closes once a page is chosen in it (Streamlit leaves it over the page).
# The outage banner's container (banners) takes no room while there is no outage.
_PAGE_STYLE = """<style>
[data-testid="stLayoutWrapper"]:has(> .st-key-outage:empty) { display: none; }
[data-testid="stMarkdownContainer"] table { display: block; max-width: 100%; overflow-x: auto; }
@media (max-width: 640px) {
  [data-testid="stMarkdownContainer"] :is(td, th) { white-space: nowrap; }
  [data-testid="stMainBlockContainer"] { padding-top: 3.5rem; }
}
</style>"""
_CLOSE_SIDEBAR_ON_PHONES = """<script>
if (!window.understudyNavCloses) {
  window.understudyNavCloses = true;
  document.addEventListener("click", (event) => {
    if (!event.target.closest('[data-testid="stSidebarNav"] a')) return;
    if (!window.matchMedia("(max-width: 767.98px)").matches) return;
    const close = document.querySelector('[data-testid="stSidebarCollapseButton"] button');
    if (close) setTimeout(() => close.click(), 0);
  }, true);
}
</script>"""


def page_style() -> None:
    """What every page's frame needs on every screen size (app.py calls it before the page)."""
    st.html(_PAGE_STYLE)
    st.html(_CLOSE_SIDEBAR_ON_PHONES, unsafe_allow_javascript=True)


def seconds(ms: float | None) -> str:
    if ms is None:
        return "–"
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"
