"""5. Cache hit latency."""

from __future__ import annotations

import time

from core.messages import ChatRequest
from core.metrics import quantile

from .harness import chain, fmt, table


def bench_cache(n: int) -> dict:
    ch = chain(["openai"])
    try:
        request = ChatRequest.ask("What is cached?")
        assert ch.router.ask(request).tier == "provider"
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            result = ch.router.ask(request)
            times.append((time.perf_counter() - t0) * 1000)
            assert result.tier == "cache"
    finally:
        ch.close()
    out = {"n": n, "p50_ms": quantile(times, 0.5), "p95_ms": quantile(times, 0.95), "p99_ms": quantile(times, 0.99)}
    table("5. Cache hit latency (target < 1 ms p50)", ["n", "p50", "p95", "p99"],
          [[n, fmt(out["p50_ms"], " ms", 3), fmt(out["p95_ms"], " ms", 3), fmt(out["p99_ms"], " ms", 3)]])
    return out
