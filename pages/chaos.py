"""Chaos: force providers to fail in realistic ways and watch the router cope."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor, as_completed

import streamlit as st

from core.chaos import SCENARIOS
from core.faults import MID_STREAM, Fault
from core.messages import ChatRequest
from pages.shared import admin_unlocked, banners, router, seconds

r = router()
st.title("🧨 Chaos")
banners()

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

top = st.columns([3, 1])
top[0].markdown("Faults are injected **under the SDK**, at the HTTP transport: the SDK, adapter, breaker and "
                "router see exactly what a real failure produces. Changes apply from the next request.")
if top[1].button("Reset everything", key="reset_all", type="primary", width="stretch"):
    r.chaos.reset()
    r.reset_breakers()
    st.toast("All faults off, all breakers closed.")
    st.rerun()

st.subheader("Per provider")
state = r.chaos.state()
for i, provider in enumerate(r.providers):
    name = provider.name
    with st.container(border=True):
        head = st.columns([2, 3])
        current = state["providers"].get(name)
        head[0].markdown(f"**{name}** · `{provider.kind}` · `{provider.model}`")
        head[1].markdown(f"🔴 **failing:** {current}" if current else "🟢 healthy (no fault)")
        cols = st.columns([2, 2, 2, 2])
        label = cols[0].selectbox("Fault", list(FAULTS), key=f"fault_{i}")
        kind = FAULTS[label]
        status, flavour, retry_after, seconds_, after, hint = None, None, None, 0.0, 0, "retry-after"
        if kind == "status":
            status, flavour = STATUSES[cols[1].selectbox("Status", list(STATUSES), key=f"status_{i}")]
            if status in (429, 503, 529):
                ra = cols[2].number_input("Retry after (s, 0 = none)", 0.0, 600.0, 0.0, 1.0, key=f"retry_after_{i}")
                retry_after = ra or None
                hint = HINTS[cols[2].selectbox("Given as", list(HINTS), key=f"hint_{i}", disabled=not ra,
                                               help="OpenAI and Anthropic send rate-limit reset headers; many "
                                                    "servers say it only in the error message.")]
        if kind in ("latency", "slow_first", "stall"):
            seconds_ = cols[1].number_input("Seconds", 0.1, 120.0, 20.0 if kind != "latency" else 2.0, 0.5,
                                            key=f"seconds_{i}")
        if kind in MID_STREAM:
            after = int(cols[2].number_input("After N text chunks", 0, 1000, 5, 1, key=f"after_{i}"))
        rate = cols[3].slider("Error rate %", 0, 100, 100, 5, key=f"rate_{i}")
        flap_cols = st.columns([1, 1, 1, 1.2, 1.2])
        flap = flap_cols[0].toggle("Flapping", key=f"flap_{i}")
        down = flap_cols[1].number_input("Down s", 1.0, 600.0, 5.0, 1.0, key=f"down_{i}", disabled=not flap)
        up = flap_cols[2].number_input("Up s", 1.0, 600.0, 5.0, 1.0, key=f"up_{i}", disabled=not flap)
        if flap_cols[3].button("Break it", key=f"apply_{i}", type="primary", width="stretch"):
            fault = Fault(kind, status=status, flavour=flavour, retry_after=retry_after, after=after, seconds=seconds_,
                          hint=hint)
            r.chaos.set(name, fault, probability=rate / 100, flap=(down, up) if flap else None)
            st.rerun()
        if flap_cols[4].button("Heal it", key=f"clear_{i}", width="stretch", disabled=not current):
            r.chaos.clear(name)
            st.rerun()

st.subheader("Scenarios")
sc_cols = st.columns([2, 3, 1])
choice = sc_cols[0].selectbox("Scenario", list(SCENARIOS), format_func=lambda n: SCENARIOS[n].title, key="scenario")
sc_cols[1].markdown(SCENARIOS[choice].description)
if sc_cols[2].button("Play", key="play", width="stretch"):
    r.chaos.play(choice, [p.name for p in r.providers])
    st.rerun()


@st.fragment(run_every=1 if r.chaos.state()["scenario"] else None)
def scenario_clock() -> None:
    playing = r.chaos.state()["scenario"]
    if playing:
        st.progress(min(1.0, playing["elapsed"] / playing["duration"]),
                    text=f"▶ {playing['title']}: {playing['elapsed']:.0f} s of {playing['duration']:.0f} s")
        now = r.chaos.state()["providers"]
        st.caption("Now failing: " + (", ".join(f"**{k}** ({v})" for k, v in sorted(now.items())) or "nothing"))
    else:
        st.caption("No scenario playing.")


scenario_clock()

st.subheader("Load generator")
QUESTIONS = ["How do I reset my password?", "What are your opening hours?", "How do I cancel my subscription?",
             "What is a circuit breaker?", "How do I export my data?", "Explain hedged requests.",
             "Summarise the benefits of retries with jitter.", "What is a time-to-first-token deadline?"]
lg = st.columns([1, 1, 1, 1])
n = int(lg[0].number_input("Questions", 1, 1000, 20, 1, key="load_n"))
concurrency = int(lg[1].number_input("Concurrency", 1, 50, 5, 1, key="load_c"))
bypass = lg[2].toggle("Bypass cache", value=True, key="load_fresh", help="Ask the providers every time.")
if lg[3].button("Send", key="load_go", type="primary", width="stretch"):
    progress = st.progress(0.0, text="Sending…")
    table = st.empty()
    results: list[dict] = []
    started = time.monotonic()

    def one(k: int) -> dict:
        res = r.ask(ChatRequest.ask(f"{QUESTIONS[k % len(QUESTIONS)]} (load test #{k + 1})"), fresh=bypass)
        return {"#": k + 1, "served by": res.provider or "–", "tier": res.tier, "complete": res.complete,
                "latency": seconds(res.elapsed_ms), "first token": seconds(res.ttft_ms),
                "attempts": len(res.attempts), "failed": sum(a.outcome.failed for a in res.attempts)}

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for done, future in enumerate(as_completed([pool.submit(one, k) for k in range(n)]), 1):
            results.append(future.result())
            progress.progress(done / n, text=f"{done} / {n} answered")
            table.dataframe(sorted(results, key=lambda x: x["#"], reverse=True), hide_index=True,
                            width="stretch")
    st.session_state.load_results = results
    took = time.monotonic() - started
    by = {}
    for row in results:
        by[(row["served by"], row["tier"])] = by.get((row["served by"], row["tier"]), 0) + 1
    st.success(f"{n} questions in {took:.1f} s: " + ", ".join(f"{k[0]} / {k[1]}: {v}" for k, v in sorted(by.items())))
elif st.session_state.get("load_results"):
    st.caption("Last run:")
    st.dataframe(sorted(st.session_state.load_results, key=lambda x: x["#"], reverse=True), hide_index=True,
                 width="stretch")
