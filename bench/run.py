"""Understudy's benchmarks, measured side by side in one run against loopback simulated providers.

    python3 -m bench            # the full run (a few minutes on 2 cores)
    python3 -m bench --quick    # tiny N: a smoke run (the test suite runs this)

Prints a table per benchmark and writes every figure as JSON (bench/results/latest.json, or --json).
Targets are printed beside the figures; they are never asserted here or in tests.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import anthropic
import ollama
import openai
from google import genai
from google.genai import types

from core.chat import ChatRequest
from core.config import Config, Policy, ProviderEntry, Secret
from core.metrics import AttemptKey
from core.router import Router
from core.tiers import Tier
from core.simulator import Fault, SimServer

KEY = "bench-key-0000000000000000"
KINDS = ("anthropic", "openai", "gemini", "ollama")
SIXTY = " ".join(f"t{i}" for i in range(60))  # a 60-chunk answer


def sixty(question: str, model: str) -> str:
    return SIXTY


def echo(question: str, model: str) -> str:
    """Deterministic and checkable: a complete answer is exactly this text."""
    return f"{model} answers {question!r}: " + " ".join(f"w{i}" for i in range(30))


# -- plumbing ------------------------------------------------------------------------------------------



@dataclass
class Chain:
    servers: list[SimServer]
    router: Router

    def close(self) -> None:
        self.router.close()
        for s in self.servers:
            s.close()


def chain(kinds, *, responder=echo, server_kw=None, **overrides) -> Chain:
    servers = [SimServer(k, responder=responder, api_key=KEY, **(server_kw or {})).start() for k in kinds]
    policy = Policy.defaults().with_(**overrides)
    entries = tuple(ProviderEntry(name=f"{s.kind}-{i}", kind=s.kind, model=f"{s.kind}-model", base_url=s.url,
                                  api_key=Secret(KEY), **policy.timeouts.for_entry()) for i, s in enumerate(servers))
    return Chain(servers, Router(Config(providers=entries, policy=policy)))


def pct(values, q: float) -> float | None:
    data = sorted(values)
    if not data:
        return None
    pos = (len(data) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def fmt(v, unit="", digits=2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}{unit}"
    return f"{v}{unit}"


def table(title: str, header: list[str], rows: list[list]) -> None:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    print(f"\n## {title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    sys.stdout.flush()


# -- 1. router overhead --------------------------------------------------------------------------------

def direct_caller(kind: str, url: str):
    """The same streamed request straight through the official SDK, as a user of it would write it."""
    msgs = [{"role": "user", "content": "hi"}]
    if kind == "anthropic":
        c = anthropic.Anthropic(api_key=KEY, base_url=url, max_retries=0)
        return lambda: [e for e in c.messages.create(model="m", max_tokens=512, messages=msgs, stream=True)]
    if kind == "openai":
        c = openai.OpenAI(api_key=KEY, base_url=url, max_retries=0)
        return lambda: [e for e in c.chat.completions.create(model="m", messages=msgs, stream=True,
                                                              stream_options={"include_usage": True})]
    if kind == "gemini":
        c = genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=url, timeout=10_000))
        return lambda: [e for e in c.models.generate_content_stream(model="m", contents="hi")]
    c = ollama.Client(host=url, headers={"authorization": f"Bearer {KEY}"})
    return lambda: [e for e in c.chat(model="m", messages=msgs, stream=True)]


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
                         "added_median_ms": statistics.median(added), "direct_p95_ms": pct(d, 0.95),
                         "router_p95_ms": pct(r, 0.95), "added_p95_ms": pct(r, 0.95) - pct(d, 0.95)}
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


# -- 2. rescue time --------------------------------------------------------------------------------------

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


# -- 3. hedging cost -----------------------------------------------------------------------------------

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
                "ttft_p50_ms": pct(ttfts, 0.5), "ttft_p99_ms": pct(ttfts, 0.99)}
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


# -- 4. concurrency ------------------------------------------------------------------------------------

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
                         "p95_ms": pct(latencies, 0.95), "sdk_p95_ms": pct(direct_lat, 0.95),
                         "added_p95_ms": pct(latencies, 0.95) - pct(direct_lat, 0.95), "tiers": tiers}
        finally:
            ch.close()
    table(f"4. Concurrency: {sessions} conversations from threads through one router (20 ms first token)",
          ["run", "requests", "errors", "incomplete", "throughput", "p95", "SDK alone p95", "added p95", "tiers"],
          [[k, v["requests"], v["errors"], v["incomplete"], fmt(v["throughput_rps"], " req/s", 1),
            fmt(v["p95_ms"], " ms", 1), fmt(v["sdk_p95_ms"], " ms", 1), fmt(v["added_p95_ms"], " ms", 1),
            ", ".join(f"{t} {c}" for t, c in sorted(v["tiers"].items()))]
           for k, v in out.items()])
    return out


# -- 5. cache ------------------------------------------------------------------------------------------

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
    out = {"n": n, "p50_ms": pct(times, 0.5), "p95_ms": pct(times, 0.95), "p99_ms": pct(times, 0.99)}
    table("5. Cache hit latency (target < 1 ms p50)", ["n", "p50", "p95", "p99"],
          [[n, fmt(out["p50_ms"], " ms", 3), fmt(out["p95_ms"], " ms", 3), fmt(out["p99_ms"], " ms", 3)]])
    return out


# -- 6. memory -----------------------------------------------------------------------------------------

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


# -- 7. soak -------------------------------------------------------------------------------------------

SOAK_FAULTS = [Fault.http(429, retry_after=0.2), Fault.http(429), Fault.http(503), Fault.http(529), Fault.http(500),
               Fault.http(401), Fault.http(flavour="context_length"), Fault.http(flavour="content_filter"),
               Fault("reset"), Fault("silence"), Fault("latency", seconds=0.3), Fault("slow_first", seconds=3),
               Fault("cut", after=5), Fault("stall", after=5, seconds=3), Fault("malformed", after=3),
               Fault("error_event", after=3), Fault("no_end", after=8)]


def fault_name(f: Fault) -> str:
    return f"{f.kind}{f.status or ''}{'-' + f.flavour if f.flavour in ('context_length', 'content_filter') else ''}"


def bench_soak(total: int, sessions: int) -> dict:
    # Short deadlines keep silent and stalled providers from dominating the run's length.
    ch = chain(list(KINDS), responder=echo, timeouts__first_token=1.0, timeouts__idle=1.0, timeouts__request=8.0,
               cache__ttl=0.5, health__probe_interval=1.0)
    ch.router.start_probing()  # as the app does: probes let recovered providers back in early
    names = [p.name for p in ch.router.providers]
    rng = random.Random(7)
    injected: dict[str, int] = {}
    stop = threading.Event()
    threads_before = threading.active_count()

    def chaos_monkey() -> None:
        while not stop.wait(1.0):
            for name in names:
                if rng.random() < 0.5:
                    ch.router.chaos.clear(name)
                    continue
                fault = rng.choice(SOAK_FAULTS)
                injected[fault_name(fault)] = injected.get(fault_name(fault), 0) + 1
                ch.router.chaos.set(name, fault, probability=rng.choice([0.3, 0.6, 1.0]))

    exceptions, truncated_complete, unanswered = [], 0, 0
    tiers: dict[str, int] = {}
    lock = threading.Lock()
    counter = iter(range(total))

    def session() -> None:
        nonlocal truncated_complete, unanswered
        for i in counter:
            # Mostly new questions, so providers do the work; every tenth repeats an earlier one, so
            # the cache and stale-cache tiers take part too.
            question = f"soak question {i % 97 if i % 10 == 0 else i}"
            try:
                result = ch.router.ask(ChatRequest.ask(question))
            except Exception as e:  # noqa: BLE001 — counted: must be zero
                with lock:
                    exceptions.append(repr(e))
                continue
            with lock:
                tiers[result.tier] = tiers.get(result.tier, 0) + 1
                if not isinstance(result.tier, Tier) or not result.text.strip():
                    unanswered += 1
                if result.complete and result.tier in ("provider", "cache", "stale_cache") and \
                        result.text != echo(question, result.model):
                    truncated_complete += 1

    monkey = threading.Thread(target=chaos_monkey, daemon=True)
    t0 = time.perf_counter()
    monkey.start()
    workers = [threading.Thread(target=session) for _ in range(sessions)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    monkey.join()
    took = time.perf_counter() - t0
    # Healthy at the end: faults off, the chain answers, no attempt thread is left behind.
    ch.router.chaos.reset()
    ch.router.reset_breakers()
    after = ch.router.ask(ChatRequest.ask("are you well?"))
    for t in [t for t in threading.enumerate() if t.name.startswith("attempt-")]:
        t.join(timeout=10)
    leftover = sum(1 for t in threading.enumerate() if t.name.startswith("attempt-"))
    errors_seen = {}
    for key, value in ch.router.metrics.totals().items():
        if isinstance(key, AttemptKey) and key.error_kind:
            errors_seen[key.error_kind] = errors_seen.get(key.error_kind, 0) + value
    ch.close()
    out = {"requests": total, "sessions": sessions, "seconds": took, "exceptions": len(exceptions),
           "truncated_marked_complete": truncated_complete, "unanswered": unanswered, "tiers": tiers,
           "faults_injected": injected, "error_kinds_seen": errors_seen,
           "healthy_after": after.complete and after.tier == "provider", "attempt_threads_left": leftover,
           "threads_before": threads_before, "threads_after": threading.active_count()}
    table(f"7. Soak: {total} requests from {sessions} sessions under random chaos on all four providers",
          ["requests", "seconds", "exceptions", "truncated marked complete", "unanswered", "healthy after",
           "attempt threads left"],
          [[total, fmt(took, " s", 1), len(exceptions), truncated_complete, unanswered, out["healthy_after"], leftover]])
    print("tiers:        " + ", ".join(f"{k} {v}" for k, v in sorted(tiers.items())))
    print("faults set:   " + ", ".join(f"{k} {v}" for k, v in sorted(injected.items())))
    print("errors seen:  " + ", ".join(f"{k} {v}" for k, v in sorted(errors_seen.items())))
    return out


# -- the command ---------------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny N: checks that every benchmark runs")
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "latest.json"),
                        help="where to write the figures")
    parser.add_argument("--only", nargs="*", help="run only these: overhead rescue hedging concurrency cache "
                                                   "memory soak")
    args = parser.parse_args(argv)
    q = args.quick
    # Questions the soak leaves unanswered are kept: in a throwaway store, never the app's data.
    scratch = tempfile.TemporaryDirectory(prefix="understudy-bench-")
    os.environ["UNDERSTUDY_DATA_DIR"] = scratch.name
    os.environ.pop("UNDERSTUDY_DATABASE_URL", None)
    plan = {
        "overhead": lambda: bench_overhead(10 if q else 300),
        "rescue": lambda: bench_rescue(1 if q else 3),
        "hedging": lambda: bench_hedging(40 if q else 400),
        "concurrency": lambda: bench_concurrency(10 if q else 50, 2 if q else 10),
        "cache": lambda: bench_cache(50 if q else 5000),
        "memory": lambda: bench_memory(50 if q else 1000, 150 if q else 10000),
        "soak": lambda: bench_soak(60 if q else 2000, 6 if q else 20),
    }
    machine = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "python": platform.python_version(),
               "cpus": os.cpu_count(), "machine": platform.machine(), "system": platform.system()}
    print(f"Understudy bench — {machine['date']}, {machine['cpus']} CPUs, Python {machine['python']}, "
          f"{'quick' if q else 'full'} run")
    results = {"machine": machine, "quick": q}
    for name, run in plan.items():
        if args.only and name not in args.only:
            continue
        results[name] = run()
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    print(f"\nfigures written to {path}")
    scratch.cleanup()
    return 0
