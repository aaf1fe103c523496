"""Active probes (no tokens spent) combined with passive health and breaker state."""

from __future__ import annotations

import math
import subprocess
import sys
import threading

from core.config import Config, Policy
from core.health import ProviderStatus, Verdict, judge, overall
from core.messages import ChatRequest
from core.metrics import OPERATOR_RESET, AttemptEvent, Metrics, ProbeEvent, TransitionEvent
from core.router import Router
from core.simulator import Fault
from tests.clock import ManualClock, NoJitter, finishes, inside, wait_until
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
    def row(name="p", health="ok", breaker="closed"):
        return ProviderStatus(name, "openai", "m", "http://x", "k", health, breaker)

    ok, failing = {"status": "ok"}, {"status": "failing"}
    assert overall([row(), row()], ok) == Verdict("ok", "All systems answering", (), (row(), row()))
    assert overall([row(), row()], failing).status == "degraded"  # questions can't be kept
    claude_down = overall([row("Claude", "down", "open"), row("GPT"), row("Gemini")], ok)
    assert claude_down.headline == "Degraded: Claude down, GPT and Gemini answering"
    assert overall([row("Claude", "degraded"), row("GPT")], ok).headline == "Degraded: Claude struggling, GPT answering"
    assert overall([row(breaker="open"), row(health="no key")], ok).headline == "Down: no provider is answering"
    assert overall([row(health="down"), row(health="down")], ok).status == "down"  # every probe fails
    assert overall([], ok).status == "down" and overall([], ok).http_status == 503
    shared = overall([row("GPT")], ok, ["shared state unavailable"])
    assert shared.headline == "Degraded: GPT answering, shared state unavailable"


def test_recent_results_outweigh_old_ones_and_a_reset_forgets_them():
    now = [1000.0]
    m = Metrics(wall=lambda: now[0])

    def result(ok, at, probe=False):
        now[0] = at
        m.record(ProbeEvent(at, "p", ok, 5.0, None if ok else "overloaded") if probe else
                 AttemptEvent(at, "p", "m", "ok" if ok else "error", None if ok else "overloaded", 10.0, 5.0))

    assert m.recent("p", 900) is None
    for i in range(20):
        result(False, 1000 + i)
    assert m.recent("p", 900).success == 0 and m.recent("p", 900).failing == 20
    result(True, 1020, probe=True)  # one good probe just after twenty failures: not healthy yet
    assert m.recent("p", 900).success < 0.1 and m.recent("p", 900).last_ok
    result(True, 1320, probe=True)  # five minutes later: the failures have faded
    assert m.recent("p", 900).success > 0.95
    for i in range(10):  # flapping: half its calls fail
        result(i % 2 == 0, 1400 + i)
    assert 0.3 < m.recent("p", 900).success < 0.7
    now[0] = 1409 + 901
    assert m.recent("p", 900) is None  # nothing within the window
    result(False, 3000)
    m.record(TransitionEvent(3001, "p", "closed", "closed", OPERATOR_RESET))
    assert m.recent("p", 900) is None  # an operator's reset forgets what came before it
    m.record(AttemptEvent(3002, "p", "m", "skipped", None, 0.0, None))  # a skip says nothing about health
    assert m.recent("p", 900) is None


def test_after_a_reset_and_a_good_probe_every_provider_is_ok(sims):
    clock = ManualClock()
    router, primary = outage_router(sims, clock)
    try:
        row = router.status(probe=False)[0]
        assert (row.health, row.success_rate) == ("down", 0.0)
        primary.set_default(Fault())  # the outage is over; the operator resets and probes
        router.reset_breakers()
        rows = router.status(probe=True)
        assert [(r.health, r.breaker, r.success_rate) for r in rows] == [("ok", "closed", 1.0)] * 2
        assert judge(router).headline == "All systems answering"
    finally:
        router.close()


def test_an_outage_with_no_traffic_shows_on_probes_and_so_does_its_end(sims):
    clock = ManualClock()
    a, b = sims("openai"), sims("ollama")
    policy = Policy.defaults().with_(health__probe_interval=0.0)
    router = Router(Config(providers=(entry_for(a, name="GPT"), entry_for(b, name="Ollama")), policy=policy),
                    clock=clock, wall=clock, rng=NoJitter())
    health = router.health
    try:
        assert [r.health for r in router.status()] == ["ok", "ok"]
        a.set_default(Fault.http(503))
        b.set_default(Fault.http(503))
        clock.advance(30)
        rows = router.status()  # the next background probe, say; not a single call was made
        assert [r.health for r in rows] == ["degraded", "degraded"] and "probe failed: overloaded" in rows[0].detail
        assert health.outage_round() == []  # a failed probe is on the outage schedule: the next is due in 1 s
        clock.advance(1.0)
        assert sorted(health.outage_round()) == ["GPT", "Ollama"]
        wait_until(lambda: all(r.health == "down" for r in router.status(probe=False)), "both to be down")
        assert judge(router).status == "down" and a.chat_requests() == []
        a.set_default(Fault())  # GPT is back
        clock.advance(health.next_outage_probe("GPT") - clock())
        assert "GPT" in health.outage_round()
        wait_until(lambda: router.status(probe=False)[0].health != "down", "GPT's good probe")
        # One good probe after two bad ones: answering again, not yet trusted as before.
        assert judge(router).headline == "Degraded: GPT struggling, Ollama down"
    finally:
        router.close()


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


def outage_router(sims, clock, timeouts=None, **health):
    """openai (primary, its entry's `timeouts` as given) → ollama, the primary's breaker open after
    three 500s; background probes off, so every probe is an outage probe."""
    a, b = sims("openai"), sims("ollama")
    a.set_default(Fault.http(500))
    policy = Policy.defaults().with_(health__probe_interval=0.0, **{f"health__{k}": v for k, v in health.items()})
    primary = entry_for(a, name="openai-0", **(timeouts or {}))
    router = Router(Config(providers=(primary, entry_for(b, name="ollama-1")), policy=policy),
                    clock=clock, rng=NoJitter())
    for i in range(3):
        router.ask(ChatRequest.ask(f"q{i}"))
    assert router.breakers["openai-0"].state == "open"
    return router, a


def probes_of(server) -> int:
    return len([r for r in server.requests if r.method == "GET"])


def test_an_open_breaker_is_probed_every_few_seconds_and_traffic_is_back_soon_after_the_outage(sims):
    clock = ManualClock()
    router, primary = outage_router(sims, clock)
    health = router.health
    try:
        router.start_probing()
        wait_until(lambda: health.next_outage_probe("openai-0") is not None, "the first outage probe to be planned")
        waits, start = [], clock()
        while clock() - start < 60:  # a 60 s outage: each probe fails, and the next one waits longer
            due, seen = health.next_outage_probe("openai-0"), probes_of(primary)
            waits.append(due - clock())
            clock.advance(due - clock())
            wait_until(lambda: probes_of(primary) == seen + 1 and health.next_outage_probe("openai-0") != due,
                       "the due probe to run")
        assert waits[:4] == [1.0, 2.0, 4.0, 4.0] and set(waits[2:]) == {4.0}  # [health] defaults: 1 s doubling, ≤ 4 s
        assert len(primary.chat_requests()) == 3  # probes are list-models calls: no real call reached it

        primary.set_default(Fault())  # the outage ends
        healed = clock()
        due = health.next_outage_probe("openai-0")
        clock.advance(due - clock())
        wait_until(lambda: router.breakers["openai-0"].retry_in() == 0, "the good probe to let a trial through")
        back = router.ask(ChatRequest.ask("back?"))
        assert back.provider == "openai-0" and clock() - healed <= 5  # target: within 5 s of the outage's end
        assert router.breakers["openai-0"].state == "closed"
        assert len(primary.chat_requests()) == 4  # the one trial call, then the answer came from it
    finally:
        router.close()


def test_at_most_one_outage_probe_is_in_flight_per_provider(sims):
    clock = ManualClock()
    router, primary = outage_router(sims, clock)
    health = router.health
    try:
        primary.set_default(Fault("silence"))  # its probes hang now
        assert health.outage_round() == []  # planned, not due yet
        clock.advance(1.0)
        assert health.outage_round() == ["openai-0"]
        primary.wait_for(1, method="GET")  # it arrived, and hangs
        for _ in range(5):  # however long it hangs, and however often the prober looks
            clock.advance(10.0)
            assert health.outage_round() == []
        assert probes_of(primary) == 1
    finally:
        router.close()


def test_a_good_probe_never_cuts_short_a_wait_the_provider_asked_for():
    from core.breaker import Breaker

    clock = ManualClock()
    asked = Breaker("p", clock=clock, wall=clock, fail_max=1)
    asked.failure("429", retry_after=60)  # "come back in 60 s"
    asked.probe_succeeded()
    assert asked.state == "open" and asked.retry_in() == 60
    clock.advance(60)
    assert asked.allow() is not None
    sick = Breaker("q", clock=clock, wall=clock, fail_max=1)
    sick.failure("500")  # no wait asked: the cooldown is ours, and a good probe ends it
    sick.probe_succeeded()
    assert sick.retry_in() == 0 and sick.allow() is not None


def test_a_reset_forgets_a_closed_breakers_bad_results_too(sims):
    server = sims("gemini")
    server.set_default(Fault.http(503))
    router = router_for(server)
    try:
        assert router.status()[0].health == "down"  # its probe failed; its breaker never opened
        server.set_default(Fault())
        router.reset_breakers()  # the operator says: start afresh
        assert router.status(probe=False)[0].health == "unknown"
        assert router.status()[0].health == "ok"
    finally:
        router.close()


def test_every_caller_shares_the_one_probe_in_flight_and_gets_its_result(sims):
    # The primary's list-models call hangs (until `resume()`). The outage prober's probe is in
    # flight; "Probe now" twice, the Status page and the background prober ask meanwhile: none may
    # open another connection to a provider that may be hanging, and all get that probe's result.
    clock = ManualClock()
    patient = {"connect_timeout": 60.0, "first_token_timeout": 60.0, "idle_timeout": 60.0}
    router, primary = outage_router(sims, clock, timeouts=patient, probe_timeout=60.0)
    health = router.health
    try:
        primary.set_default(Fault("latency", seconds=math.inf))
        assert health.outage_round() == []  # planned, due in 1 s
        clock.advance(1.0)
        assert health.outage_round() == ["openai-0"]
        primary.wait_for(1, method="GET")
        results: dict[str, object] = {}
        callers = [threading.Thread(target=lambda n=n, f=f: results.__setitem__(n, f()), daemon=True) for n, f in (
            ("probe now", lambda: router.probe(["openai-0"])[0]),
            ("probe now again", lambda: router.probe(["openai-0"])[0]),
            ("status page", lambda: router.status(probe=True) and health._last_probe["openai-0"]),
            ("background prober", lambda: health.probe(["openai-0"], leased=True)[0]))]
        for t in callers:
            t.start()
        wait_until(lambda: probes_of(primary) > 1 or all(inside(t, threading.Event.wait) for t in callers),
                   "every caller to wait, or to probe for itself")
        primary.resume()  # the list of models arrives
        for t in callers:
            t.join(timeout=30)
        assert probes_of(primary) == 1
        first = results["probe now"]
        assert first.ok and all(event is first for event in results.values())
        wait_until(lambda: router.breakers["openai-0"].retry_in() == 0, "the outage probe's good result")
    finally:
        router.close()


def test_probe_now_waits_for_the_probe_timeout_not_the_entrys_read_timeout(sims):
    # A slow model's entry may wait minutes for its first token; "Probe now" on a silent provider
    # must still give the operator an answer within [health] probe_timeout.
    server = sims("anthropic")
    server.set_default(Fault("silence"))
    slow = entry_for(server, connect_timeout=60.0, first_token_timeout=300.0, idle_timeout=300.0)
    policy = Policy.defaults().with_(health__probe_interval=0.0, health__probe_timeout=0.2,
                                     timeouts__request=300.0)
    router = Router(Config(providers=(slow,), policy=policy))
    try:
        (event,) = finishes(router.probe, "the probe")
        assert (event.ok, event.error_kind) == (False, "timeout") and probes_of(server) == 1
    finally:
        router.close()


class _Trickle:
    """A provider whose list of models trickles in a byte at a time, each byte well within a read
    timeout, for as long as the connection stays open (one connection at a time; counted)."""

    def __init__(self, every: float) -> None:
        import socket

        self.every, self.connections, self.closed = every, 0, threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n")
                try:
                    while not self._stop.wait(self.every):
                        conn.sendall(b" ")
                except OSError:  # the client shut its socket: the probe gave up
                    self.closed.set()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


def test_a_list_of_models_that_trickles_in_for_ever_ends_the_probe_and_frees_the_next():
    # Each byte comes well within the probe's per-read timeout, so only a bound on the whole probe
    # ends it. Its callers get a timeout, its socket is shut, and the next probe is a new one.
    from core.config import ProviderEntry, Secret

    trickle = _Trickle(every=0.02)
    entry = ProviderEntry(name="openai-0", kind="openai", model="m", base_url=trickle.url, api_key=Secret(KEY),
                          idle_timeout=60.0, connect_timeout=60.0, first_token_timeout=60.0)
    router = Router(Config(providers=(entry,), policy=Policy.defaults().with_(
        health__probe_interval=0.0, health__probe_timeout=0.2)))
    try:
        (event,) = router.probe(["openai-0"])
        assert not event.ok and event.error_kind == "timeout"
        wait_until(trickle.closed.is_set, "the probe's socket to be shut")
        wait_until(lambda: not router.health._flights, "the probe in flight to end")
        (again,) = router.probe(["openai-0"])  # not stuck behind the first: a probe of its own
        assert not again.ok and trickle.connections == 2
    finally:
        router.close()
        trickle.close()
