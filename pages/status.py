"""Status: health, breakers, latency and time to first token, outcomes, tiers, failovers — live."""

from __future__ import annotations

import csv
import io
from datetime import datetime

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from core.health import judge
from core.metrics import AttemptEvent, RequestEvent, TransitionEvent, as_row
from pages.shared import admin_unlocked, banners, router, seconds

r = router()
st.title("📈 Status")
banners()

# Probing can move breakers, and breakers and the cache are shared by every session. Belt and braces: the
# buttons are disabled while locked, and each action checks `locked` again on the server.
locked = not admin_unlocked("**Probe now**, **Reset breakers** and **Clear cache** affect every user of this "
                            "server, so they are locked.")
controls = st.columns([1, 1, 1, 1, 1.3, 1.3])
auto = controls[4].toggle("Auto-refresh", value=True, key="auto_refresh")
interval = controls[5].selectbox("Every", [1, 2, 5, 10, 30], index=2, key="refresh_every",
                                 format_func=lambda s: f"{s} s", disabled=not auto, label_visibility="collapsed")
if controls[0].button("Probe now", key="probe", width="stretch", disabled=locked) and not locked:
    with st.spinner("Probing…"):
        r.probe()
    st.toast("Probed every provider.")
if controls[1].button("Reset breakers", key="reset_breakers", width="stretch", disabled=locked) and not locked:
    r.reset_breakers()
    st.toast("All breakers closed.")
if controls[2].button("Clear cache", key="clear_cache", width="stretch", disabled=locked) and not locked:
    r.clear_cache()
    st.toast("Answer cache cleared.")


def traffic():
    """Whose traffic this page shows (core: Router.traffic), narrowed by the Replicas filter."""
    metrics = r.traffic()
    picked = st.session_state.get("replicas") or []
    if r.stores.fleet and metrics is r.fleet_metrics and picked and set(picked) != set(metrics.replicas()):
        return metrics.only(picked)
    return metrics


if r.stores.fleet:
    st.multiselect("Replicas", r.fleet_metrics.replicas(), key="replicas", placeholder="The whole fleet",
                   help=f"Every replica on this Redis. This page is served by **{r.stores.replica}**.")

events = traffic().events()
buffer = io.StringIO()
rows = [as_row(e) for e in events]
if rows:
    writer = csv.DictWriter(buffer, fieldnames=sorted({k for row in rows for k in row}))
    writer.writeheader()
    writer.writerows(rows)
controls[3].download_button("Metrics CSV", buffer.getvalue(), "understudy-metrics.csv", "text/csv", key="csv",
                            width="stretch", disabled=not rows)

HEALTH_ICON = {"ok": "🟢", "degraded": "🟡", "down": "🔴", "no key": "⚪", "unknown": "⚪"}
BREAKER_ICON = {"closed": "closed", "half-open": "half-open (trial)", "open": "open"}


def frame(events: list, kind: type) -> pd.DataFrame:
    data = [as_row(e) for e in events if isinstance(e, kind)]
    df = pd.DataFrame(data)
    if not df.empty:
        df["time"] = pd.to_datetime(df["at"], unit="s")
    return df


def tiles(metrics) -> None:
    summary = metrics.summary(r.config.policy.metrics.window)
    top = st.columns(6)
    top[0].metric("Requests", summary["requests"])
    ratio = summary["cache_hit_ratio"]
    top[1].metric("Cache hits", "–" if ratio is None else f"{ratio:.0%}")
    top[2].metric("Failovers", summary["failovers"])
    top[3].metric("Hedges (won)", f"{summary['hedges']} ({summary['hedges_won']})")
    top[4].metric("Mid-answer switches", summary["restarts"])
    top[5].metric("Stall hedges (took over)", f"{summary['stall_hedges']} ({summary['stall_switches']})",
                  help="Backups started because an answer went silent mid-stream; in brackets, those that "
                       "went on first and took the answer over.")
    rows = r.status(probe=False)
    overall = judge(r).status  # the same verdict /healthz reports
    st.caption(f"{HEALTH_ICON[overall]} Overall: **{overall}** · over the last {summary['window_s'] / 60:.0f} min · "
               f"updated {datetime.now():%H:%M:%S}")
    for what, health in (("Metrics history", r.history.health()), ("Stale answers", r.answers.health())):
        if health["status"] == "failing":  # what is shown is still right; it just won't outlive a restart
            st.warning(f"{what} can't be saved right now ({health['last_error']}): {health['backlog']} waiting, "
                       f"{health['dropped']} dropped. It is retried by itself.", icon="💾")
    cols = st.columns(len(r.providers) or 1)
    for col, status in zip(cols, rows):
        stats = summary["providers"].get(status.name, {})
        with col.container(border=True):
            st.markdown(f"**{HEALTH_ICON.get(status.health, '⚪')} {status.name}**  \n`{status.kind}` · `{status.model}`")
            breaker = BREAKER_ICON[status.breaker]
            if status.breaker == "open":
                breaker += f" — trial in {status.retry_in_s:.0f} s"
            st.markdown(f"Health: **{status.health}**  \nBreaker: **{breaker}**")
            rate = status.success_rate
            lat = stats.get("latency_ms", {})
            st.markdown(f"Success: **{'–' if rate is None else f'{rate:.0%}'}**  \n"
                        f"Latency p50 / p95: **{seconds(lat.get('p50'))} / {seconds(lat.get('p95'))}**")
            if status.detail:
                st.caption(status.detail)


def charts(metrics) -> None:
    events = metrics.events()  # one copy of the store per refresh, split by kind below
    attempts = frame(events, AttemptEvent)
    requests = frame(events, RequestEvent)
    if attempts.empty and requests.empty:
        st.info("No traffic yet. Ask something on the **Chat** page, or run the load generator on the **Chaos** "
                "page, and the charts fill in here.", icon="📭")
        return
    ok = attempts[attempts["outcome"] == "ok"] if not attempts.empty else attempts
    left, right = st.columns(2)
    with left:
        st.subheader("Latency over time")
        st.plotly_chart(over_time(ok, "latency_ms", "Latency (ms)"), width="stretch", key="latency_time")
    with right:
        st.subheader("Time to first token over time")
        st.plotly_chart(over_time(ok.dropna(subset=["ttft_ms"]) if not ok.empty else ok, "ttft_ms",
                                  "Time to first token (ms)"), width="stretch", key="ttft_time")
    left, right = st.columns(2)
    with left:
        st.subheader("Latency distribution")
        fig = px.box(ok, x="provider", y="latency_ms", color="provider", points="outliers") if not ok.empty \
            else go.Figure()
        fig.update_layout(showlegend=False, yaxis_title="ms", height=320, margin=dict(t=10, b=10))
        st.plotly_chart(fig, width="stretch", key="latency_dist")
    with right:
        st.subheader("Outcomes over time")
        if not attempts.empty:
            a = attempts[attempts["outcome"] != "skipped"].copy()
            a["result"] = a["error_kind"].fillna(a["outcome"])
            a["bucket"] = a["time"].dt.floor("10s")
            counts = a.groupby(["bucket", "result"]).size().reset_index(name="attempts")
            fig = px.bar(counts, x="bucket", y="attempts", color="result",
                         color_discrete_map={"ok": "#2e9e5b", "cancelled": "#9aa0a6"})
        else:
            fig = go.Figure()
        fig.update_layout(height=320, margin=dict(t=10, b=10), xaxis_title=None, legend_title=None)
        st.plotly_chart(fig, width="stretch", key="outcomes_time")
    left, right = st.columns(2)
    with left:
        st.subheader("Tier mix")
        if not requests.empty:
            tiers = requests.groupby("tier").size().reset_index(name="requests")
            fig = px.pie(tiers, names="tier", values="requests", hole=0.45)
            hits = (requests["tier"] == "cache").mean()
            fig.update_layout(annotations=[dict(text=f"cache<br>{hits:.0%}", showarrow=False)])
        else:
            fig = go.Figure()
        fig.update_layout(height=320, margin=dict(t=10, b=10))
        st.plotly_chart(fig, width="stretch", key="tiers")
    with right:
        st.subheader("Failovers and hedges")
        if not requests.empty:
            q = requests.copy()
            q["bucket"] = q["time"].dt.floor("10s")
            g = q.groupby("bucket").agg(failovers=("failovers", "sum"), hedges=("hedges", "sum"),
                                        stall_hedges=("stall_hedges", "sum"),
                                        switches=("restarted", "sum")).reset_index()
            fig = px.bar(g.melt(id_vars="bucket", var_name="what", value_name="count"), x="bucket", y="count",
                         color="what", barmode="group")
        else:
            fig = go.Figure()
        fig.update_layout(height=320, margin=dict(t=10, b=10), xaxis_title=None, legend_title=None)
        st.plotly_chart(fig, width="stretch", key="failovers")
    transitions = frame(events, TransitionEvent)
    if not transitions.empty:
        st.subheader("Breaker transitions")
        st.dataframe(transitions[["time", "provider", "old", "new", "cooldown_s", "reason"]].iloc[::-1],
                     hide_index=True, width="stretch")


def over_time(df: pd.DataFrame, column: str, title: str) -> go.Figure:
    """Each attempt as a point, with a rolling p50 (solid) and p95 (dashed) line per provider."""
    fig = go.Figure()
    if not df.empty:
        for i, (provider, g) in enumerate(df.sort_values("time").groupby("provider")):
            color = px.colors.qualitative.Plotly[i % 10]
            fig.add_scatter(x=g["time"], y=g[column], mode="markers", name=provider, marker=dict(color=color, size=5),
                            opacity=0.5)
            window = g[column].rolling(20, min_periods=1)
            fig.add_scatter(x=g["time"], y=window.quantile(0.5), mode="lines", name=f"{provider} p50",
                            line=dict(color=color))
            fig.add_scatter(x=g["time"], y=window.quantile(0.95), mode="lines", name=f"{provider} p95",
                            line=dict(color=color, dash="dash"))
    fig.update_layout(height=320, margin=dict(t=10, b=10), yaxis_title=title, xaxis_title=None,
                      legend=dict(orientation="h"))
    return fig


@st.fragment(run_every=interval if auto else None)
def live() -> None:
    metrics = traffic()
    tiles(metrics)
    charts(metrics)


live()
