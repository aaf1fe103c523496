"""The event store: bounded, thread-safe, summarised per provider; logs without content or keys."""

from __future__ import annotations

import json
import logging
import threading

from core.config import Config, Policy
from core.messages import ChatRequest
from core.metrics import (
    AttemptEvent,
    AttemptKey,
    Metrics,
    ProbeEvent,
    RequestEvent,
    TierKey,
    TokenKey,
    TransitionEvent,
    TransitionKey,
    as_row,
    quantile,
)
from core.router import Router
from core.simulator import Fault
from tests.conftest import KEY, entry_for


def attempt(at, provider="p", outcome="ok", latency=100.0, ttft=50.0, kind=None, hedge=False):
    return AttemptEvent(at, provider, "m", outcome, kind, latency, ttft, hedge, 10, 20)


def test_quantiles():
    assert quantile([], 0.5) is None
    assert quantile([1, 2, 3, 4], 0.5) == 2.5
    assert quantile(range(101), 0.95) == 95


def test_summary_per_provider_over_a_window():
    now = [1000.0]
    m = Metrics(max_events=100, wall=lambda: now[0])
    for i in range(10):
        m.record(attempt(990 + i, latency=100 + i * 10, ttft=10 + i))
    m.record(attempt(995, outcome="error", kind="overloaded", ttft=None))
    m.record(attempt(995, provider="q", outcome="ok", hedge=True))
    m.record(attempt(100, latency=99999))  # outside the window
    m.record(RequestEvent(999, "cache", None, 1.0, 0.0, True, 0, 0, 0, False, False))
    m.record(RequestEvent(999, "provider", "p", 120.0, 12.0, True, 2, 1, 1, True, False))
    s = m.summary(window_s=60)
    p = s["providers"]["p"]
    assert p["attempts"] == 11 and round(p["success_rate"], 3) == round(10 / 11, 3)
    assert p["errors"] == {"overloaded": 1} and p["latency_ms"]["p50"] == 145.0
    assert p["ttft_ms"]["p95"] is not None and p["tokens"] == {"input": 100, "output": 200}
    assert s["providers"]["q"]["hedges_won"] == 1
    assert s["requests"] == 2 and s["cache_hit_ratio"] == 0.5 and s["failovers"] == 1 and s["hedges_won"] == 1


def test_memory_is_bounded_but_totals_survive():
    m = Metrics(max_events=50, wall=lambda: 0.0)
    for i in range(1000):
        m.record(RequestEvent(i, "provider", "p", 1.0, 1.0, True, 1, 0, 0, False, False))
    assert len(m.events()) == 50 and m.totals()["requests"] == 1000


def test_recording_from_many_threads():
    m = Metrics(max_events=100_000, wall=lambda: 0.0)

    def work():
        for i in range(2000):
            m.record(attempt(i))
            if i % 200 == 0:
                m.summary(10)  # readers run while writers write

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert m.totals()["attempts"] == 8000


def test_rows_for_export():
    row = as_row(attempt(1.0))
    assert row["type"] == "attempt" and row["provider"] == "p" and row["latency_ms"] == 100.0


def test_log_lines_never_carry_message_content_or_keys(sims, caplog):
    server = sims("openai")
    server.push(Fault.http(503))
    router = Router(Config(providers=(entry_for(server),), policy=Policy.defaults()))
    try:
        with caplog.at_level(logging.INFO, logger="understudy"):
            router.ask(ChatRequest.ask("my secret diagnosis is XYZZY", system="system prompt PLUGH"))
    finally:
        router.close()
    text = caplog.text
    assert "attempt provider=openai" in text and "request tier=provider" in text
    assert "XYZZY" not in text and "PLUGH" not in text and KEY not in text and "w49" not in text


# -- the rolling window --------------------------------------------------------------------------------

def reference_summary(events, now, window_s):
    """The summary as it was computed before the rolling window (issue 9): a scan of every event."""
    from collections import Counter
    from dataclasses import asdict

    events = [e for e in events if e.at >= now - window_s]
    attempts = [e for e in events if isinstance(e, AttemptEvent)]
    requests = [e for e in events if isinstance(e, RequestEvent)]
    providers = {}
    for name in sorted({a.provider for a in attempts}):
        mine = [a for a in attempts if a.provider == name and a.outcome != "skipped"]
        ok = [a for a in mine if a.outcome == "ok"]
        decided = [a for a in mine if a.outcome in ("ok", "error")]
        lat = [a.latency_ms for a in ok]
        ttft = [a.ttft_ms for a in ok if a.ttft_ms is not None]
        providers[name] = {
            "attempts": len(mine),
            "success_rate": (len(ok) / len(decided)) if decided else None,
            "errors": dict(Counter(a.error_kind for a in mine if a.error_kind)),
            "latency_ms": {f"p{int(q * 100)}": quantile(lat, q) for q in (0.5, 0.95, 0.99)},
            "ttft_ms": {f"p{int(q * 100)}": quantile(ttft, q) for q in (0.5, 0.95, 0.99)},
            "hedges": sum(1 for a in mine if a.hedge),
            "hedges_won": sum(1 for a in ok if a.hedge),
            "skipped": sum(1 for a in attempts if a.provider == name and a.outcome == "skipped"),
            "tokens": {"input": sum(a.input_tokens or 0 for a in ok), "output": sum(a.output_tokens or 0 for a in ok)},
            "transitions": [asdict(t) for t in events if isinstance(t, TransitionEvent) and t.provider == name],
        }
    tiers = Counter(r.tier for r in requests)
    return {
        "window_s": window_s, "requests": len(requests), "tiers": dict(tiers),
        "cache_hit_ratio": (tiers["cache"] / len(requests)) if requests else None,
        "failovers": sum(1 for r in requests if r.failovers), "hedges": sum(r.hedges for r in requests),
        "hedges_won": sum(1 for r in requests if r.hedge_won), "restarts": sum(1 for r in requests if r.restarted),
        "stall_hedges": sum(r.stall_hedges for r in requests),
        "stall_switches": sum(1 for r in requests if r.stall_switched),
        "providers": providers,
    }


def random_event(rng, at):
    provider = rng.choice("pqr")
    roll = rng.random()
    if roll < 0.2:
        return RequestEvent(at, rng.choice(["provider", "cache", "offline"]), provider, rng.uniform(1, 500), None,
                            rng.random() < 0.9, rng.randint(0, 3), rng.randint(0, 2), rng.randint(0, 1),
                            rng.random() < 0.3, rng.random() < 0.1, stall_hedges=rng.randint(0, 2),
                            stall_switched=rng.random() < 0.2)
    if roll < 0.25:
        return TransitionEvent(at, provider, "closed", rng.choice(["open", "half-open"]), "why", 5.0)
    if roll < 0.28:
        return ProbeEvent(at, provider, True, 3.0)
    outcome = rng.choice(["ok", "ok", "ok", "error", "cancelled", "skipped", "declined"])
    kind = rng.choice(["overloaded", "timeout", None]) if outcome == "error" else None
    return AttemptEvent(at, provider, "m", outcome, kind, round(rng.uniform(1, 900), 1),
                        rng.choice([None, round(rng.uniform(1, 300), 1)]), rng.random() < 0.2,
                        rng.randint(0, 50), rng.randint(0, 50))


def test_the_rolling_summary_equals_a_scan_of_the_window():
    """Windows of several spans, a store that evicts, events recorded out of order and a wall
    clock that moves on (and once back): every summary equals the old full scan's."""
    import random

    rng = random.Random(9)
    now = [1000.0]
    m = Metrics(max_events=300, wall=lambda: now[0])
    recorded = []
    for step in range(3000):
        now[0] += rng.uniform(0, 0.5) if step != 2000 else -40.0
        event = random_event(rng, now[0] - rng.choice([0, 0, 0, 1.5, 30, 400]))  # some late, some stale
        m.record(event)
        recorded.append(event)
        if step % 37 == 0:
            for window_s in (10.0, 60.0, 900.0):
                s = m.summary(window_s)
                assert s.pop("totals")
                assert s == reference_summary(recorded[-300:], now[0], window_s), (step, window_s)


def test_the_window_slides():
    now = [100.0]
    m = Metrics(max_events=1000, wall=lambda: now[0])
    m.record(attempt(100, provider="p", latency=10))
    m.record(attempt(130, provider="p", latency=30))
    m.record(RequestEvent(130, "cache", None, 1.0, 0.0, True, 0, 0, 0, False, False))
    now[0] = 130
    s = m.summary(window_s=60)
    assert s["providers"]["p"]["attempts"] == 2 and s["providers"]["p"]["latency_ms"]["p50"] == 20
    now[0] = 161  # the first attempt has left the window
    s = m.summary(window_s=60)
    assert s["providers"]["p"]["attempts"] == 1 and s["providers"]["p"]["latency_ms"]["p50"] == 30
    assert s["requests"] == 1
    m.record(attempt(200, provider="q"))
    now[0] = 200  # everything from 130 has gone; q has come
    s = m.summary(window_s=60)
    assert list(s["providers"]) == ["q"] and s["requests"] == 0 and s["cache_hit_ratio"] is None
    assert m.totals()["attempts"] == 3  # totals since start are not windowed


def test_summary_is_json_and_totals_are_keyed_by_typed_labels():
    m = Metrics(max_events=100, wall=lambda: 10.0)
    m.record(attempt(10, provider="a:b", outcome="error", kind="overloaded"))
    m.record(RequestEvent(10, "cache", None, 1.0, 0.0, True, 0, 0, 0, False, False))
    m.record(TransitionEvent(10, "a:b", "closed", "open", "why", 5.0))
    totals = m.totals()
    assert totals[AttemptKey("a:b", "error", "overloaded")] == 1 and totals[TierKey("cache")] == 1
    assert totals[TokenKey("a:b", "input")] == 10 and totals[TransitionKey("a:b", "open")] == 1
    assert TokenKey("p", "open") != TransitionKey("p", "open")  # families never collide
    exported = json.loads(json.dumps(m.summary(60)))
    assert exported["totals"]["attempt"] == [{"provider": "a:b", "outcome": "error", "error_kind": "overloaded",
                                              "count": 1}]
    assert exported["totals"]["requests"] == 1 and exported["totals"]["tier"] == [{"tier": "cache", "count": 1}]
