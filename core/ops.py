"""What the app's ops endpoints serve: `/healthz` as JSON and `/metrics` in Prometheus text."""

from __future__ import annotations

from .breaker import CLOSED, HALF_OPEN, OPEN
from .router import Router

_BREAKER_VALUE = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


def healthz(router: Router, *, demo: bool = False) -> tuple[int, dict]:
    """(HTTP status, body). 200 while at least one provider can take traffic, else 503. A failing
    follow-up store makes the status at least "degraded": questions can't be kept.

    Reads state only: no provider is called, so a load balancer polling it costs nothing."""
    rows = router.status(probe=False)
    usable = [r for r in rows if r.breaker != OPEN and r.health != "no key"]
    if not rows or not usable:
        overall = "down"
    elif len(usable) < len(rows) or any(r.health in ("degraded", "down") for r in rows):
        overall = "degraded"
    else:
        overall = "ok"
    followups = router.followups.health()
    if followups["status"] != "ok" and overall == "ok":
        overall = "degraded"
    body = {
        "status": overall,
        "demo": demo,
        "providers": [{"name": r.name, "kind": r.kind, "model": r.model, "health": r.health, "breaker": r.breaker,
                       "retry_in_s": r.retry_in_s} for r in rows],
        "chaos": router.chaos.state(),
        "followups": followups,
    }
    return (503 if overall == "down" else 200), body


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus(router: Router) -> str:
    """The metrics in Prometheus text exposition format (version 0.0.4)."""
    totals = router.metrics.totals()
    out: list[str] = []

    def family(name: str, kind: str, help_: str, samples: list[tuple[dict, float]]) -> None:
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            label_text = ",".join(f'{k}="{_esc(str(v))}"' for k, v in labels.items())
            out.append(f"{name}{{{label_text}}} {value:g}" if label_text else f"{name} {value:g}")

    family("understudy_requests_total", "counter", "Requests answered, by tier.",
           [({"tier": k.split(":", 1)[1]}, v) for k, v in sorted(totals.items()) if k.startswith("tier:")]
           or [({}, 0)])
    attempts = []
    for key, value in sorted(totals.items()):
        if key.startswith("attempt:"):
            _, provider, outcome, kind = key.split(":", 3)
            attempts.append(({"provider": provider, "outcome": outcome, "error_kind": kind or "none"}, value))
    family("understudy_attempts_total", "counter", "Provider attempts by outcome and error kind.", attempts)
    family("understudy_tokens_total", "counter", "Tokens billed by successful attempts.",
           [({"provider": k.split(":")[1], "direction": k.split(":")[2]}, v) for k, v in sorted(totals.items())
            if k.startswith("tokens:")])
    family("understudy_breaker_transitions_total", "counter", "Breaker transitions, by new state.",
           [({"provider": k.split(":")[1], "state": k.split(":")[2]}, v) for k, v in sorted(totals.items())
            if k.startswith("transition:")])
    family("understudy_hedges_total", "counter", "Hedged requests started.", [({}, totals.get("hedges", 0))])
    family("understudy_hedges_won_total", "counter", "Hedges that answered.", [({}, totals.get("hedges_won", 0))])
    family("understudy_failovers_total", "counter", "Providers tried after the first.", [({}, totals.get("failovers", 0))])
    family("understudy_breaker_state", "gauge", "0 closed, 1 half-open, 2 open.",
           [({"provider": name}, _BREAKER_VALUE[b.state]) for name, b in router.breakers.items()])
    family("understudy_cache_entries", "gauge", "Answers in the cache.", [({}, len(router.cache))])
    window = router.config.policy["metrics"]["window"]
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
