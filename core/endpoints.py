"""What the app's ops endpoints serve: `/healthz` as JSON and `/metrics` in Prometheus text."""

from __future__ import annotations

import math
from dataclasses import astuple

from .breaker import CLOSED, HALF_OPEN, OPEN
from .health import judge
from .metrics import AttemptKey, TierKey, TokenKey, TransitionKey
from .router import Router

_BREAKER_VALUE = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


def healthz(router: Router, *, demo: bool = False) -> tuple[int, dict]:
    """(HTTP status, body). 200 while at least one provider can take traffic, else 503; the
    verdict and its one-line summary are the Status page's (core/health.py `judge`).

    Reads state only: no provider is called, so a load balancer polling it costs nothing."""
    verdict = judge(router)
    rows, followups, stores = verdict.providers, router.followups.health(), router.stores.health()
    history, answers = router.history.health(), router.answers.health()
    body = {
        "status": verdict.status,
        "summary": verdict.headline,  # the Status page's top line, word for word
        "problems": list(verdict.problems),
        "demo": demo,
        "replica": router.stores.replica,
        "shared_state": {k: stores["shared"].get(k) for k in ("status", "where", "since", "last_error")
                         if k in stores["shared"]},
        "providers": [{"name": r.name, "kind": r.kind, "model": r.model, "health": r.health, "breaker": r.breaker,
                       "retry_in_s": r.retry_in_s} for r in rows],
        "chaos": router.chaos.state(),
        "followups": followups,
        "history": history,
        "stale_answers": answers,
    }
    return verdict.http_status, body


def _esc(value: str) -> str:
    """A label value, escaped as the text format asks: backslash, double quote and newline."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    """Counts stay exact (`:g` would print 1234567 as 1.23457e+06); floats round-trip."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def prometheus(router: Router) -> str:
    """The metrics in Prometheus text exposition format (version 0.0.4)."""
    totals = router.metrics.totals()
    out: list[str] = []

    def labelled(family: type) -> list[tuple]:
        """(key, count) for every total in one family, sorted by label values (None sorts as "")."""
        rows = [(key, n) for key, n in totals.items() if isinstance(key, family)]
        return sorted(rows, key=lambda row: tuple(v or "" for v in astuple(row[0])))

    def family(name: str, kind: str, help_: str, samples: list[tuple[dict, float]]) -> None:
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            label_text = ",".join(f'{k}="{_esc(str(v))}"' for k, v in labels.items())
            out.append(f"{name}{{{label_text}}} {_number(value)}" if label_text else f"{name} {_number(value)}")

    family("understudy_requests_total", "counter", "Requests answered, by tier.",
           [({"tier": k.tier}, n) for k, n in labelled(TierKey)] or [({}, 0)])
    family("understudy_attempts_total", "counter", "Provider attempts by outcome and error kind.",
           [({"provider": k.provider, "outcome": k.outcome, "error_kind": k.error_kind or "none"}, n)
            for k, n in labelled(AttemptKey)])
    family("understudy_tokens_total", "counter", "Tokens billed by successful attempts.",
           [({"provider": k.provider, "direction": k.direction}, n) for k, n in labelled(TokenKey)])
    family("understudy_breaker_transitions_total", "counter", "Breaker transitions, by new state.",
           [({"provider": k.provider, "state": k.state}, n) for k, n in labelled(TransitionKey)])
    family("understudy_hedges_total", "counter", "Hedged requests started.", [({}, totals.get("hedges", 0))])
    family("understudy_hedges_won_total", "counter", "Hedges that answered.", [({}, totals.get("hedges_won", 0))])
    family("understudy_stall_hedges_total", "counter", "Backups started because an answer stalled.",
           [({}, totals.get("stall_hedges", 0))])
    family("understudy_stall_switches_total", "counter", "Stalled answers taken over by their backup.",
           [({}, totals.get("stall_switches", 0))])
    family("understudy_failovers_total", "counter", "Requests answered from further down the chain: a provider "
           "before the answer was skipped by its breaker or failed (core/failover.py).", [({}, totals.get("failovers", 0))])
    family("understudy_breaker_state", "gauge", "0 closed, 1 half-open, 2 open.",
           [({"provider": name}, _BREAKER_VALUE[b.state]) for name, b in router.breakers.items()])
    family("understudy_cache_entries", "gauge", "Answers in the cache.", [({}, len(router.cache))])
    window = router.config.policy.metrics.window
    summary = router.metrics.summary(window)["providers"]
    for metric, field in (("latency", "latency_ms"), ("ttft", "ttft_ms")):
        samples = []
        for provider, stats in summary.items():
            for q in ("p50", "p95", "p99"):
                value = stats[field][q]
                if value is not None:
                    samples.append(({"provider": provider, "quantile": f"0.{q[1:]}"}, value / 1000))
        family(f"understudy_{metric}_seconds", "gauge",
               f"Recent {'latency' if metric == 'latency' else 'time to first token'} quantiles "
               f"(last {window:g} s).", samples)
    return "\n".join(out) + "\n"
