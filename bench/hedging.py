"""3. Hedging: its cost on a healthy provider, and what it buys when a few calls are slow."""

from __future__ import annotations

import math
import random
import threading
from concurrent.futures import ThreadPoolExecutor

from core.faults import Fault
from core.messages import ChatRequest
from core.metrics import quantile

from .harness import chain, fmt, table


def bench_hedging(n: int) -> dict:
    rng = random.Random(42)
    lock = threading.Lock()

    def lognormal() -> float:  # median 80 ms, sigma 0.5: a healthy provider's first-token times
        with lock:
            return rng.lognormvariate(math.log(0.08), 0.5)

    def run(hedging: bool, slow_share: float) -> dict:
        ch = chain(["anthropic", "openai"], server_kw={"first_delay": lognormal}, cache__enabled=False,
                   hedging__enabled=hedging)
        try:
            if slow_share:
                ch.router.chaos.set("anthropic-0", Fault("slow_first", seconds=2.0), probability=slow_share)
            with ThreadPoolExecutor(8) as pool:
                results = list(pool.map(lambda i: ch.router.ask(ChatRequest.ask(f"q{i}")), range(n)))
            primary_calls = len(ch.servers[0].chat_requests())
            backup_calls = len(ch.servers[1].chat_requests())
            ttfts = [r.ttft_ms for r in results if r.ttft_ms is not None]
            return {"n": n, "complete": sum(r.complete for r in results), "hedges": ch.router.metrics.totals().get(
                "hedges", 0), "extra_requests_pct": 100 * backup_calls / max(1, primary_calls),
                "ttft_p50_ms": quantile(ttfts, 0.5), "ttft_p99_ms": quantile(ttfts, 0.99)}
        finally:
            ch.close()

    healthy = run(True, 0.0)
    off = run(False, 0.05)
    on = run(True, 0.05)
    table("3. Hedging: cost when healthy (log-normal first token, median 80 ms) and p99 when 5 % of primary calls "
          "take 2 s (target: ≤ 5 % extra requests)",
          ["run", "n", "complete", "hedges", "extra requests", "TTFT p50", "TTFT p99"],
          [[name, v["n"], v["complete"], v["hedges"], fmt(v["extra_requests_pct"], " %", 1),
            fmt(v["ttft_p50_ms"], " ms", 0), fmt(v["ttft_p99_ms"], " ms", 0)]
           for name, v in (("healthy, hedging on", healthy), ("5 % slow, hedging off", off),
                           ("5 % slow, hedging on", on))])
    return {"healthy": healthy, "slow_without_hedging": off, "slow_with_hedging": on}
