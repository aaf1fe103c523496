"""The event store: bounded, thread-safe, summarised per provider; logs without content or keys."""

from __future__ import annotations

import logging
import threading

from core.chat import ChatRequest
from core.config import Config, Policy
from core.metrics import AttemptEvent, Metrics, RequestEvent, as_row, quantile
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
