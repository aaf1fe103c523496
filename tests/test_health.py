"""Active probes (no tokens spent) combined with passive health and breaker state."""

from __future__ import annotations

import subprocess
import sys
import threading

from core.config import Config, Policy
from core.health import ProviderStatus, verdict
from core.messages import ChatRequest
from core.router import Router
from core.simulator import Fault
from tests.clock import ManualClock, NoJitter
from tests.conftest import KEY, ROOT, entry_for


def router_for(*servers, **kw):
    return Router(Config(providers=tuple(entry_for(s, name=f"{s.kind}-{i}") for i, s in enumerate(servers)),
                         policy=Policy.defaults()), **kw)


def test_probes_use_no_chat_calls_and_report_each_provider(sims):
    up, down = sims("anthropic"), sims("gemini")
    down.set_default(Fault.http(503))
    router = router_for(up, down)
    try:
        rows = router.status()
        assert [(r.name, r.health, r.breaker) for r in rows] == [("anthropic-0", "ok", "closed"),
                                                                  ("gemini-1", "down", "closed")]
        assert up.chat_requests() == [] and down.chat_requests() == []
        assert rows[0].probe_ms is not None and "overloaded" in rows[1].detail
    finally:
        router.close()


def tripped(sims, **kw):
    """A router whose primary failed three times in a row: its breaker is open."""
    a, b = sims("openai"), sims("ollama")
    a.set_default(Fault.http(500))
    router = router_for(a, b, **kw)
    for i in range(3):
        router.ask(ChatRequest.ask(f"q{i}"))
    return router, a


def test_passive_health_and_breaker_show_in_status(sims):
    router, _ = tripped(sims, clock=ManualClock(), rng=NoJitter())  # the clock stands still: cooldowns are exact
    try:
        row = router.status(probe=False)[0]
        assert row.breaker == "open" and row.health == "down" and row.retry_in_s == 15
        assert row.success_rate == 0.0
    finally:
        router.close()


def test_a_good_probe_lets_an_open_breaker_try_again_at_once(sims):
    router, a = tripped(sims)
    try:
        assert router.breakers["openai-0"].state == "open"
        a.set_default(Fault())
        router.probe(["openai-0"])
        assert router.ask(ChatRequest.ask("back?")).provider == "openai-0"
        assert router.breakers["openai-0"].state == "closed"
    finally:
        router.close()


def test_missing_key_is_reported_not_probed(sims):
    server = sims("openai")
    router = router_for(server)
    router.close()
    router = Router(Config(providers=(entry_for(server, api_key=None),), policy=Policy.defaults()))
    try:
        (row,) = router.status()
        assert row.health == "no key" and row.key == "missing" and "OPENAI_API_KEY" in row.detail
        assert server.requests == []
    finally:
        router.close()


def test_background_probing_runs_on_its_interval(sims):
    server = sims("gemini")
    router = Router(Config(providers=(entry_for(server),), policy=Policy.defaults().with_(health__probe_interval=0.05)))
    try:
        router.start_probing()
        assert len(server.wait_for(3, method="GET", timeout=10)) >= 3
    finally:
        router.close()


SILENT_PROBE = """
import sys, threading
from core.config import Config, ProviderEntry, Secret
from core.providers.base import Provider
from core.router import Router
from tests.clock import inside, wait_until

entry = ProviderEntry(name="a", kind="anthropic", model="m", base_url=sys.argv[1], api_key=Secret(sys.argv[2]),
                      idle_timeout=300, first_token_timeout=300)
router = Router(Config(providers=(entry,)))
router.start_probing()
wait_until(lambda: any(inside(t, Provider.probe) for t in threading.enumerate()), "the probe to be in flight")
router.close()
"""


def test_a_probe_of_a_silent_provider_does_not_keep_a_finished_process_alive(sims):
    # A long-lived process (`python -m core ask --jsonl`) probes in the background; once it is
    # done it must exit, not wait for a probe of a silent provider to time out (here 300 s).
    server = sims("anthropic")
    server.set_default(Fault("silence", seconds=600))
    proc = subprocess.run([sys.executable, "-c", SILENT_PROBE, server.url, KEY], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)  # only turns the hang into a failure
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_one_verdict_for_the_whole_chain():
    def row(health="ok", breaker="closed"):
        return ProviderStatus("p", "openai", "m", "http://x", "k", health, breaker)

    ok, failing = {"status": "ok"}, {"status": "failing"}
    assert verdict([row(), row()], ok) == "ok"
    assert verdict([row(), row()], failing) == "degraded"  # questions can't be kept
    assert verdict([row(), row(breaker="open")], ok) == "degraded"
    assert verdict([row(health="degraded"), row()], ok) == "degraded"
    assert verdict([row(breaker="open"), row(health="no key")], ok) == "down"
    assert verdict([], ok) == "down"


def test_probing_starts_once_however_many_threads_ask_at_the_same_time(sims):
    server = sims("gemini")
    policy = Policy.defaults().with_(health__probe_interval=3600.0)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, so a check-then-set race shows
    try:
        for _ in range(20):
            router = Router(Config(providers=(entry_for(server),), policy=policy))
            before = set(threading.enumerate())
            ready = threading.Barrier(8)

            def start() -> None:
                ready.wait()
                router.start_probing()

            starters = [threading.Thread(target=start) for _ in range(8)]
            for t in starters:
                t.start()
            for t in starters:
                t.join()
            probers = [t for t in threading.enumerate() if t.name == "understudy-prober" and t not in before]
            router.close()
            for t in probers:
                t.join(timeout=10)
            assert len(probers) == 1
    finally:
        sys.setswitchinterval(interval)
