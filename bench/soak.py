"""7. Soak: many requests from many sessions under random chaos on every provider."""

from __future__ import annotations

import random
import threading
import time

from core.faults import Fault
from core.messages import ChatRequest
from core.metrics import AttemptKey
from core.tiers import Tier

from .harness import KINDS, chain, echo, fmt, table

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
