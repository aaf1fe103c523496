"""1. Router overhead: the same 60-chunk stream through the bare SDK and through the router, alternated."""

from __future__ import annotations

import statistics
import time

from core.messages import ChatRequest
from core.metrics import quantile

from .harness import KINDS, SIXTY, chain, direct_caller, fmt, sixty, table


def bench_overhead(n: int) -> dict:
    out = {}
    for kind in KINDS:
        ch = chain([kind], responder=sixty, cache__enabled=False)
        try:
            direct = direct_caller(kind, ch.servers[0].url)
            request = ChatRequest.ask("hi")

            def routed():
                result = ch.router.ask(request)
                assert result.complete and result.text == SIXTY, result.notice

            for _ in range(max(5, n // 10)):  # warm both paths: connections, imports, JIT-free caches
                direct()
                routed()
            d, r = [], []
            for i in range(n):  # alternate, so drift and noise hit both alike
                first, second = (direct, routed) if i % 2 == 0 else (routed, direct)
                for f in (first, second):
                    t0 = time.perf_counter()
                    f()
                    (d if f is direct else r).append((time.perf_counter() - t0) * 1000)
            added = [b - a for a, b in zip(d, r)]
            out[kind] = {"n": n, "direct_median_ms": statistics.median(d), "router_median_ms": statistics.median(r),
                         "added_median_ms": statistics.median(added), "direct_p95_ms": quantile(d, 0.95),
                         "router_p95_ms": quantile(r, 0.95), "added_p95_ms": quantile(r, 0.95) - quantile(d, 0.95)}
        finally:
            ch.close()
    all_added = statistics.median(v["added_median_ms"] for v in out.values())
    out["all"] = {"added_median_ms": all_added}
    table("1. Router overhead: 60-chunk zero-latency stream, SDK alone vs through the router (target ≤ 1 ms median)",
          ["kind", "n", "SDK median", "router median", "added median", "SDK p95", "router p95", "added p95"],
          [[k, v["n"], fmt(v["direct_median_ms"], " ms"), fmt(v["router_median_ms"], " ms"),
            fmt(v["added_median_ms"], " ms"), fmt(v["direct_p95_ms"], " ms"), fmt(v["router_p95_ms"], " ms"),
            fmt(v["added_p95_ms"], " ms")] for k, v in out.items() if k != "all"])
    print(f"median of the four added medians: {all_added:.2f} ms "
          "(published, other machines: LiteLLM 4.34 ms, Portkey 2.37 ms, Bifrost 0.44 ms)")
    return out
