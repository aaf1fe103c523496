"""Chaos: force providers to fail in realistic ways and watch the router cope.

Everything drawn here comes from one reading of what chaos injects (`Chaos.now()`); when that
changes (a scenario's step or end, another tab's switch) the page is drawn again whole, so a card,
the scenario clock and the banner never disagree. The controls keep their values across a visit
to another page, and show the fault that is injected, not a default."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from core.chaos import SCENARIOS, Injection
from core.faults import MID_STREAM, Fault
from core import loadgen
from core.loadgen import MAX_CONCURRENCY, MAX_QUESTIONS, LoadRun, summarise
from pages.shared import admin_unlocked, banners, router

r = router()
st.title("🧨 Chaos")
banners(redraw_on_change=True)

if not admin_unlocked("Chaos affects **every user of this server**, so it is locked."):
    st.stop()

FAULTS = {
    "HTTP error": "status",
    "Connection reset": "reset",
    "Silence (never answers)": "silence",
    "Added latency": "latency",
    "Slow first token": "slow_first",
    "Cut stream after N chunks": "cut",
    "Stall stream after N chunks": "stall",
    "Malformed chunk after N chunks": "malformed",
    "In-stream error event after N chunks": "error_event",
    "Stream ends early (no end marker)": "no_end",
}
STATUSES = {
    "429 rate limited": (429, "rate_limit"),
    "529 overloaded": (529, "overloaded"),
    "503 unavailable": (503, "unavailable"),
    "500 server error": (500, "server"),
    "401 bad key": (401, "auth"),
    "400 context length": (400, "context_length"),
    "400 content filter": (400, "content_filter"),
}
HINTS = {  # how the provider says when to come back
    "Retry-After header": "retry-after",
    "retry-after-ms header": "retry-after-ms",
    "rate-limit reset headers": "reset",
    "only in the message text": "text",
}
TIMED = {"latency": 2.0, "slow_first": 20.0, "stall": 20.0}  # faults that take seconds, and their defaults
WAITS = (429, 503, 529)  # statuses that may say when to come back


def _label(table: dict, value: Any) -> str | None:
    return next((label for label, v in table.items() if v == value), None)


# -- controls that remember ------------------------------------------------------------------------
# A widget's value is forgotten while another page shows; these are kept in KEPT and put back.
KEPT = "chaos_controls"
kept: dict[str, Any] = st.session_state.setdefault(KEPT, {})


def _keep(key: str) -> None:
    kept[key] = st.session_state[key]


def control(key: str, default: Any) -> dict[str, Any]:
    """The widget keyword arguments for a remembered control (its value lives in session state)."""
    if key not in st.session_state:
        st.session_state[key] = kept.get(key, default)
    return {"key": key, "on_change": _keep, "args": (key,)}


def show_injection(i: int, injection: Injection) -> None:
    """Set provider i's controls to what is injected (before they are drawn)."""
    f = injection.fault
    # Kept within each control's range (a fault set elsewhere may be outside it: the card then says
    # that the controls differ from what is injected, rather than the page failing).
    fit = lambda value, low, high: min(max(value, low), high)
    values: dict[str, Any] = {f"fault_{i}": _label(FAULTS, f.kind), f"rate_{i}": int(round(injection.probability * 20) * 5),
                              f"flap_{i}": bool(injection.flap_down and injection.flap_up)}
    if values[f"flap_{i}"]:
        values.update({f"down_{i}": fit(float(injection.flap_down), 1.0, 600.0),
                       f"up_{i}": fit(float(injection.flap_up), 1.0, 600.0)})
    if f.kind == "status":
        values[f"status_{i}"] = _label(STATUSES, (f.status, f.flavour))
        values[f"retry_after_{i}"] = fit(float(f.retry_after or 0.0), 0.0, 600.0)
        values[f"hint_{i}"] = _label(HINTS, f.hint)
    if f.kind in TIMED:
        values[f"seconds_{f.kind}_{i}"] = fit(float(f.seconds), 0.1, 120.0)
    if f.kind in MID_STREAM:
        values[f"after_{i}"] = fit(int(f.after), 0, 1000)
    for key, value in values.items():
        if value is not None:  # a fault these controls can't express (e.g. HTTP 502) leaves them as they are
            st.session_state[key] = kept[key] = value


def chosen(i: int) -> tuple[Fault, float, tuple[float, float] | None]:
    """The fault provider i's controls describe (drawn this run)."""
    s = st.session_state
    kind = FAULTS[s[f"fault_{i}"]]
    status = flavour = retry_after = None
    seconds, after, hint = 0.0, 0, "retry-after"
    if kind == "status":
        status, flavour = STATUSES[s[f"status_{i}"]]
        if status in WAITS:
            retry_after = s[f"retry_after_{i}"] or None
            hint = HINTS[s[f"hint_{i}"]]
    if kind in TIMED:
        seconds = float(s[f"seconds_{kind}_{i}"])
    if kind in MID_STREAM:
        after = int(s[f"after_{i}"])
    fault = Fault(kind, status=status, flavour=flavour, retry_after=retry_after, after=after, seconds=seconds, hint=hint)
    flap = (float(s[f"down_{i}"]), float(s[f"up_{i}"])) if s[f"flap_{i}"] else None
    return fault, s[f"rate_{i}"] / 100, flap


def same(injection: Injection | None, fault: Fault, probability: float, flap: tuple[float, float] | None) -> bool:
    return injection is not None and (injection.fault, injection.probability, injection.flap_down,
                                      injection.flap_up) == (fault, probability, *(flap or (0.0, 0.0)))


# -- the page ---------------------------------------------------------------------------------------
now = r.chaos.now()  # the one reading this run draws from

top = st.columns([3, 1], vertical_alignment="center")
top[0].markdown("Faults are injected **under the SDK**, at the HTTP transport: the SDK, adapter, breaker and "
                "router see exactly what a real failure produces. Changes apply from the next request.")
if top[1].button("Reset everything", key="reset_all", type="primary", width="stretch",
                 help="All faults off, any scenario stopped, every breaker closed."):
    r.chaos.reset()
    r.reset_breakers()
    st.toast("All faults off, all breakers closed.")
    st.rerun()

if "tab" not in st.session_state and "tab" in kept and "tab" not in st.query_params:
    st.session_state.tab = kept["tab"]  # back from another page: the tab left open
providers_tab, scenarios_tab, load_tab = st.tabs(["Providers", "Scenarios", "Load"], key="tab",
                                                 bind="query-params", on_change=_keep, args=("tab",))

with providers_tab:
    for i, provider in enumerate(r.providers):
        name = provider.name
        active = now.providers.get(name)
        manual = active.injection if active and active.source == "manual" else None
        if manual is not None and (st.session_state.get(f"_shown_{i}") != manual or f"fault_{i}" not in st.session_state):
            show_injection(i, manual)
        st.session_state[f"_shown_{i}"] = manual
        with st.container(border=True):
            head = st.columns([2, 3])
            head[0].markdown(f"**{name}** · `{provider.kind}` · `{provider.model}`")
            if active is None:
                head[1].markdown("🟢 healthy (no fault)")
            else:
                line = f"🔴 **failing:** {active.describe()}"
                if active.source == "scenario":
                    line += f" — from the scenario *{now.scenario.title}*"
                if not active.down:
                    line += " · in its healthy half right now"
                head[1].markdown(line)
            cols = st.columns([3, 2, 2])  # the fault, and its main setting or two
            kind = FAULTS[cols[0].selectbox("Fault", list(FAULTS), **control(f"fault_{i}", "HTTP error"))]
            status = None
            if kind == "status":
                status, _ = STATUSES[cols[1].selectbox("Status", list(STATUSES), **control(f"status_{i}", "429 rate limited"))]
            if kind in TIMED:
                cols[1].number_input("Seconds", 0.1, 120.0, step=0.5, **control(f"seconds_{kind}_{i}", TIMED[kind]))
            if kind in MID_STREAM:
                cols[2].number_input("After N text chunks", 0, 1000, step=1, **control(f"after_{i}", 5))
            with st.expander("Error rate, flapping, retry wait"):
                more = st.columns([2, 1, 1, 1], vertical_alignment="bottom")
                more[0].slider("Error rate %", 0, 100, step=5, **control(f"rate_{i}", 100))
                flap = more[1].toggle("Flapping", **control(f"flap_{i}", False))
                more[2].number_input("Down s", 1.0, 600.0, step=1.0, disabled=not flap, **control(f"down_{i}", 5.0))
                more[3].number_input("Up s", 1.0, 600.0, step=1.0, disabled=not flap, **control(f"up_{i}", 5.0))
                waits = kind == "status" and status in WAITS
                wait = st.columns(2, vertical_alignment="bottom")
                wait[0].number_input("Retry after (s, 0 = none)", 0.0, 600.0, step=1.0, disabled=not waits,
                                     help="For 429, 503 and 529.", **control(f"retry_after_{i}", 0.0))
                wait[1].selectbox("Retry wait given as", list(HINTS),
                                  disabled=not (waits and st.session_state[f"retry_after_{i}"]),
                                  help="OpenAI and Anthropic send rate-limit reset headers; many servers say it "
                                       "only in the error message.", **control(f"hint_{i}", "Retry-After header"))
            fault, probability, flapping = chosen(i)
            with st.container(horizontal=True, vertical_alignment="center"):
                if st.button("Break it", key=f"apply_{i}", type="primary"):
                    r.chaos.set(name, fault, probability=probability, flap=flapping)
                    st.rerun()
                if st.button("Heal it", key=f"clear_{i}", disabled=active is None,
                             help="Its fault off; a playing scenario leaves it alone until it ends."):
                    r.chaos.clear(name)
                    st.rerun()
                if manual is not None and not same(manual, fault, probability, flapping):
                    st.caption("✏️ These settings are not what is injected: **Break it** applies them.")

with scenarios_tab:
    names = [p.name for p in r.providers]
    if "scenario" not in st.session_state and now.scenario:
        st.session_state.scenario = now.scenario.name  # coming back while one plays: that one
    choice = st.selectbox("Scenario", list(SCENARIOS), format_func=lambda n: SCENARIOS[n].title,
                          **control("scenario", next(iter(SCENARIOS))))
    scenario = SCENARIOS[choice]
    st.markdown(f"{scenario.description} ({scenario.duration:.0f} s)")
    st.dataframe(pd.DataFrame([{"at (s)": step.at,
                                "who": "every provider" if step.target == -1 else
                                       (names[step.target] if step.target < len(names) else "(no such provider)"),
                                "what": step.injection.describe() if step.injection else "healthy again"}
                               for step in scenario.steps]),
                 hide_index=True, width="stretch",
                 column_config={"at (s)": st.column_config.NumberColumn(format="%.0f", width="small")})
    with st.container(horizontal=True):
        if st.button("Play", key="play", type="primary", icon=":material/play_arrow:"):
            r.chaos.play(choice, names)
            st.rerun()
        if st.button("Stop", key="stop_scenario", icon=":material/stop:", disabled=now.scenario is None,
                     help="End the scenario now; faults set by hand stay."):
            r.chaos.stop()
            st.rerun()

    @st.fragment(run_every=1 if now.scenario else None)
    def scenario_clock(drawn: tuple) -> None:
        live = r.chaos.now()
        if live.signature != drawn:
            st.rerun(scope="app")  # a step or the end: redraw the cards too
        if live.scenario is None:
            st.caption("No scenario playing.")
            return
        sc = live.scenario
        st.progress(min(1.0, sc.elapsed / sc.duration), text=f"▶ {sc.title}: {sc.elapsed:.0f} s of {sc.duration:.0f} s")
        failing = ", ".join(f"**{n}** ({a.describe()})" for n, a in live.providers.items()) or "nothing"
        st.caption(f"Now failing: {failing}")
        if sc.upcoming:
            at = sc.upcoming[0].at
            st.caption(f"Next, at {at:.0f} s: " + "; ".join(
                f"{u.target} {'fails: ' + u.what if u.what else 'recovers'}" for u in sc.upcoming if u.at == at))

    scenario_clock(now.signature)

with load_tab:
    run: LoadRun | None = loadgen.current(r)  # the process's run: it outlives the tab that started it
    running = run is not None and not run.finished
    lg = st.columns([1, 1, 1, 1], vertical_alignment="bottom")
    n = int(lg[0].number_input("Questions", 1, MAX_QUESTIONS, step=1, **control("load_n", 20)))
    concurrency = int(lg[1].number_input("Concurrency", 1, MAX_CONCURRENCY, step=1, **control("load_c", 5)))
    fresh = lg[2].toggle("Bypass cache", help="Ask the providers every time.", **control("load_fresh", True))
    if lg[3].button("Send", key="load_go", type="primary", width="stretch", disabled=running):
        try:
            LoadRun(r, n, concurrency, fresh=fresh).start()
        except loadgen.Busy as e:  # another tab's Send got there first
            st.session_state.load_busy = str(e)
        st.rerun()
    if busy := st.session_state.pop("load_busy", None):
        st.warning(busy.capitalize() + ".", icon="⏳")

    @st.fragment(run_every=0.5 if running else None)
    def load_progress(was_running: bool) -> None:
        run: LoadRun | None = loadgen.current(r)
        if run is None:
            st.caption("Send questions through the router, several at a time, and see who answers and how fast.")
            return
        finished = run.finished
        if was_running and finished:
            st.rerun(scope="app")  # Send again, Cancel off
        rows = run.rows()
        state = "cancelled" if run.cancelled else ("done" if finished else "answering…")
        bar, stop = st.columns([5, 1], vertical_alignment="center")
        bar.progress(len(rows) / run.n, text=f"{len(rows)} / {run.n} answered · {run.took():.1f} s · {state}")
        if stop.button("Cancel", key="load_cancel", width="stretch", disabled=finished):
            run.cancel()
        s = summarise(rows)
        m = st.columns(5)
        m[0].metric("p50 latency", "–" if s.p50_s is None else f"{s.p50_s:.2f} s")
        m[1].metric("p95 latency", "–" if s.p95_s is None else f"{s.p95_s:.2f} s")
        m[2].metric("First token p50", "–" if s.first_token_p50_s is None else f"{s.first_token_p50_s:.2f} s")
        m[3].metric("Not answered", s.not_answered, help="A degraded reply (cache, offline, unavailable) or a cut "
                                                         "answer instead of a model's whole answer.")
        m[4].metric("Failed attempts", s.failed_attempts, help="Attempts that failed or were skipped on the way "
                                                               "to an answer: each one is a failover.")
        if rows:
            mix = lambda d: ", ".join(f"{k}: {v}" for k, v in d.items()) or "–"
            st.caption(f"**Tiers** {mix(s.tiers)} · **served by** {mix(s.served_by)}"
                       + (f" · **stopped** {s.stopped}" if s.stopped else ""))
        if finished:
            st.success(f"{len(rows)} questions in {run.took():.1f} s" + (" (cancelled)" if run.cancelled else ""))
        table = pd.DataFrame([{"#": row.n, "served by": row.served_by, "tier": row.tier, "complete": row.complete,
                               "latency": row.latency_s, "first token": row.first_token_s, "attempts": row.attempts,
                               "failed": row.failed} for row in rows],
                             columns=["#", "served by", "tier", "complete", "latency", "first token", "attempts",
                                      "failed"])
        st.dataframe(table, hide_index=True, width="stretch", column_config={
            "latency": st.column_config.NumberColumn("latency", format="%.2f s", help="Seconds, to the whole answer"),
            "first token": st.column_config.NumberColumn("first token", format="%.2f s"),
        })

    load_progress(running)
