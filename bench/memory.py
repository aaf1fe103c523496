"""6. Memory: RSS growth after many distinct requests (metrics and cache are bounded)."""

from __future__ import annotations

import gc
from concurrent.futures import ThreadPoolExecutor

from core.messages import ChatRequest

from .harness import chain, fmt, rss_mb, table


def bench_memory(small: int, large: int) -> dict:
    ch = chain(["ollama"], responder=lambda q, m: "short answer here")
    try:
        def ask_many(start: int, stop: int) -> None:
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda i: ch.router.ask(ChatRequest.ask(f"distinct question {i}")), range(start, stop)))

        ask_many(0, small)
        gc.collect()
        at_small = rss_mb()
        ask_many(small, large)
        gc.collect()
        at_large = rss_mb()
        events, cached = len(ch.router.metrics.events()), len(ch.router.cache)
    finally:
        ch.close()
    out = {"requests_small": small, "requests_large": large, "rss_small_mb": at_small, "rss_large_mb": at_large,
           "growth_mb": at_large - at_small, "events_kept": events, "cache_entries": cached}
    table("6. Memory: RSS after many distinct requests (target ≤ 20 MB growth; metrics and cache are bounded)",
          ["after", "RSS", "after", "RSS", "growth", "events kept", "cache entries"],
          [[small, fmt(at_small, " MB", 1), large, fmt(at_large, " MB", 1), fmt(out["growth_mb"], " MB", 1), events,
            cached]])
    return out
