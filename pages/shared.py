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


def banners() -> None:
    rt = runtime()
    if rt.config_error:
        st.error(f"**Configuration problem** — {rt.config_error}\n\nRunning on simulated providers until it is "
                 "fixed.", icon="🛠️")
    if rt.demo is not None:
        st.info("**Demo mode** — no provider is configured, so four simulated providers (Claude, GPT, Gemini, "
                "Ollama) run on this machine and every answer is labelled *Simulated*. To use real models, set "
                "`ANTHROPIC_API_KEY`, `OPENAI_API_KEY`, `GEMINI_API_KEY` or `OLLAMA_HOST` (or put them in "
                "`.streamlit/secrets.toml`), or write an `understudy.toml`, then restart.", icon="🎭")
    shared = rt.router.stores.health()["shared"]
    if shared["status"] == "unavailable":
        st.warning("**Degraded: shared state unavailable** — this replica can't reach the fleet's Redis "
                   f"({shared['where']}), so it answers on its own breakers, cache and chaos settings and this "
                   "page shows its own traffic only. It reconnects by itself.", icon="🔌")
    state = rt.router.chaos.state()
    if state["providers"] or state["scenario"]:
        parts = [f"**{name}** forced to fail ({what})" for name, what in sorted(state["providers"].items())]
        if state["scenario"]:
            sc = state["scenario"]
            parts.insert(0, f"scenario *{sc['title']}* at {sc['elapsed']:.0f} s of {sc['duration']:.0f} s")
        st.warning("**Simulated outage:** " + "; ".join(parts) + ". Reset it on the Chaos page.", icon="🧨")


def seconds(ms: float | None) -> str:
    if ms is None:
        return "–"
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"
