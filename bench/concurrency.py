"""4. Concurrency: many conversations from threads through one router, with and without chaos."""

from __future__ import annotations

import threading
import time

from core.faults import Fault
from core.messages import ChatRequest
from core.metrics import quantile

from .harness import chain, direct_caller, fmt, table


def bench_concurrency(sessions: int, turns: int) -> dict:
    out = {}
    for name, chaotic in (("no chaos", False), ("chaos on the primary", True)):
        ch = chain(["anthropic", "openai", "gemini"], server_kw={"first_delay": 0.02}, cache__enabled=False)
        direct = direct_caller("anthropic", ch.servers[0].url)
        try:
            if chaotic:
                ch.router.chaos.set("anthropic-0", Fault.http(503), probability=0.3)
                ch.router.chaos.set("openai-1", Fault("cut", after=5), probability=0.2)
            errors, latencies, incomplete, direct_lat, tiers = [], [], 0, [], {}
            lock = threading.Lock()

            def session(sid: int) -> None:
                nonlocal incomplete
                for t in range(turns):
                    t0 = time.perf_counter()
                    try:
                        result = ch.router.ask(ChatRequest.ask(f"session {sid} turn {t}"))
                    except Exception as e:  # noqa: BLE001 — counted: must be zero
                        with lock:
                            errors.append(repr(e))
                        continue
                    with lock:
                        latencies.append((time.perf_counter() - t0) * 1000)
                        incomplete += not result.complete
                        tiers[result.tier] = tiers.get(result.tier, 0) + 1

            def direct_session(sid: int) -> None:
                for _ in range(turns):
                    t0 = time.perf_counter()
                    direct()
                    with lock:
                        direct_lat.append((time.perf_counter() - t0) * 1000)

            t0 = time.perf_counter()
            threads = [threading.Thread(target=session, args=(i,)) for i in range(sessions)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            took = time.perf_counter() - t0
            threads = [threading.Thread(target=direct_session, args=(i,)) for i in range(sessions)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            out[name] = {"sessions": sessions, "requests": sessions * turns, "errors": len(errors),
                         "incomplete": incomplete, "throughput_rps": len(latencies) / took,
                         "p95_ms": quantile(latencies, 0.95), "sdk_p95_ms": quantile(direct_lat, 0.95),
                         "added_p95_ms": quantile(latencies, 0.95) - quantile(direct_lat, 0.95), "tiers": tiers}
        finally:
            ch.close()
    table(f"4. Concurrency: {sessions} conversations from threads through one router (20 ms first token)",
          ["run", "requests", "errors", "incomplete", "throughput", "p95", "SDK alone p95", "added p95", "tiers"],
          [[k, v["requests"], v["errors"], v["incomplete"], fmt(v["throughput_rps"], " req/s", 1),
            fmt(v["p95_ms"], " ms", 1), fmt(v["sdk_p95_ms"], " ms", 1), fmt(v["added_p95_ms"], " ms", 1),
            ", ".join(f"{t} {c}" for t, c in sorted(v["tiers"].items()))]
           for k, v in out.items()])
    return out
