"""Fault injection at the HTTP transport, under the real SDKs, against healthy simulated servers."""

from __future__ import annotations

import random
import threading

import pytest

from core.chaos import SCENARIOS, Chaos, Injection, transport_for
from core.config import Config, Policy
from core.errors import ErrorKind, ProviderError
from core.faults import TRANSPORT_FAULTS
from core.messages import ChatRequest
from core.providers import build
from core.router import Router
from core.simulator import Fault
from tests.clock import ManualClock
from tests.conftest import FAULTS, KINDS, drain, entry_for

Q = ChatRequest.ask("Is the primary down?")

# The catalogue's faults that need no model's cooperation: all but the in-band refusals.
INJECTABLE = {name: case for name, case in FAULTS.items() if case[0].kind in TRANSPORT_FAULTS}
INJECTABLE["silence until the client gives up"] = (Fault("silence"), ErrorKind.TIMEOUT)


@pytest.fixture
def chaotic(sims):
    built = []

    def make(kind):
        chaos = Chaos()
        server = sims(kind)
        provider = build(entry_for(server), transport=transport_for(kind, kind, chaos))
        built.append(provider)
        return provider, chaos, server

    yield make
    for p in built:
        p.close()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", list(INJECTABLE))
def test_injected_faults_look_real_to_the_sdk(kind, name, chaotic):
    provider, chaos, server = chaotic(kind)
    fault, expected = INJECTABLE[name]
    chaos.set(kind, fault)
    with pytest.raises(ProviderError) as caught:
        drain(provider, Q)
    assert caught.value.kind is expected
    if fault.retry_after:
        assert caught.value.retry_after == fault.retry_after
    chaos.clear(kind)
    assert drain(provider, Q)[1].finish_reason == "stop"  # off again from the next request


@pytest.mark.parametrize("kind", KINDS)
def test_a_short_stall_or_latency_is_survived(kind, chaotic):
    provider, chaos, server = chaotic(kind)
    chaos.set(kind, Fault("stall", after=3, seconds=0.1))
    assert drain(provider, Q)[1].finish_reason == "stop"
    chaos.set(kind, Fault("latency", seconds=0.1))
    assert drain(provider, Q)[1].finish_reason == "stop"


def test_status_faults_never_reach_the_server_stream_faults_do(chaotic):
    provider, chaos, server = chaotic("openai")
    chaos.set("openai", Fault.http(503))
    with pytest.raises(ProviderError):
        drain(provider, Q)
    assert server.chat_requests() == []
    chaos.set("openai", Fault("cut", after=2))
    with pytest.raises(ProviderError):
        drain(provider, Q)
    assert len(server.chat_requests()) == 1


def test_probability_strikes_about_that_share_of_requests():
    chaos = Chaos(rng=random.Random(7))
    chaos.set("p", Fault.http(500), probability=0.3)
    hits = sum(chaos.strike("p") is not None for _ in range(2000))
    assert 500 < hits < 700


def test_flapping_alternates_on_the_clock():
    now = [0.0]
    chaos = Chaos(clock=lambda: now[0])
    chaos.set("p", Fault.http(503), flap=(5, 10))
    seen = []
    for t in (0, 4.9, 5.1, 14.9, 15.1, 19.9, 20.1):
        now[0] = t
        seen.append(chaos.strike("p") is not None)
    assert seen == [True, True, False, False, True, True, False]


def test_scenarios_play_as_timelines_and_end():
    now = [0.0]
    chaos = Chaos(clock=lambda: now[0])
    chaos.play("rolling_outage", ["a", "b", "c", "d"])
    timeline = {}
    for t in (1, 21, 41, 61, 81):
        now[0] = t
        timeline[t] = [n for n in "abcd" if chaos.strike(n) is not None]
    assert timeline == {1: ["a"], 21: ["b"], 41: ["c"], 61: [], 81: []}
    assert chaos.state() == {"providers": {}, "scenario": None}


def test_state_describes_what_is_on_and_reset_clears_everything():
    now = [0.0]
    chaos = Chaos(clock=lambda: now[0])
    chaos.set("claude", Fault.http(429, retry_after=2))
    chaos.play("slow_primary", ["gpt"])
    now[0] = 3
    state = chaos.state()
    assert state["providers"] == {"claude": "HTTP 429 (rate_limit), Retry-After 2s",
                                  "gpt": "first token after 6s"}
    assert state["scenario"]["name"] == "slow_primary" and state["scenario"]["elapsed"] == 3
    chaos.reset()
    assert chaos.state() == {"providers": {}, "scenario": None}
    assert all(chaos.strike(name) is None for name in ("claude", "gpt"))


def test_every_named_scenario_is_well_formed():
    assert set(SCENARIOS) == {"primary_outage", "rolling_outage", "cascade", "everything_down", "slow_primary",
                              "flapping_primary"}
    for s in SCENARIOS.values():
        assert s.steps and all(0 <= step.at <= s.duration for step in s.steps)


def test_refusing_faults_it_cannot_inject():
    with pytest.raises(ValueError):
        Injection(Fault("refusal"))
    with pytest.raises(ValueError):
        Injection(Fault.http(500), probability=2)


def test_settings_are_safe_to_change_while_requests_read_them():
    chaos, errors, stop = Chaos(), [], threading.Event()

    def reader():
        try:
            while not stop.is_set():
                chaos.strike("p")
                chaos.state()
        except Exception as e:  # noqa: BLE001 — asserted below
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(3000):
        chaos.set("p", Fault.http(500)) if i % 2 else chaos.clear("p")
        if i % 500 == 0:
            chaos.play("cascade", ["p", "q"])
    stop.set()
    for t in threads:
        t.join()
    assert errors == []


def test_the_router_built_from_config_drives_chaos_through_every_layer(sims):
    a, o = sims("anthropic"), sims("ollama")
    # Claude's timeouts are long, so a cancelled attempt that waited them out would be seen below.
    entries = (entry_for(a, name="claude", first_token_timeout=30, idle_timeout=30), entry_for(o, name="local"))
    router = Router(Config(providers=entries, policy=Policy.defaults()))
    try:
        router.chaos.set("claude", Fault.http(529))
        result = router.ask(Q)
        assert result.provider == "local" and result.attempts[0].error_kind == "overloaded"
        assert a.chat_requests() == []  # the fault happened under the SDK, not at the server
        router.chaos.reset()
        router.reset_breakers()
        assert router.ask(ChatRequest.ask("and now?")).provider == "claude"
        router.chaos.set("claude", Fault("silence"))
        silent = router.ask(ChatRequest.ask("silent?"))
        assert silent.provider == "local" and silent.attempts[0].outcome == "cancelled"  # the hedge won
        # The cancelled silent attempt wakes at once: no thread waits out its 30 s read timeout.
        for t in [t for t in threading.enumerate() if t.name == "attempt-claude"]:
            t.join(timeout=15)
            assert not t.is_alive()
    finally:
        router.close()


def test_state_is_read_at_one_moment_even_as_the_clock_moves():
    # A clock that moves on at every reading: what state() reports must still agree with itself.
    ticks = iter([0.0, 59.5, 60.5, 61.5])
    chaos = Chaos(clock=lambda: next(ticks))
    chaos.play("slow_primary", ["gpt"])  # at 0; the scenario lasts 60 s
    state = chaos.state()
    assert state["providers"] == {"gpt": "first token after 6s"}
    assert state["scenario"]["elapsed"] == 59.5 < state["scenario"]["duration"]


# -- what the panel and the banners read: one moment, each fault's source, the scenario's end -------
def test_now_says_where_each_fault_comes_from_and_what_the_scenario_does_next():
    clock = ManualClock(0.0)
    chaos = Chaos(clock=clock)
    chaos.play("cascade", ["claude", "gpt", "gemini", "local"])
    chaos.set("local", Fault.http(429))
    clock.advance(25)
    now = chaos.now()
    assert {n: (a.source, a.describe()) for n, a in now.providers.items()} == {
        "claude": ("scenario", "HTTP 503 (unavailable)"), "gpt": ("scenario", "HTTP 529 (overloaded)"),
        "gemini": ("scenario", "connection reset"), "local": ("manual", "HTTP 429 (rate_limit)")}
    assert now.scenario.elapsed == 25 and now.scenario.duration == 75
    assert [(u.at, u.target, u.what) for u in now.scenario.upcoming] == [
        (60, "claude", None), (60, "gpt", None), (60, "gemini", None)]


def test_a_scenarios_end_clears_everything_it_set_at_the_next_reading():
    clock = ManualClock(0.0)
    chaos = Chaos(clock=clock)
    chaos.play("everything_down", ["a", "b"])
    clock.advance(4)
    assert chaos.state() == {"providers": {"a": "HTTP 503 (unavailable)", "b": "HTTP 503 (unavailable)"},
                             "scenario": {"name": "everything_down", "title": "Everything down", "elapsed": 4.0,
                                          "duration": 40.0}}
    clock.advance(26)  # 30 s: healthy again, the scenario still runs to its end
    assert chaos.now().providers == {} and chaos.now().scenario.elapsed == 30
    clock.advance(10)  # 40 s: over, though nobody pressed anything
    assert chaos.state() == {"providers": {}, "scenario": None} and not chaos.now().on
    clock.advance(44)
    assert chaos.state() == {"providers": {}, "scenario": None}


def test_the_signature_changes_with_what_is_injected_not_with_the_clock():
    clock = ManualClock(0.0)
    chaos = Chaos(clock=clock)
    chaos.play("rolling_outage", ["a", "b", "c"])
    first = chaos.now().signature
    clock.advance(19)
    assert chaos.now().signature == first  # still "a down": the page needs no redraw
    clock.advance(2)
    assert chaos.now().signature != first  # b's turn
    chaos.set("c", Fault.http(500), flap=(1, 1))
    flapping = chaos.now().signature
    clock.advance(1.5)  # c in its healthy half: the card's words stay, its phase is live
    assert chaos.now().signature == flapping and chaos.now().providers["c"].down is False


def test_healing_a_provider_during_a_scenario_spares_it_until_the_scenario_ends():
    clock = ManualClock(0.0)
    chaos = Chaos(clock=clock)
    chaos.play("everything_down", ["a", "b"])
    clock.advance(1)
    chaos.clear("a")
    assert chaos.strike("a") is None and chaos.strike("b") is not None
    assert list(chaos.now().providers) == ["b"]
    copy = Chaos(clock=clock)
    copy.restore(chaos.snapshot())  # a fleet's other replica spares it too
    assert copy.strike("a") is None and copy.strike("b") is not None
    chaos.play("everything_down", ["a", "b"])  # played again: nobody is spared
    assert chaos.strike("a") is not None


def test_stop_ends_the_scenario_and_keeps_the_manual_faults():
    clock = ManualClock(0.0)
    chaos = Chaos(clock=clock)
    chaos.set("a", Fault("reset"))
    chaos.play("everything_down", ["a", "b"])
    chaos.stop()
    assert chaos.state() == {"providers": {"a": "connection reset"}, "scenario": None}
    assert chaos.strike("b") is None


def test_a_snapshot_from_a_replica_that_never_spared_anyone_still_restores():
    chaos = Chaos(clock=ManualClock(0.0))
    chaos.restore({"manual": {}, "playing": {"scenario": "everything_down", "started": 0.0, "names": ["a"]}})
    assert chaos.strike("a") is not None
