"""2. Rescue time: how long each catalogue fault costs a user, with default settings."""

from __future__ import annotations

import statistics
import time

from core.faults import Fault
from core.messages import ChatRequest

from .harness import chain, fmt, sixty, table

RESCUES = {
    "healthy baseline": None,
    "silent primary": Fault("silence", seconds=120),
    "slow first token (20 s)": Fault("slow_first", seconds=20),
    "cut stream (after 40 chunks)": Fault("cut", after=40),
    "stalled stream (30 s, after 20)": Fault("stall", after=20, seconds=30),
    "persistent 503": Fault.http(503),
}


def bench_rescue(reps: int) -> dict:
    out = {}
    for name, fault in RESCUES.items():
        ttft, total, served = [], [], set()
        for _ in range(reps if "stalled" not in name else max(1, reps // 2)):
            ch = chain(["anthropic", "openai"], responder=sixty, cache__enabled=False)
            try:
                if fault is not None:
                    ch.servers[0].set_default(fault)
                result = ch.router.ask(ChatRequest.ask("rescue me"))
                assert result.complete, name
                ttft.append(result.ttft_ms / 1000)
                total.append(result.elapsed_ms / 1000)
                served.add(result.provider)
            finally:
                ch.close()
        out[name] = {"reps": len(ttft), "ttft_s": statistics.median(ttft), "complete_s": statistics.median(total),
                     "served_by": sorted(served)}
    # Breaker already open: the dead primary's cost, against the fallback on its own.
    alone, opened = [], []
    ch1 = chain(["openai"], responder=sixty, cache__enabled=False)
    ch2 = chain(["anthropic", "openai"], responder=sixty, cache__enabled=False)
    try:
        ch2.servers[0].set_default(Fault.http(503))
        ch2.router.breakers["anthropic-0"].hold_off(3600, "bench: opened")
        for i in range(max(20, reps * 10)):
            for ch, into in ((ch1, alone), (ch2, opened)) if i % 2 == 0 else ((ch2, opened), (ch1, alone)):
                t0 = time.perf_counter()
                result = ch.router.ask(ChatRequest.ask("open"))
                into.append((time.perf_counter() - t0) * 1000)
                assert result.provider == "openai-1" or result.provider == "openai-0"
        added = statistics.median(opened) - statistics.median(alone)
    finally:
        ch1.close()
        ch2.close()
    out["breaker already open"] = {"reps": len(opened), "added_ms": added,
                                   "fallback_alone_ms": statistics.median(alone),
                                   "with_open_primary_ms": statistics.median(opened)}
    rows = [[k, v["reps"], fmt(v["ttft_s"], " s"), fmt(v["complete_s"], " s"), ", ".join(v["served_by"])]
            for k, v in out.items() if "ttft_s" in v]
    table("2. Rescue time, default settings, chain anthropic → openai (target: silent and slow first token ≤ 3 s)",
          ["primary fault", "reps", "first token", "complete answer", "served by"], rows)
    b = out["breaker already open"]
    print(f"breaker already open: {b['with_open_primary_ms']:.2f} ms vs the fallback alone "
          f"{b['fallback_alone_ms']:.2f} ms → the dead primary adds {b['added_ms']:.2f} ms (target ≤ 5 ms)")
    return out
