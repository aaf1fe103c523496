"""Status: the chain's verdict in one line, then three tabs: each provider now, its uptime and
incidents over the last hour or day, and the charts of recent traffic — live. UI only: what it
shows is read from core (health.judge, metrics, the history, uptime, incidents, palette)."""

from __future__ import annotations

import csv
import io
import time
from datetime import datetime

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core import palette
from core.health import judge
from core.incidents import incidents
from core.metrics import AttemptEvent, ProbeEvent, RequestEvent, TransitionEvent, as_row
from core.timeseries import breaks, bucket_seconds
from core.uptime import uptime
from pages.shared import admin_unlocked, banners, router, seconds

r = router()
st.title("📈 Status")
banners()
top = st.container()  # the verdict goes here, above the controls, once the refresh interval is known

# Probing can move breakers, and breakers and the cache are shared by every session. Belt and braces: the
# buttons are disabled while locked, and each action checks `locked` again on the server.
locked = not admin_unlocked("**Probe now**, **Reset breakers** and **Clear cache** affect every user of this "
                            "server, so they are locked.")


def traffic():
    """Whose traffic this page shows (core: Router.traffic), narrowed by the Replicas filter."""
    metrics = r.traffic()
    picked = st.session_state.get("replicas") or []
    if r.stores.fleet and metrics is r.fleet_metrics and picked and set(picked) != set(metrics.replicas()):
        return metrics.only(picked)
    return metrics


events = traffic().events()
buffer = io.StringIO()
rows = [as_row(e) for e in events]
if rows:
    writer = csv.DictWriter(buffer, fieldnames=sorted({k for row in rows for k in row}))
    writer.writeheader()
    writer.writerows(rows)

# One row that wraps (on a phone: two or three to a line, not six lines).
with st.container(horizontal=True, vertical_alignment="center", key="controls"):
    probe = st.button("Probe now", key="probe", disabled=locked)
    reset = st.button("Reset breakers", key="reset_breakers", disabled=locked)
    clear = st.button("Clear cache", key="clear_cache", disabled=locked)
    st.download_button("Metrics CSV", buffer.getvalue(), "understudy-metrics.csv", "text/csv", key="csv",
                       disabled=not rows)
    auto = st.toggle("Auto-refresh", value=True, key="auto_refresh")
    interval = st.selectbox("Every", [1, 2, 5, 10, 30], index=2, key="refresh_every", format_func=lambda s: f"{s} s",
                            disabled=not auto, label_visibility="collapsed", width=90)
if probe and not locked:
    with st.spinner("Probing…"):
        r.probe()
    st.toast("Probed every provider.")
if reset and not locked:
    r.reset_breakers()
    st.toast("All breakers closed.")
if clear and not locked:
    r.clear_cache()
    st.toast("Answer cache cleared.")

if r.stores.fleet:
    st.multiselect("Replicas", r.fleet_metrics.replicas(), key="replicas", placeholder="The whole fleet",
                   help=f"Every replica on this Redis. This page is served by **{r.stores.replica}**.")

HEALTH_ICON = {"ok": "🟢", "degraded": "🟡", "down": "🔴", "no key": "⚪", "unknown": "⚪"}
BREAKER_TEXT = {"closed": "closed", "half-open": "half-open (trial call in flight)", "open": "open"}
VERDICT = {"ok": (st.success, "🟢"), "degraded": (st.warning, "🟡"), "down": (st.error, "🔴")}
COLOURS = palette.provider_colours([p.name for p in r.providers])
# Plotly's toolbar covers the legend on a phone; zoom (drag, double-click to reset) still works without it.
PLOT = {"displayModeBar": False, "responsive": True}
PERIODS = {"Last hour": (3600, 60), "Last day": (86400, 48)}  # seconds shown, bars drawn


def frame(events: list, kind: type) -> pd.DataFrame:
    data = [as_row(e) for e in events if isinstance(e, kind)]
    df = pd.DataFrame(data)
    if not df.empty:
        df["time"] = pd.to_datetime(df["at"], unit="s")
    return df


def layout(fig: go.Figure, *, height: int = 300, counts: bool = False, ymax: float = 0) -> go.Figure:
    """One look for every chart: the legend above the plot (never over the date under the x axis),
    room for that date, and whole-number ticks for counts."""
    fig.update_layout(height=height, margin=dict(t=36, b=44, l=8, r=8), xaxis_title=None, legend_title=None,
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0, xanchor="left"),
                      hovermode="x unified" if counts else "closest")
    if counts:
        fig.update_yaxes(tickformat="d", rangemode="tozero", dtick=1 if ymax <= 6 else None)
    return fig


def headline() -> None:
    """The verdict `/healthz` reports, in the same words."""
    verdict = judge(r)
    box, icon = VERDICT[verdict.status]
    with st.container(key="verdict"):
        box(f"**{verdict.headline}**", icon=icon)
        st.caption(f"The same verdict as `/healthz` · updated {datetime.now():%H:%M:%S}")
    for what, health in (("Metrics history", r.history.health()), ("Stale answers", r.answers.health())):
        if health["status"] == "failing":  # what is shown is still right; it just won't outlive a restart
            st.warning(f"{what} can't be saved right now ({health['last_error']}): {health['backlog']} waiting, "
                       f"{health['dropped']} dropped. It is retried by itself.", icon="💾")


def now_tab(metrics) -> None:
    summary = metrics.summary(r.config.policy.metrics.window)
    rows = r.status(probe=False)
    cols = st.columns(len(rows) or 1)
    for col, status in zip(cols, rows):  # side by side; on a phone, one under another
        stats = summary["providers"].get(status.name, {})
        with col.container(border=True):
            st.markdown(f"**{HEALTH_ICON.get(status.health, '⚪')} {status.name}**  \n`{status.kind}` · `{status.model}`")
            breaker = BREAKER_TEXT[status.breaker]
            if status.breaker == "open":
                # An open breaker turns half-open only when a request comes for its trial call.
                breaker += f" — trial in {status.retry_in_s:.0f} s" if status.retry_in_s >= 0.5 else \
                    " — its next request is the trial call"
            st.markdown(f"Health: **{status.health}**  \nBreaker: **{breaker}**")
            rate = status.success_rate
            lat = stats.get("latency_ms", {})
            st.markdown(f"Recent success: **{'–' if rate is None else f'{rate:.0%}'}**",
                        help="Calls and probes alike; a result counts half as much for every 30 s it is older "
                             "than the newest.")
            st.markdown(f"Latency p50 / p95: **{seconds(lat.get('p50'))} / {seconds(lat.get('p95'))}**")
            if status.detail and status.breaker != "open":  # an open breaker's is said above
                st.caption(status.detail)
    st.caption(f"Over the last {summary['window_s'] / 60:.0f} min:")
    row = st.container(horizontal=True, key="counters")  # wraps: two or three to a line on a phone
    top = [row.container(width=140) for _ in range(6)]  # six to a line on a desktop, two on a phone
    top[0].metric("Requests", summary["requests"])
    ratio = summary["cache_hit_ratio"]
    top[1].metric("Cache hits", "–" if ratio is None else f"{ratio:.0%}")
    top[2].metric("Failovers", summary["failovers"],
                  help="Requests answered from further down the chain: a provider before the answer was "
                       "skipped by its breaker or failed.")
    top[3].metric("Hedges (won)", f"{summary['hedges']} ({summary['hedges_won']})")
    top[4].metric("Mid-answer switches", summary["restarts"])
    top[5].metric("Stall hedges (took over)", f"{summary['stall_hedges']} ({summary['stall_switches']})",
                  help="Backups started because an answer went silent mid-stream; in brackets, those that "
                       "went on first and took the answer over.")


@st.cache_data(ttl=15, show_spinner=False)
def stored_period(_r, since: float, replicas: tuple[str, ...]) -> list:
    """A day of breaker transitions, calls and probes from the history, read at most every 15 s
    (by every session together). `replicas`: only theirs, when the page is narrowed to some."""
    kept = _r.history.period(since, ["attempt", "probe", "transition"])
    return [e for e in kept if not replicas or e.replica in replicas]


def uptime_tab(metrics) -> None:
    span, bars = PERIODS[st.segmented_control("Period", list(PERIODS), default="Last hour", key="uptime_period",
                                              required=True, label_visibility="collapsed") or "Last hour"]
    now = time.time()
    day = now - 86400
    picked = tuple(st.session_state.get("replicas") or ())
    stored = stored_period(r, day - day % 60, picked)  # a minute's key: every session shares the read
    live = [e for e in metrics.events(since=day) if isinstance(e, (AttemptEvent, ProbeEvent, TransitionEvent))]
    merged = sorted(set(stored).union(live), key=lambda e: e.at)
    names = [p.name for p in r.providers]
    table = uptime(merged, names, since=now - span, until=now, slices=bars)
    for name in names:
        share = table[name].share
        st.html(_bars(name, table[name].slices, share, span))
    st.caption("Each bar is " + ("a minute" if span == 3600 else "half an hour") + ": 🟩 answering · 🟨 some calls "
               "or probes failed, or the breaker was open for a while · 🟥 down · ⬜ nothing to go on. From the "
               "metrics history, so it outlives a restart.")
    st.subheader("Incidents")
    found = incidents(merged)
    if not found:
        st.caption("No breaker has opened in the last day.")
        return
    st.dataframe(pd.DataFrame([{
        "started": datetime.fromtimestamp(i.start), "provider": i.provider,
        "lasted": _duration(i.duration(now)) + ("" if i.end is not None else " (ongoing)"),
        "requests failed over": i.failed_over, "cause": i.cause,
        "ended by": i.resolved_by or "–"} for i in found]), hide_index=True, width="stretch",
        column_config={"started": st.column_config.DatetimeColumn(format="MMM D, HH:mm:ss")})


def _bars(name: str, slices, share, span) -> str:
    cells = "".join(
        f'<div title="{datetime.fromtimestamp(s.start):%H:%M}–{datetime.fromtimestamp(s.end):%H:%M}: {s.status}'
        f' ({s.ok} ok, {s.failed} failed{f", breaker open {s.open_s:.0f} s" if s.open_s else ""})" '
        f'style="flex:1;height:28px;border-radius:2px;background:{palette.UPTIME[s.status]}"></div>' for s in slices)
    figure = "–" if share is None else f"{share:.1%}"
    return (f'<div data-testid="uptime-{name}" style="margin:0 0 10px 0">'
            f'<div style="display:flex;justify-content:space-between;font-size:14px">'
            f'<span><b style="color:{COLOURS.get(name, "#555")}">●</b> <b>{name}</b></span>'
            f'<span>{figure} uptime</span></div>'
            f'<div style="display:flex;gap:2px;margin-top:4px">{cells}</div>'
            f'<div style="display:flex;justify-content:space-between;font-size:11px;color:#888">'
            f'<span>{"1 hour ago" if span == 3600 else "24 hours ago"}</span><span>now</span></div></div>')


def _duration(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600} h {s % 3600 // 60} min" if s >= 3600 else f"{s // 60} min {s % 60} s" if s >= 60 \
        else f"{s} s"


def charts_tab(metrics) -> None:
    events = metrics.events()  # one copy of the store per refresh, split by kind below
    attempts = frame(events, AttemptEvent)
    requests = frame(events, RequestEvent)
    if attempts.empty and requests.empty:
        st.info("No traffic yet. Ask something on the **Chat** page, or run the load generator on the **Chaos** "
                "page, and the charts fill in here.", icon="📭")
        return
    ats = [e.at for e in events]
    bucket = f"{bucket_seconds(max(ats) - min(ats) if ats else 0)}s"
    ok = attempts[attempts["outcome"] == "ok"] if not attempts.empty else attempts
    left, right = st.columns(2)
    with left:
        st.subheader("Latency")
        st.plotly_chart(over_time(ok, "latency_ms", "Latency (ms)"), width="stretch", key="latency_time", config=PLOT)
    with right:
        st.subheader("Time to first token")
        st.plotly_chart(over_time(ok.dropna(subset=["ttft_ms"]) if not ok.empty else ok, "ttft_ms",
                                  "Time to first token (ms)"), width="stretch", key="ttft_time", config=PLOT)
    st.caption("Each dot is one answer; per provider, the solid line is the median (p50) of its last 20, the "
               "dashed line the 95th percentile. Lines stop where nothing happened for a while.")
    left, right = st.columns(2)
    with left:
        st.subheader("Outcomes")
        fig = go.Figure()
        ymax = 0
        if not attempts.empty:
            a = attempts[attempts["outcome"] != "skipped"].copy()
            a["result"] = a["error_kind"].fillna(a["outcome"])
            a["bucket"] = a["time"].dt.floor(bucket)
            counts = a.groupby(["bucket", "result"]).size().reset_index(name="attempts")
            ymax = counts.groupby("bucket")["attempts"].sum().max()
            order = ["ok"] + sorted(set(counts["result"]) - {"ok"})
            for result in order:
                g = counts[counts["result"] == result]
                fig.add_bar(x=g["bucket"], y=g["attempts"], name=result, marker_color=palette.outcome_colour(result))
            fig.update_layout(barmode="stack")
        st.plotly_chart(layout(fig, counts=True, ymax=ymax), width="stretch", key="outcomes_time", config=PLOT)
    with right:
        st.subheader("Failovers and hedges")
        fig = go.Figure()
        ymax = 0
        if not requests.empty:
            q = requests.copy()
            q["bucket"] = q["time"].dt.floor(bucket)
            q["failed_over"] = q["failovers"] > 0  # RequestEvent.failed_over: the one definition
            g = q.groupby("bucket").agg(failovers=("failed_over", "sum"), hedges=("hedges", "sum"),
                                        stall_hedges=("stall_hedges", "sum"),
                                        switches=("restarted", "sum")).reset_index()
            ymax = g[["failovers", "hedges", "stall_hedges", "switches"]].to_numpy().max()
            for what, colour in (("failovers", palette.WARN), ("hedges", "#3366cc"), ("stall_hedges", "#8e44ad"),
                                 ("switches", palette.BAD)):
                fig.add_bar(x=g["bucket"], y=g[what], name=what.replace("_", " "), marker_color=colour)
            fig.update_layout(barmode="group")
        st.plotly_chart(layout(fig, counts=True, ymax=ymax), width="stretch", key="failovers", config=PLOT)
    st.caption(f"Bars are {_duration(int(bucket[:-1]))} each.")
    left, right = st.columns(2)
    with left:
        st.subheader("Tier mix")
        fig = go.Figure()
        if not requests.empty:
            tiers = requests.groupby("tier").size().reset_index(name="requests")
            fig.add_pie(labels=tiers["tier"], values=tiers["requests"], hole=0.45, sort=False)
            hits = (requests["tier"] == "cache").mean()
            fig.update_layout(annotations=[dict(text=f"cache<br>{hits:.0%}", showarrow=False)])
        st.plotly_chart(layout(fig), width="stretch", key="tiers", config=PLOT)
    with right:
        st.subheader("Latency distribution")
        fig = go.Figure()
        for name, g in ok.groupby("provider", sort=False) if not ok.empty else ():
            fig.add_box(y=g["latency_ms"], name=name, marker_color=COLOURS.get(name), boxpoints="outliers")
        fig = layout(fig)
        fig.update_layout(showlegend=False, yaxis_title="ms")
        st.plotly_chart(fig, width="stretch", key="latency_dist", config=PLOT)
    st.subheader("Breakers")
    st.plotly_chart(breaker_timeline(events), width="stretch", key="breakers", config=PLOT)
    st.caption("Each provider's breaker over time: closed (answering), open (skipped), half-open (one trial "
               "call in flight: usually a second or two, so it is drawn at least a few pixels wide).")


def over_time(df: pd.DataFrame, column: str, title: str) -> go.Figure:
    """Each attempt as a dot, with a rolling p50 (solid) and p95 (dashed) line per provider; one
    legend entry per provider (its dots and lines toggle together); lines break across idle gaps."""
    fig = go.Figure()
    if not df.empty:
        for provider, g in df.sort_values("time").groupby("provider", sort=False):
            colour = COLOURS.get(provider, palette.PROVIDERS[-1])
            window = g[column].rolling(20, min_periods=1)
            p50, p95 = window.quantile(0.5).tolist(), window.quantile(0.95).tolist()
            times = g["time"].tolist()
            x, y50, y95 = [], [], []
            cuts = set(breaks(g["at"].tolist()))
            for i, t in enumerate(times):
                if i in cuts:  # a gap in the line rather than a straight stroke across idle time
                    x += [None]
                    y50 += [None]
                    y95 += [None]
                x += [t]
                y50 += [p50[i]]
                y95 += [p95[i]]
            fig.add_scatter(x=g["time"], y=g[column], mode="markers", name=provider, legendgroup=provider,
                            marker=dict(color=colour, size=5), opacity=0.45)
            fig.add_scatter(x=x, y=y50, mode="lines", name=f"{provider} p50", legendgroup=provider,
                            showlegend=False, line=dict(color=colour), connectgaps=False)
            fig.add_scatter(x=x, y=y95, mode="lines", name=f"{provider} p95", legendgroup=provider,
                            showlegend=False, line=dict(color=colour, dash="dash"), connectgaps=False)
    fig = layout(fig)
    fig.update_layout(yaxis_title=title)
    return fig


def breaker_timeline(events: list) -> go.Figure:
    """Bands per provider: closed, open, half-open, from the transitions in view (closed before the first)."""
    names = [p.name for p in r.providers]
    now = time.time()
    start = min((e.at for e in events), default=now)
    states = {n: [(start, "closed")] for n in names}
    for e in events:
        if isinstance(e, TransitionEvent) and e.provider in states:
            if e.old != e.new:
                states[e.provider].append((e.at, e.new))
    fig = go.Figure()
    shown = set()
    span = max(now - start, 1.0)
    for name in names:
        spans = states[name] + [(now, None)]
        for (t0, state), (t1, _) in zip(spans, spans[1:]):
            width = max(t1 - t0, span / 150)  # a second-long half-open stays visible
            fig.add_bar(y=[name], x=[width * 1000], base=[datetime.fromtimestamp(t0)], orientation="h",
                        marker_color=palette.BREAKER[state], name=state, legendgroup=state,
                        showlegend=state not in shown, hovertemplate=f"{name}: {state}<extra></extra>")
            shown.add(state)
    fig = layout(fig, height=90 + 36 * len(names))
    fig.update_layout(barmode="overlay", bargap=0.35)
    fig.update_xaxes(type="date")
    fig.update_yaxes(autorange="reversed")
    return fig


@st.fragment(run_every=interval if auto else None)
def verdict() -> None:
    headline()


@st.fragment(run_every=interval if auto else None)
def live() -> None:
    metrics = traffic()
    now, uptime_, charts = st.tabs(["Now", "Uptime & incidents", "Charts"], key="status_tab")
    with now:
        now_tab(metrics)
    with uptime_:
        uptime_tab(metrics)
    with charts:
        charts_tab(metrics)


with top:
    verdict()
live()
