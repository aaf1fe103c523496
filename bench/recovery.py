"""Back on the primary after an outage: the primary's server is down (connection refused) while
users keep chatting, then comes back on its port. How long until requests are served by the primary
again, with outage probes and without; and how many real calls reached the primary during the
outage (its breaker's trials), against how many cooldowns it lasted. The providers run in child
processes, as real ones would be."""

from __future__ import annotations

import socket
import threading
import time

from core.config import Config, Policy, ProviderEntry, Secret
from core.messages import ChatRequest
from core.router import Router

from .fleet import Upstream
from .harness import KEY, fmt, table

USERS = 5  # sessions chatting through the outage, each asking every PACE seconds
PACE = 0.2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one(outage: float, probes: bool, after: float) -> dict:
    port = _free_port()
    fallback = Upstream(["ollama"], responder="echo")
    policy = Policy.defaults().with_(cache__enabled=False, hedging__enabled=False, health__probe_interval=0.0,
                                     health__outage_probe_interval=1.0 if probes else 0.0)
    entries = (ProviderEntry(name="openai-0", kind="openai", model="gpt-sim", base_url=f"http://127.0.0.1:{port}",
                             api_key=Secret(KEY), **policy.timeouts.for_entry()),
               ProviderEntry(name="ollama-1", kind="ollama", model="llama-sim", base_url=fallback.urls["ollama"],
                             api_key=Secret(KEY), **policy.timeouts.for_entry()))
    router = Router(Config(providers=entries, policy=policy))
    router.start_probing()
    served: list[tuple[float, float, str, int, bool]] = []  # (asked, answered, who, calls to the primary, skipped it)
    lock, stop = threading.Lock(), threading.Event()

    def user(n: int) -> None:
        i = 0
        while not stop.is_set():
            asked = time.monotonic()
            result = router.ask(ChatRequest.ask(f"user {n} question {i}"))
            calls = sum(1 for a in result.attempts if a.provider == "openai-0" and a.outcome.value != "skipped")
            skipped = any(a.provider == "openai-0" and a.outcome.value == "skipped" for a in result.attempts)
            with lock:
                served.append((asked, time.monotonic(), result.provider or "", calls, skipped))
            i += 1
            stop.wait(PACE)

    users = [threading.Thread(target=user, args=(n,), daemon=True) for n in range(USERS)]
    for u in users:
        u.start()
    stop.wait(outage)
    ended = time.monotonic()
    primary = Upstream(["openai"], responder="echo", port=port)  # the outage ends
    deadline = ended + after
    back = None
    while time.monotonic() < deadline and back is None:
        with lock:
            back = next((t for _, t, who, _, _ in served if t > ended and who == "openai-0"), None)
        stop.wait(0.05)
    stop.set()
    for u in users:
        u.join(30)
    with lock:
        # From when its breaker first kept it out (before that, the failures that opened it).
        opened = next((t for _, t, _, _, skipped in served if skipped), ended)
        during = sum(c for a, t, _, c, _ in served if opened < a and t <= ended)  # asked once it was open
        asked = len(served)
    router.close()
    primary.close()
    fallback.close()
    cooldowns = max(1, int((ended - opened) // policy.breaker.reset_timeout) + 1)
    return {"back_s": None if back is None else back - ended, "primary_calls_during": during,
            "cooldowns": cooldowns, "requests": asked}


def bench_recovery(quick: bool) -> dict:
    # 4.5 cooldowns: the outage ends mid-cooldown, as one would, not just as a trial is due.
    outage = 3.0 if quick else 67.5
    after = 20.0 if quick else 30.0
    rows, out = [], {}
    for probes in (True,) if quick else (True, False):  # off waits out a whole cooldown: the full run only
        r = _one(outage, probes, after)
        out["probes" if probes else "no_probes"] = r
        rows.append(["outage probes on (1 s, doubling to 4 s)" if probes else "outage probes off (cooldown only)",
                     f"{outage:g} s", r["requests"], fmt(r["back_s"], " s"),
                     f"{r['primary_calls_during']} in {r['cooldowns']} cooldowns"])
    table(f"9. Back on the primary after a {outage:g} s outage ({USERS} users chatting; target: primary again "
          "≤ 5 s after it ends, at most one real call per cooldown during it)",
          ["run", "outage", "requests", "primary again after", "real calls to it during the outage"], rows)
    return out
