"""Stall hedging: an answer that goes silent mid-stream gets a backup long before the idle deadline,
and whichever of the two goes on first keeps the answer. On every protocol, through the real SDKs
against the simulated servers; the stalls last a minute, so only the hedge can end them in time.
"""

from __future__ import annotations

import threading

import pytest

from core.config import Config, Stalls
from core.messages import ChatRequest
from core.metrics import AttemptEvent, Metrics, RequestEvent
from core.policies import StallPolicy
from core.router import Delta, Restart, Router
from core.simulator import Fault
from tests.clock import ManualClock, wait_until
from tests.conftest import KINDS, entry_for, policy
from tests.test_router import attempt_threads_end, stop_while, text_after_last_restart

Q = ChatRequest.ask("Explain the understudy pattern briefly.")
# The primary's hard limit is a minute away: an answer inside the test's time is the stall hedge's.
PATIENT = {"idle_timeout": 60.0, "first_token_timeout": 60.0}


def other(kind: str) -> str:
    return "openai" if kind != "openai" else "anthropic"


@pytest.fixture
def chain(sims):
    """chain(kind, other) -> (router, servers), the router built as the app builds it (its own
    transports, which can shut a socket that has not seen a response yet). The primary is patient
    (its hard limits are a minute away); the fallback's limits are generous."""
    routers = []

    def make(*kinds, timeouts=None, server_kw=None, clock=None, **overrides):
        servers = [sims(kinds[0], **(server_kw or {})), *(sims(k) for k in kinds[1:])]
        relaxed = dict(idle_timeout=5.0, first_token_timeout=5.0, connect_timeout=5.0)
        entries = tuple(entry_for(s, name=f"{s.kind}-{i}", **((timeouts or PATIENT) if i == 0 else relaxed))
                        for i, s in enumerate(servers))
        router = Router(Config(providers=entries, policy=policy(**overrides)), **({"clock": clock} if clock else {}))
        routers.append(router)
        return router, servers

    yield make
    for r in routers:
        r.close()


def request_event(router) -> RequestEvent:
    (event,) = router.metrics.events(RequestEvent)
    return event


@pytest.mark.parametrize("kind", KINDS)
def test_a_stalled_answer_is_taken_over_by_its_backup_with_a_restart(kind, chain):
    router, (first, second) = chain(kind, other(kind))
    first.push(Fault("stall", after=10, seconds=60))
    evs = list(router.stream(Q))
    result = evs[-1].result
    assert result.complete and result.provider == f"{other(kind)}-1"
    # The ten words shown are replaced, once, by the backup's whole answer: nothing lost or doubled.
    (restart,) = [e for e in evs if isinstance(e, Restart)]
    assert (restart.failed, restart.provider, restart.reason) == (f"{kind}-0", f"{other(kind)}-1", "stalled")
    shown_before = "".join(e.text for e in evs[:evs.index(restart)] if isinstance(e, Delta))
    assert len(shown_before.split()) == 10
    assert result.text == text_after_last_restart(evs) and result.text.endswith("w49")
    stalled, backup = result.attempts
    assert (stalled.provider, stalled.outcome.value, stalled.error_kind) == (f"{kind}-0", "error", "stream_broken")
    assert stalled.detail.startswith("stalled mid-answer") and "went on first" in stalled.detail
    assert backup.hedge and backup.outcome.value == "ok" and backup.detail.startswith(f"started when {kind}-0 went silent")
    event = request_event(router)
    assert event.stall_hedges == 1 and event.stall_switched and event.restarted and not event.hedge_won
    attempt_threads_end()  # the stalled leader's socket was shut: its read did not wait out the minute
    # A stall is strong evidence: the next user goes straight to the backup.
    assert router.breakers[f"{kind}-0"].state == "open"
    again = router.ask(ChatRequest.ask("and the next user?"))
    assert again.provider == f"{other(kind)}-1" and again.attempts[0].outcome.value == "skipped"
    assert len(first.chat_requests()) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_a_stalled_leader_that_goes_on_first_keeps_the_answer_and_its_backup_is_cancelled(kind, chain):
    router, (first, second) = chain(kind, other(kind))
    first.push(Fault("stall", after=10, seconds=60))
    second.set_default(Fault("silence", seconds=60))  # the backup never gets as far as its first text
    got: list = []
    reader = threading.Thread(target=lambda: got.extend(router.stream(Q)))
    reader.start()
    wait_until(lambda: len(second.chat_requests()) == 1, "the stall backup")
    first.resume()  # the leader goes on
    reader.join(30)
    result = got[-1].result
    assert result.complete and result.provider == f"{kind}-0" and not any(isinstance(e, Restart) for e in got)
    shown = "".join(e.text for e in got if isinstance(e, Delta))
    assert shown == result.text and result.text.endswith("w49") and result.text.count("w9 ") == 1
    outcomes = {a.provider: (a.outcome.value, a.hedge, a.detail) for a in result.attempts}
    assert outcomes[f"{other(kind)}-1"] == ("cancelled", True, f"{kind}-0 went on first")
    assert outcomes[f"{kind}-0"][0] == "ok" and outcomes[f"{kind}-0"][2].startswith("went on after")
    event = request_event(router)
    assert event.stall_hedges == 1 and not event.stall_switched and not event.restarted
    attempt_threads_end()  # the cancelled backup's socket was closed: it is not left waiting a minute
    # Neither is held against: the leader answered, the backup was only not needed.
    for name in (f"{kind}-0", f"{other(kind)}-1"):
        assert router.breakers[name].state == "closed" and router.breakers[name]._store.read(name).failures == 0


@pytest.mark.parametrize("kind", KINDS)
def test_stop_after_a_stall_switch_keeps_the_backups_text_and_names_it(kind, chain):
    router, (first, second) = chain(kind, other(kind))
    first.push(Fault("stall", after=10, seconds=60))
    second.push(Fault("stall", after=5, seconds=60))  # the backup shows five words, then stalls too

    def five_after_the_switch(deltas) -> bool:
        restarts = [e for e in list(got) if isinstance(e, Restart)]
        return bool(restarts) and len(text_after_last_restart(list(got)).split()) >= 5

    stream = router.stream(Q)
    got: list = []
    reader = threading.Thread(target=lambda: got.extend(stream))
    reader.start()
    wait_until(lambda: five_after_the_switch(got), "five words from the backup")
    assert stream.answering == (f"{other(kind)}-1", f"{other(kind)}-test")
    stream.stop()
    reader.join(30)
    result = got[-1].result
    assert result.stopped and result.provider == f"{other(kind)}-1"
    assert result.text == text_after_last_restart(got) and len(result.text.split()) == 5
    attempt_threads_end()


@pytest.mark.parametrize("kind", KINDS)
def test_a_leader_that_dies_while_its_backup_races_hands_the_answer_to_that_backup(kind, chain):
    # The leader's hard limit is 2 s; its backup, started at the stall threshold, is slow to begin.
    router, (first, second) = chain(kind, other(kind), timeouts={"idle_timeout": 2.0, "first_token_timeout": 2.0})
    first.push(Fault("stall", after=10, seconds=60))
    second.push(Fault("slow_first", seconds=60))
    got: list = []
    reader = threading.Thread(target=lambda: got.extend(router.stream(Q)))
    reader.start()
    wait_until(lambda: any(e.provider == f"{kind}-0" and e.outcome == "error"
                           for e in router.metrics.events(AttemptEvent)), "the leader's hard limit")
    second.resume()  # the backup begins only now, after the leader is gone
    reader.join(30)
    assert not reader.is_alive(), "the request never ended"
    result = got[-1].result
    assert result.complete and result.provider == f"{other(kind)}-1" and result.text.endswith("w49")
    (restart,) = [e for e in got if isinstance(e, Restart)]
    assert (restart.failed, restart.provider) == (f"{kind}-0", f"{other(kind)}-1")
    assert result.text == text_after_last_restart(got)
    assert [(a.provider, a.outcome.value) for a in result.attempts] == [(f"{kind}-0", "error"),
                                                                        (f"{other(kind)}-1", "ok")]
    assert not request_event(router).stall_switched  # the leader ended on its own: no takeover
    attempt_threads_end()


def test_a_slow_caller_is_never_taken_for_a_stalled_provider(chain):
    # The provider sent its whole answer; the caller reads three words and then takes its time.
    clock = ManualClock()
    router, (first, second) = chain("anthropic", "openai", clock=clock)
    stream = router.stream(Q)
    events = iter(stream)
    deltas = 0
    while deltas < 3:
        deltas += isinstance(next(events), Delta)
    clock.advance(60.0)  # a minute since the last chunk, on the router's clock
    run = stream._run
    assert run.poll() is not None  # asked again later, and nothing started now
    assert run.stall_backup is None and second.chat_requests() == []
    rest = list(events)
    result = rest[-1].result
    assert result.complete and result.provider == "anthropic-0" and not any(isinstance(e, Restart) for e in rest)
    assert router.breakers["anthropic-0"]._store.read("anthropic-0").failures == 0


def test_a_backup_that_fails_while_the_leader_is_stalled_is_recorded_and_held_against(chain):
    router, (first, second) = chain("anthropic", "openai", breaker__fail_max=1)
    first.push(Fault("stall", after=10, seconds=60))
    second.push(Fault.http(503))
    got: list = []
    reader = threading.Thread(target=lambda: got.extend(router.stream(Q)))
    reader.start()
    wait_until(lambda: any(e.provider == "openai-1" and e.outcome == "error"
                           for e in router.metrics.events(AttemptEvent)), "the backup's 503, recorded")
    first.resume()
    reader.join(30)
    result = got[-1].result
    assert result.complete and result.provider == "anthropic-0" and not any(isinstance(e, Restart) for e in got)
    assert ("openai-1", "error", "overloaded") in [(a.provider, a.outcome.value, a.error_kind) for a in result.attempts]
    assert router.breakers["openai-1"].state == "open"
    assert router.breakers["anthropic-0"].state == "closed"
    attempt_threads_end()


def test_two_stalls_in_a_row_end_with_the_third_provider(sims):
    a, b, c = sims("anthropic"), sims("openai"), sims("gemini")
    entries = (entry_for(a, name="a", **PATIENT), entry_for(b, name="b", **PATIENT),
               entry_for(c, name="c", idle_timeout=5.0, first_token_timeout=5.0))
    router = Router(Config(providers=entries, policy=policy(hedging__enabled=False)))
    try:
        a.push(Fault("stall", after=10, seconds=60))
        b.push(Fault("stall", after=5, seconds=60))
        evs = list(router.stream(Q))
        result = evs[-1].result
        restarts = [(e.failed, e.provider, e.reason) for e in evs if isinstance(e, Restart)]
        assert restarts == [("a", "b", "stalled"), ("b", "c", "stalled")]
        assert result.provider == "c" and result.complete and result.text == text_after_last_restart(evs)
        assert {n: br.state for n, br in router.breakers.items()} == {"a": "open", "b": "open", "c": "closed"}
        assert request_event(router).stall_hedges == 2
        attempt_threads_end()
    finally:
        router.close()


def test_stop_works_through_the_stall_helpers(chain):
    """stop_while, used above, is the same helper the router's Stop tests use: it really stops."""
    router, (first, second) = chain("anthropic", "openai")
    first.push(Fault("stall", after=3, seconds=60))
    second.set_default(Fault("silence", seconds=60))
    got = stop_while(router, ready=lambda deltas: len(second.chat_requests()) == 1)
    result = got[-1].result
    assert result.stopped and result.provider == "anthropic-0" and len(result.text.split()) == 3
    assert {a.provider: a.outcome.value for a in result.attempts} == {"anthropic-0": "cancelled",
                                                                      "openai-1": "cancelled"}
    attempt_threads_end()


def test_a_slow_but_steady_provider_sets_a_longer_stall_threshold_and_is_never_kept_out(chain):
    # A chunk every 0.15 s: slow, never silent for long. Its backup could never take over (silent),
    # so whatever the machine's load, the slow provider answers and is not held against.
    router, (first, second) = chain("anthropic", "openai", stalls__min_samples=5,
                                    server_kw={"chunk_delay": 0.15,
                                               "responder": lambda q, m: " ".join(["slow"] * 12)})
    second.set_default(Fault("silence", seconds=60))
    for i in range(2):
        result = router.ask(ChatRequest.ask(f"slow question {i}"))
        assert result.provider == "anthropic-0" and result.complete and result.text == " ".join(["slow"] * 12)
    assert router.breakers["anthropic-0"].state == "closed"
    assert router.breakers["anthropic-0"]._store.read("anthropic-0").failures == 0
    assert not any(e.stall_switched for e in router.metrics.events(RequestEvent))
    # What it learned from that traffic sets the threshold, no longer the one-second cold start:
    # four times the normal gap it recorded (never under the floor).
    normal = router.metrics.gap_quantile("anthropic-0", 0.99, 5)
    learned = router.stalls.after("anthropic-0", 60.0, router.metrics.gap_quantile)
    assert normal is not None and learned == max(0.5, 4 * normal)


@pytest.mark.parametrize("kind", KINDS)
def test_a_provider_silent_from_its_first_gap_may_be_slow_and_is_not_held_against(kind, chain):
    # One word, then silence: nothing yet says whether this provider stalled or is just that slow
    # (a chunk every few seconds). The user still gets the backup's answer, but the provider is not
    # kept out, and the next question goes to it as usual.
    router, (first, second) = chain(kind, other(kind))
    first.push(Fault("stall", after=1, seconds=60))
    evs = list(router.stream(Q))
    result = evs[-1].result
    assert result.complete and result.provider == f"{other(kind)}-1"
    stalled = result.attempts[0]
    assert stalled.detail.startswith("stalled mid-answer") and "not held against it" in stalled.detail
    assert request_event(router).stall_switched
    assert router.breakers[f"{kind}-0"].state == "closed"
    assert router.breakers[f"{kind}-0"]._store.read(f"{kind}-0").failures == 0
    attempt_threads_end()
    again = router.ask(ChatRequest.ask("and the next user?"))
    assert again.provider == f"{kind}-0" and again.complete and [a.provider for a in again.attempts] == [f"{kind}-0"]


def test_a_trial_call_that_stalls_again_keeps_the_provider_out(chain):
    # Held out for a stall; its one trial call after the cooldown stalls at its first gap. However
    # little it had shown, the breaker opens again: it is not left half-open, making every next
    # request a trial that waits out a stall.
    router, (first, second) = chain("anthropic", "openai", breaker__reset_timeout=0.5)
    breaker = router.breakers["anthropic-0"]
    first.push(Fault("stall", after=10, seconds=60))
    assert router.ask(ChatRequest.ask("the first stall")).provider == "openai-1"
    assert breaker.state == "open"
    wait_until(lambda: breaker.retry_in() == 0, "the cooldown to end")
    first.push(Fault("stall", after=1, seconds=60))
    trial = router.ask(ChatRequest.ask("the trial"))
    assert trial.provider == "openai-1" and trial.attempts[0].provider == "anthropic-0"
    assert "not held against it" not in trial.attempts[0].detail
    assert breaker.state == "open"  # not left half-open


def test_a_stall_is_convincing_only_once_the_answer_had_a_pace_and_left_it_far_behind():
    policy = StallPolicy(Stalls(multiple=4.0))
    assert not policy.convincing(30.0, [])  # silent from the first gap: maybe just slow
    assert not policy.convincing(30.0, [0.02])  # one gap is no pace yet
    assert policy.convincing(1.0, [0.02, 0.03])  # 1 s against a pace of 0.03 s
    assert not policy.convincing(1.0, [0.02, 0.3])  # within four times its slowest gap so far
    assert policy.convincing(1.2, [0.02, 0.3])


def test_a_stall_threshold_of_zero_is_refused():
    from core.config import ConfigError, parse_config

    for key, value in (("floor", 0), ("floor", -0.0), ("cold_start", 0), ("cold_start", 0.01)):
        with pytest.raises(ConfigError, match=f"stalls.{key}"):
            parse_config({"stalls": {key: value}})
    assert parse_config({"stalls": {"floor": 0.05, "cold_start": 0.05}}).policy.stalls.floor == 0.05


def test_the_stall_threshold_is_a_multiple_of_the_normal_gap_within_its_bounds():
    def metrics_with(gaps):
        m = Metrics(wall=lambda: 0.0)
        m.record_gaps("p", gaps)
        return m

    policy = StallPolicy(Stalls(multiple=4.0, quantile=0.99, floor=0.5, cold_start=1.0, min_samples=50))
    assert policy.after("p", 10.0, metrics_with([0.02] * 49).gap_quantile) == 1.0  # too few: the cold start
    assert policy.after("p", 10.0, metrics_with([0.02] * 50).gap_quantile) == 0.5  # 4 x 0.02 is under the floor
    assert policy.after("p", 10.0, metrics_with([0.02] * 98 + [0.5, 0.5]).gap_quantile) == 2.0  # 4 x its p99
    assert policy.after("p", 1.5, metrics_with([0.02] * 98 + [0.5, 0.5]).gap_quantile) is None  # past the hard limit
    assert StallPolicy(Stalls(hedge=False)).after("p", 10.0, metrics_with([0.02] * 50).gap_quantile) is None


def test_the_normal_gap_follows_recent_traffic():
    m = Metrics(wall=lambda: 0.0)
    m.record_gaps("p", [0.01] * 1000)
    assert m.gap_quantile("p", 0.99, 50) == 0.01
    m.record_gaps("p", [0.015] * 100)  # a tenth new, none far slower: the figure read a moment ago stands
    assert m.gap_quantile("p", 0.99, 50) == 0.01
    m.record_gaps("p", [0.015] * 150)  # a quarter new: sorted afresh, and the slower gaps show
    assert m.gap_quantile("p", 0.99, 50) == 0.015
    m.record_gaps("p", [0.3] * 20)  # far slower than the figure: believed at once, not 250 gaps later
    assert m.gap_quantile("p", 0.99, 50) == 0.3
    assert m.gap_quantile("q", 0.99, 1) is None


def test_stall_hedging_can_be_turned_off(chain):
    router, (first, second) = chain("anthropic", "openai", timeouts={"idle_timeout": 2.0, "first_token_timeout": 2.0},
                                    stalls__hedge=False)
    first.push(Fault("stall", after=10, seconds=60))
    result = router.ask(Q)
    # Only the hard limit ended it; the fallback was asked after that, never raced.
    assert result.provider == "openai-1" and result.complete
    assert result.attempts[0].error_kind == "stream_broken" and "stall" in result.attempts[0].detail
    assert "went on first" not in result.attempts[0].detail
    assert not result.attempts[1].hedge and request_event(router).stall_hedges == 0
