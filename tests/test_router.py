"""The resilient router against simulated providers: failover, retries, breakers, hedging,
mid-stream recovery, degraded tiers. Faults come from the simulated servers' wire."""

from __future__ import annotations

import threading

import pytest

from core.cache import Flight
from core.messages import ChatRequest, Message
from core.metrics import AttemptEvent
from core.router import Delta, Done, Restart
from core.simulator import Fault
from tests.clock import FakeClock, ManualClock, finishes, inside, wait_until
from core.config import Config
from core.router import Router
from tests.conftest import KINDS, entry_for, policy

Q = ChatRequest.ask("Explain the understudy pattern briefly.")


def events(router, request=Q):
    return list(router.stream(request))


def text_after_last_restart(evs) -> str:
    last = max((i for i, e in enumerate(evs) if isinstance(e, Restart)), default=-1)
    return "".join(e.text for e in evs[last + 1:] if isinstance(e, Delta))


def attempt_threads_end():
    """Every attempt thread finishes promptly: cancelled attempts had their sockets shut down."""
    for t in [t for t in threading.enumerate() if t.name.startswith("attempt-")]:
        t.join(timeout=5)
        assert not t.is_alive(), f"{t.name} still running"


# -- the catalogue, one test each (S01–S16), on a mixed anthropic → openai chain ----------------------

def test_s01_short_retry_after_is_waited_out_on_the_same_provider(chain):
    clock = ManualClock()
    router, (first, second) = chain("anthropic", "openai", clock=clock)
    first.push(Fault.http(429, retry_after=0.3))
    got = []
    asking = threading.Thread(target=lambda: got.append(router.ask(Q)))
    asking.start()
    # Once the 429 is recorded the router has read the clock and planned the retry 0.3 s later;
    # with the clock standing still, nothing may be retried yet.
    wait_until(lambda: router.metrics.events(AttemptEvent), "the 429 attempt")
    assert len(first.chat_requests()) == 1 and asking.is_alive()
    clock.advance(0.3)
    asking.join(timeout=30)
    (result,) = got
    assert result.provider == "anthropic-0" and result.complete
    assert [a.outcome for a in result.attempts] == ["error", "ok"]
    assert result.elapsed_ms == 300  # the retry came when the wait was over: no tight loop, no extra wait
    assert len(first.chat_requests()) == 2 and second.chat_requests() == []


def test_s01_long_retry_after_fails_over_at_once_and_keeps_the_provider_out(chain):
    clock = ManualClock()  # stands still: had the router waited out the 30 s, it would never answer
    router, (first, second) = chain("anthropic", "openai", clock=clock)
    first.push(Fault.http(429, retry_after=30))
    result = finishes(lambda: router.ask(Q), "the request")
    assert result.provider == "openai-1" and result.elapsed_ms == 0
    assert len(first.chat_requests()) == 1
    breaker = router.breakers["anthropic-0"]
    assert breaker.state == "open" and breaker.retry_in() == 30
    again = router.ask(ChatRequest.ask("another question"))
    assert again.attempts[0].outcome == "skipped" and "breaker open" in again.attempts[0].detail
    assert len(first.chat_requests()) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_a_retry_hint_only_in_the_message_text_is_used_like_a_header(kind, chain):
    """Short: waited out on the same provider. Long: fail over at once, and the breaker keeps the
    provider out for exactly that long. On every protocol, through its real SDK."""
    clock = ManualClock()
    other = "anthropic" if kind == "openai" else "openai"
    router, (first, second) = chain(kind, other, clock=clock)
    first.push(Fault.http(429, retry_after=0.3, hint="text"))
    got = []
    asking = threading.Thread(target=lambda: got.append(router.ask(Q)))
    asking.start()
    wait_until(lambda: router.metrics.events(AttemptEvent), "the 429 attempt")
    assert len(first.chat_requests()) == 1 and asking.is_alive()  # waiting the 0.3 s the text asked for
    clock.advance(0.3)
    asking.join(timeout=30)
    (short,) = got
    assert short.provider == f"{kind}-0" and [a.outcome for a in short.attempts] == ["error", "ok"]
    assert short.elapsed_ms == 300

    first.push(Fault.http(429, retry_after=30, hint="text"))
    long = finishes(lambda: router.ask(ChatRequest.ask("and another")), "the request")
    assert long.provider == f"{other}-1" and long.elapsed_ms == 0
    breaker = router.breakers[f"{kind}-0"]
    assert breaker.state == "open" and breaker.retry_in() == 30


def stop_while(router, *, ready, request=Q):
    """Read a stream in a thread; once `ready(deltas)` holds, stop it from this thread. The events."""
    stream = router.stream(request)
    got: list = []
    reader = threading.Thread(target=lambda: got.extend(stream))
    reader.start()
    wait_until(lambda: ready([e for e in list(got) if isinstance(e, Delta)]), "the moment to stop")
    stream.stop()
    reader.join(30)
    assert not reader.is_alive()
    return got


@pytest.mark.parametrize("kind", KINDS)
def test_stop_before_the_first_token_ends_the_stream_at_once_and_closes_the_socket(kind, sims):
    # The clock stands still and the provider's deadlines are a minute: only the stop can end it.
    # Built as the app builds it (its own transports), on a silent provider that sent no byte yet.
    first, second = sims(kind), sims("openai" if kind != "openai" else "anthropic")
    entries = (entry_for(first, name=f"{kind}-0", first_token_timeout=60.0, idle_timeout=60.0),
               entry_for(second, name=f"{second.kind}-1"))
    router = Router(Config(providers=entries, policy=policy(hedging__enabled=False)), clock=ManualClock())
    first.set_default(Fault("silence", seconds=60))
    got = stop_while(router, ready=lambda deltas: len(first.chat_requests()) == 1)
    (done,) = [e for e in got if isinstance(e, Done)]
    assert done.result.stopped and not done.result.complete and done.result.text == ""
    assert [(a.provider, a.outcome.value, a.detail) for a in done.result.attempts] == [
        (f"{kind}-0", "cancelled", "stopped by the caller")]
    assert second.chat_requests() == []  # a stop is not a failure: nothing fails over
    attempt_threads_end()  # its socket was shut: the attempt thread is not left waiting a minute
    assert router.breakers[f"{kind}-0"].state == "closed"
    assert router.breakers[f"{kind}-0"]._store.read(f"{kind}-0").failures == 0
    router.close()


@pytest.mark.parametrize("kind", KINDS)
def test_stop_mid_stall_keeps_the_text_that_arrived(kind, chain):
    router, (first, second) = chain(kind, "openai" if kind != "openai" else "anthropic", clock=ManualClock(),
                                    timeouts={"first_token_timeout": 60.0, "idle_timeout": 60.0})
    first.set_default(Fault("stall", after=5, seconds=60))
    got = stop_while(router, ready=lambda deltas: len(deltas) >= 5)
    (done,) = [e for e in got if isinstance(e, Done)]
    shown = "".join(e.text for e in got if isinstance(e, Delta))
    assert done.result.stopped and done.result.text == shown and len(shown.split()) == 5
    assert done.result.provider == f"{kind}-0" and not done.result.complete
    assert second.chat_requests() == [] and not any(isinstance(e, Restart) for e in got)
    attempt_threads_end()
    assert router.breakers[f"{kind}-0"]._store.read(f"{kind}-0").failures == 0


def test_s02_endless_429_backs_off_then_fails_over_and_never_hammers(chain):
    router, (first, second) = chain("anthropic", "openai")
    first.set_default(Fault.http(429))
    for i in range(5):
        result = router.ask(ChatRequest.ask(f"question {i}"))
        assert result.provider == "openai-1" and result.complete
    assert len(first.chat_requests()) <= 4  # 2 tries, then the breaker opens (fail_max 3)
    assert router.breakers["anthropic-0"].state == "open"


def test_s03_one_500_is_retried_on_the_same_provider(chain):
    router, (first, second) = chain("anthropic", "openai")
    first.push(Fault.http(500))
    result = router.ask(Q)
    assert result.provider == "anthropic-0" and [a.error_kind for a in result.attempts] == ["server", None]
    assert second.chat_requests() == []


def test_s04_endless_529_fails_over_within_the_budget_and_opens_the_breaker(chain):
    router, (first, second) = chain("anthropic", "openai")
    first.set_default(Fault.http(529))
    results = [router.ask(ChatRequest.ask(f"q{i}")) for i in range(4)]
    assert all(r.provider == "openai-1" and r.complete for r in results)
    assert len(first.chat_requests()) <= 6
    assert results[-1].attempts[0].outcome == "skipped"


def test_s05_reset_then_fine_is_answered(chain):
    router, (first, second) = chain("anthropic", "openai")
    first.push(Fault("reset"))
    result = router.ask(Q)
    assert result.complete and result.provider == "anthropic-0"
    assert [a.error_kind for a in result.attempts] == ["connection", None]


def test_s06_a_silent_provider_is_hedged_and_not_retried(chain):
    router, (first, second) = chain("anthropic", "openai", timeouts={"first_token_timeout": 2.0},
                                    hedging__default_delay=0.3)
    first.set_default(Fault("silence", seconds=30))
    result = router.ask(Q)
    assert result.provider == "openai-1" and result.complete
    assert len(first.chat_requests()) == 1
    # The hedge answered before the primary's 2 s first-token deadline: otherwise the primary's
    # attempt would be a timeout error, not cancelled.
    primary = result.attempts[0]
    assert primary.outcome == "cancelled" and primary.error_kind is None and "hedge" in primary.detail
    assert result.attempts[1].hedge and result.attempts[1].outcome == "ok"
    attempt_threads_end()


def test_s06_without_hedging_the_first_token_deadline_fails_over_once(chain):
    router, (first, second) = chain("anthropic", "openai", hedging__enabled=False)
    first.set_default(Fault("silence", seconds=30))
    result = router.ask(Q)
    assert result.provider == "openai-1"
    assert [(a.provider, a.error_kind) for a in result.attempts] == [("anthropic-0", "timeout"), ("openai-1", None)]
    assert len(first.chat_requests()) == 1  # a silent provider is not retried
    attempt_threads_end()


def test_s07_slow_first_token_is_rescued_by_a_hedge_well_before_15s(chain):
    router, (first, second) = chain("anthropic", "openai", timeouts={"first_token_timeout": 8.0})
    first.set_default(Fault("slow_first", seconds=20))
    result = router.ask(Q)
    assert result.provider == "openai-1" and result.complete
    # Rescued by the hedge (after the 1 s default delay), not by the 8 s first-token deadline: then
    # the primary's attempt would be a timeout error, not cancelled.
    assert [(a.outcome, a.hedge) for a in result.attempts] == [("cancelled", False), ("ok", True)]
    assert router.metrics.summary()["hedges_won"] == 1
    attempt_threads_end()


def test_s08_cut_stream_restarts_on_the_fallback_with_the_whole_answer(chain):
    router, (first, second) = chain("anthropic", "openai")
    first.push(Fault("cut", after=40))
    evs = events(router)
    restarts = [e for e in evs if isinstance(e, Restart)]
    assert restarts == [Restart("anthropic-0", "openai-1", "stream_broken")]
    before = "".join(e.text for e in evs[:evs.index(restarts[0])] if isinstance(e, Delta))
    assert "anthropic-test" in before  # the partial answer had been shown
    result = evs[-1].result
    assert result.complete and result.provider == "openai-1"
    assert result.text == text_after_last_restart(evs) and result.text.rstrip().endswith("w49")


def test_s09_stalled_stream_is_detected_and_the_fallback_finishes(chain):
    router, (first, second) = chain("anthropic", "openai")
    first.push(Fault("stall", after=10, seconds=30))
    result = router.ask(Q)
    assert result.complete and result.provider == "openai-1"
    assert result.attempts[0].error_kind == "stream_broken" and "stall" in result.attempts[0].detail
    # A stall is strong evidence: the next request does not wait out another one on the same provider.
    again = router.ask(ChatRequest.ask("and the next user?"))
    assert again.provider == "openai-1" and again.complete
    assert again.attempts[0].outcome.value == "skipped" and "breaker open" in again.attempts[0].detail
    assert len(first.chat_requests()) == 1
    breaker = router.breakers["anthropic-0"]
    router.health.probe(["anthropic-0"])  # its list-models call passes: that doesn't say it stopped stalling
    assert breaker.state == "open" and breaker.retry_in() > 0
    attempt_threads_end()


def test_a_slow_but_steady_provider_is_never_taken_for_a_stalled_one(chain):
    # A chunk every 0.5 s against a 0.8 s idle deadline: slow, never silent for long.
    router, (first, second) = chain("anthropic", "openai", server_kw={
        "chunk_delay": 0.5, "responder": lambda question, model: "slow and steady wins the race"})
    result = router.ask(ChatRequest.ask("a slow question"))
    assert result.provider == "anthropic-0" and result.complete and result.text == "slow and steady wins the race"
    assert router.breakers["anthropic-0"].state == "closed" and second.chat_requests() == []
    assert router.breakers["anthropic-0"]._store.read("anthropic-0").failures == 0


def test_s10_malformed_chunk_fails_over_cleanly(chain):
    router, (first, second) = chain("anthropic", "openai")
    first.push(Fault("malformed", after=5))
    evs = events(router)
    result = evs[-1].result
    assert result.complete and result.provider == "openai-1"
    assert "{" not in result.text and result.text == text_after_last_restart(evs)


def test_s11_complete_stream_without_sentinel_finishes_with_usage(chain):
    router, (first, second) = chain("anthropic", "openai")
    first.push(Fault("no_sentinel"))
    result = router.ask(Q)
    assert result.provider == "anthropic-0" and result.complete and result.usage.output_tokens > 0


def test_s12_context_length_goes_to_the_next_provider_without_resending(chain):
    router, (first, second) = chain("anthropic", "openai")
    first.set_default(Fault.http(flavour="context_length"))
    result = router.ask(Q)
    assert result.provider == "openai-1" and len(first.chat_requests()) == 1
    breaker = router.breakers["anthropic-0"]  # the request's fault, not the provider's: no failure counted
    for _ in range(breaker.fail_max - 1):
        breaker.failure("a health failure")
    assert breaker.state == "closed"


@pytest.mark.parametrize("after", [0, 7])
def test_s13_a_decline_is_reported_plainly_and_not_routed_around(after, chain):
    router, (first, second) = chain("anthropic", "openai")
    first.set_default(Fault("refusal", after=after))
    evs = events(router)
    result = evs[-1].result
    assert result.tier == "declined" and not result.complete
    assert "declined" in result.text and "content policy" in result.text
    assert len(first.chat_requests()) == 1 and second.chat_requests() == []
    assert bool([e for e in evs if isinstance(e, Restart)]) == (after > 0)  # shown text is withdrawn


def test_s14_recovery_never_depends_on_an_assistant_prefill(chain):
    router, (first, second) = chain("anthropic", "anthropic")
    first.push(Fault("cut", after=20))
    result = router.ask(Q)
    assert result.complete and result.provider == "anthropic-1"
    (sent,) = second.chat_requests()
    assert sent.body["messages"][-1]["role"] == "user"
    assert sent.body["messages"] == first.chat_requests()[0].body["messages"]


def test_s15_sixty_second_outage_with_recovery(chain):
    clock = FakeClock()
    router, (first, second) = chain("anthropic", "openai", clock=clock)
    first.set_default(Fault.http(503))
    served_by = []
    for _ in range(12):  # one request every 5 s through a 60 s outage
        served_by.append(router.ask(ChatRequest.ask(f"at {clock.now}")).provider)
        clock.advance(5)
    assert set(served_by) == {"openai-1"}
    outage_requests = len(first.chat_requests())
    assert outage_requests <= 6  # the breaker kept the sick primary from being hammered
    first.set_default(Fault())  # recovered at t = 60 s
    waited = 0  # seconds the test has moved the clock since the recovery
    while router.ask(ChatRequest.ask(f"at {clock.now}")).provider != "anthropic-0":
        clock.advance(1)
        waited += 1
        assert waited <= 30
    assert router.breakers["anthropic-0"].state == "closed"


def test_s16_the_answer_reports_the_fallback_and_failed_attempts_carry_no_usage(chain):
    router, (first, second) = chain("anthropic", "openai")
    first.set_default(Fault.http(503))
    result = router.ask(Q)
    assert (result.provider, result.model) == ("openai-1", "openai-test")
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0
    events_ = router.metrics.events()
    failed = [e for e in events_ if getattr(e, "outcome", None) == "error"]
    assert failed and all(e.output_tokens is None for e in failed)


# -- every provider kind as the failing primary ----------------------------------------------------------

KIND_FAULTS = {
    "silence": Fault("silence", seconds=30),
    "cut": Fault("cut", after=10),
    "stall": Fault("stall", after=10, seconds=30),
    "malformed": Fault("malformed", after=3),
    "error_event": Fault("error_event", after=3),
    "no_end": Fault("no_end", after=30),
    "overloaded": Fault.http(503),
    "context_length": Fault.http(flavour="context_length"),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", list(KIND_FAULTS))
def test_every_kind_as_primary_ends_in_a_complete_answer(kind, name, chain):
    backup = "openai" if kind != "openai" else "gemini"
    router, (first, second) = chain(kind, backup, hedging__default_delay=5.0)
    first.set_default(KIND_FAULTS[name])
    evs = events(router)
    result = evs[-1].result
    assert result.complete and result.tier == "provider" and result.provider == f"{backup}-1"
    assert result.text == text_after_last_restart(evs) and result.text.rstrip().endswith("w49")


@pytest.mark.parametrize("kind", ["anthropic", "openai", "gemini"])
def test_every_kind_that_can_refuse_is_declined_not_rerouted(kind, chain):
    router, (first, second) = chain(kind, "ollama")
    first.set_default(Fault("refusal", after=2))
    result = router.ask(Q)
    assert result.tier == "declined" and second.chat_requests() == []


# -- hedging ----------------------------------------------------------------------------------------------

def test_a_healthy_primary_is_not_hedged(chain):
    router, (first, second) = chain("openai", "gemini")
    for i in range(5):
        assert router.ask(ChatRequest.ask(f"q{i}")).provider == "openai-0"
    assert second.chat_requests() == [] and router.metrics.summary()["hedges"] == 0


def test_hedge_delay_follows_the_observed_p95_within_floor_and_cap(chain):
    clock = ManualClock()
    router, (first, second) = chain("openai", "gemini", clock=clock, hedging__min_samples=3, hedging__floor=0.05,
                                    hedging__cap=0.4, timeouts={"first_token_timeout": 5.0, "idle_timeout": 5.0})
    first.first_delay = lambda: clock.advance(0.2) or 0.0  # each first token takes 0.2 s on the router's clock
    for i in range(3):
        router.ask(ChatRequest.ask(f"warm {i}"))
    assert router.metrics.ttft_quantile("openai-0", 0.95, 3) == 200
    first.push(Fault("slow_first", seconds=20))
    got = []
    asking = threading.Thread(target=lambda: got.append(router.ask(ChatRequest.ask("now slow"))))
    asking.start()
    first.wait_for(4)  # the slow request is in; the clock still stands at its start
    clock.advance(0.2)  # the observed p95 (between the 0.05 floor and the 0.4 cap): time to hedge
    asking.join(timeout=30)
    (result,) = got
    assert result.provider == "gemini-1" and result.attempts[1].hedge
    assert result.ttft_ms == 200  # the hedge started at exactly the p95 and answered at once
    attempt_threads_end()


def test_if_the_primary_wins_the_race_the_hedge_is_cancelled(chain):
    router, (first, second) = chain("openai", "gemini", hedging__default_delay=0.1,
                                    server_kw={"first_delay": 0.0})
    first.push(Fault("slow_first", seconds=0.3))
    second.push(Fault("slow_first", seconds=3))
    result = router.ask(Q)
    assert result.provider == "openai-0"
    assert [(a.provider, a.outcome) for a in result.attempts] == [("gemini-1", "cancelled"), ("openai-0", "ok")]
    attempt_threads_end()


def test_when_the_race_winner_breaks_off_the_loser_answers(chain):
    """The hedge wins the race, the slow primary is cancelled (healthy, just slower), then the hedge
    breaks off mid-answer: the primary is next in line again, not "no provider could answer"."""
    router, (first, second) = chain("anthropic", "openai", timeouts={"first_token_timeout": 8.0},
                                    hedging__default_delay=0.3, offline__enabled=False)
    first.push(Fault("slow_first", seconds=20))  # only the first call: the second answers at once
    second.push(Fault("cut", after=3))
    evs = events(router)
    result = evs[-1].result
    assert result.tier == "provider" and result.complete and result.provider == "anthropic-0", result
    assert [e for e in evs if isinstance(e, Restart)] == [Restart("openai-1", "anthropic-0", "stream_broken")]
    assert [(a.provider, a.outcome) for a in result.attempts] == [
        ("anthropic-0", "cancelled"), ("openai-1", "error"), ("anthropic-0", "ok")]
    assert len(first.chat_requests()) == 2 and router.followups.list() == []
    attempt_threads_end()


# -- breakers ---------------------------------------------------------------------------------------------

def test_request_errors_never_open_a_breaker(chain):
    router, (first, second) = chain("openai", "gemini")
    first.set_default(Fault.http(400))
    for i in range(6):
        assert router.ask(ChatRequest.ask(f"q{i}")).provider == "gemini-1"
    assert router.breakers["openai-0"].state == "closed" and len(first.chat_requests()) == 6


def test_breaker_transitions_are_events(chain):
    clock = FakeClock()
    router, (first, second) = chain("openai", "gemini", clock=clock)
    first.set_default(Fault.http(500))
    router.ask(Q)
    router.ask(ChatRequest.ask("again"))
    first.set_default(Fault())
    clock.advance(16)
    router.ask(ChatRequest.ask("recovered?"))
    changes = [(t["old"], t["new"]) for t in router.metrics.summary()["providers"]["openai-0"]["transitions"]]
    assert changes == [("closed", "open"), ("open", "half-open"), ("half-open", "closed")]


# -- degraded tiers -----------------------------------------------------------------------------------------

def test_fresh_cache_is_served_before_any_provider(chain):
    router, (first,) = chain("gemini")
    a = router.ask(ChatRequest.ask("What is a hedge?"))
    b = router.ask(ChatRequest.ask("What is a hedge?  \n"))  # the same question, trailing space aside
    assert a.tier == "provider" and b.tier == "cache" and b.text == a.text and b.attempts == ()
    assert len(first.chat_requests()) == 1
    c = router.ask(ChatRequest.ask("What is a hedge?", temperature=0.9))  # other settings: other key
    assert c.tier == "provider"


def test_incomplete_answers_are_never_cached(chain):
    router, (first,) = chain("gemini")
    first.push(Fault("length"))
    assert not router.ask(Q).complete
    assert router.ask(Q).tier == "provider"


def test_cache_can_be_turned_off_and_cleared(chain):
    router, (first,) = chain("gemini", cache__enabled=False)
    router.ask(Q)
    assert router.ask(Q).tier == "provider"
    router2, (other,) = chain("gemini")
    router2.ask(Q)
    router2.clear_cache()
    assert router2.ask(Q).tier == "provider"


def test_stale_cache_answers_when_every_provider_is_down(chain):
    clock = FakeClock()
    router, (first, second) = chain("openai", "gemini", clock=clock, cache__ttl=60)
    fresh = router.ask(Q)
    clock.advance(120)
    for s in (first, second):
        s.set_default(Fault.http(503))
    stale = router.ask(Q)
    assert stale.tier == "stale_cache" and stale.text == fresh.text and "2 min" in stale.notice


def test_offline_faq_answers_when_nothing_else_can(chain):
    router, servers = chain("openai", "gemini")
    for s in servers:
        s.set_default(Fault.http(503))
    result = router.ask(ChatRequest.ask("I forgot my password, how do I reset it?"))
    assert result.tier == "offline" and "Forgot password?" in result.text and result.complete


def test_unanswerable_questions_are_kept_for_follow_up(chain):
    router, servers = chain("openai")
    servers[0].set_default(Fault.http(503))
    result = router.ask(ChatRequest.ask("Which moon of Saturn has methane lakes?"))
    assert result.tier == "unavailable" and "Which moon of Saturn has methane lakes?" in result.text
    assert [f.question for f in router.followups.list()] == ["Which moon of Saturn has methane lakes?"]


def test_partial_text_is_withdrawn_when_every_provider_breaks_mid_answer(chain):
    router, servers = chain("openai", "ollama")
    for s in servers:
        s.set_default(Fault("cut", after=5))
    evs = events(router, ChatRequest.ask("Which moon of Saturn has methane lakes?"))
    kinds = [type(e).__name__ for e in evs if not isinstance(e, Delta)]
    assert kinds == ["Restart", "Restart", "Done"]
    assert evs[-2] == Restart("ollama-1", None, "no provider could answer")
    assert evs[-1].result.tier == "unavailable"


def test_the_request_deadline_bounds_the_whole_chain(chain):
    router, (first, second) = chain("openai", "gemini", timeouts={"first_token_timeout": 2.0},
                                    timeouts__request=0.6, hedging__enabled=False)
    first.set_default(Fault("silence", seconds=30))
    result = router.ask(ChatRequest.ask("Which moon of Saturn has methane lakes?"))
    assert result.tier == "unavailable"
    # The 0.6 s deadline ended the chain, not the primary's 2 s first-token limit: after that the
    # fallback would have been asked rather than skipped.
    assert [a.outcome for a in result.attempts] == ["error", "skipped"]
    assert result.attempts[1].detail == "request deadline reached"
    assert second.chat_requests() == []
    # A peer silent before its response headers can't be shut down early (there is no response to
    # reach its socket through yet): its thread ends at the read-timeout backstop, here 2 s.
    attempt_threads_end()


# -- many sessions at once ---------------------------------------------------------------------------------

def test_identical_concurrent_requests_are_computed_once(chain):
    router, (first,) = chain("ollama", server_kw={"chunk_delay": 0.005})
    results, barrier = [], threading.Barrier(6)

    def ask():
        barrier.wait()
        results.append(router.ask(Q))

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == 6 and len({r.text for r in results}) == 1
    assert len(first.chat_requests()) == 1
    assert sorted(r.tier for r in results) == ["cache"] * 5 + ["provider"]


def test_many_threads_through_one_router_under_faults(chain):
    router, servers = chain("anthropic", "openai", "gemini", server_kw={"chunk_delay": 0.001})
    servers[0].set_default(Fault.http(503))
    servers[1].push(*[Fault("cut", after=5)] * 5)
    results, errors = [], []

    def ask(i):
        try:
            results.append(router.ask(ChatRequest(messages=(Message("user", f"question {i}"),))))
        except Exception as e:  # noqa: BLE001 — collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == [] and len(results) == 24
    assert all(r.complete and r.tier == "provider" and "'question" in r.text for r in results)
    assert sum(1 for t in router.metrics.events() if type(t).__name__ == "RequestEvent") == 24


def test_stopping_early_cancels_the_attempt(chain):
    router, (first,) = chain("openai", server_kw={"chunk_delay": 0.01})
    stream = router.stream(Q)
    assert isinstance(next(stream), Delta)
    stream.close()
    attempt_threads_end()
    assert router.ask(ChatRequest.ask("next")).complete


def test_as_dict_has_the_documented_fields(chain):
    router, _ = chain("ollama")
    d = router.ask(Q).as_dict()
    assert {"text", "complete", "tier", "provider", "model", "usage", "attempts", "elapsed_ms"} <= set(d)
    assert set(d["usage"]) == {"input_tokens", "output_tokens"}
    assert {"provider", "model", "outcome", "error_kind", "latency_ms", "ttft_ms"} <= set(d["attempts"][0])


def test_done_is_always_last_and_only_once(chain):
    router, _ = chain("gemini")
    evs = events(router)
    assert isinstance(evs[-1], Done) and sum(isinstance(e, Done) for e in evs) == 1


def test_when_every_breaker_is_open_a_request_waits_briefly_for_the_first_trial(chain):
    clock = FakeClock()
    router, (only,) = chain("openai", clock=clock, breaker__reset_timeout=10)
    only.set_default(Fault.http(503))
    for i in range(2):
        router.ask(ChatRequest.ask(f"q{i}"))
    assert router.breakers["openai-0"].state == "open"
    only.set_default(Fault())
    clock.advance(9.5)  # the cooldown ends in under 0.5 s: worth waiting for rather than failing now
    result = router.ask(ChatRequest.ask("Which moon of Saturn has methane lakes?"))
    assert result.provider == "openai-0" and result.complete  # without the wait: "unavailable"
    assert router.breakers["openai-0"].state == "closed"


def test_a_long_cooldown_is_not_waited_for(chain):
    clock = ManualClock()  # stands still: a request that waited for the 15 s cooldown would never end
    router, (only,) = chain("openai", clock=clock, retries__max_attempts=1)
    only.set_default(Fault.http(503))
    for i in range(3):
        router.ask(ChatRequest.ask(f"q{i}"))
    assert router.breakers["openai-0"].state == "open"
    result = finishes(lambda: router.ask(ChatRequest.ask("Which moon of Saturn has methane lakes?")), "the request")
    assert result.tier == "unavailable" and result.elapsed_ms == 0
    assert [a.outcome for a in result.attempts] == ["skipped"]


def leader_and_follower(router, follow):
    """The leader mid-answer, holding the flight, and a thread running `follow` that waits on it."""
    leader = router.stream(Q)
    assert isinstance(next(leader), Delta)  # the leader is mid-answer, holding the flight
    follower = threading.Thread(target=follow)
    follower.start()
    wait_until(lambda: inside(follower, Flight.wait), "the follower to wait on the leader")
    return leader, follower


def stalling(chain, kind):
    """A chain of one patient `kind` provider (a minute's deadlines), whose next answer stalls for a
    minute after five words; no stall hedge."""
    router, (first,) = chain(kind, timeouts={"idle_timeout": 60.0, "first_token_timeout": 60.0},
                             stalls__hedge=False)
    first.push(Fault("stall", after=5, seconds=60))
    return router, first


def test_a_follower_answers_itself_when_the_identical_leader_is_stopped(chain):
    router, (first,) = chain("openai", server_kw={"chunk_delay": 0.02})
    got = []
    leader, follower = leader_and_follower(router, lambda: got.append(router.ask(Q)))
    assert len(first.chat_requests()) == 1
    leader.close()  # the user pressed Stop
    follower.join(timeout=30)
    (result,) = got
    assert result.tier == "provider" and result.complete
    assert len(first.chat_requests()) == 2


def test_a_follower_answers_itself_when_the_identical_leader_presses_stop(chain):
    # Stop from another thread, as the chat page does it: the leader's stopped, partial answer is
    # its own; the follower never pressed Stop and gets a whole answer of its own.
    router, first = stalling(chain, "openai")
    got = []
    leader, follower = leader_and_follower(router, lambda: got.append(router.ask(Q)))
    leader.stop()
    stopped = [e for e in leader if isinstance(e, Done)][0].result
    assert stopped.stopped
    follower.join(timeout=30)
    (result,) = got
    assert not result.stopped and result.complete and result.tier == "provider"
    assert len(first.chat_requests()) == 2


def test_stop_ends_a_follower_waiting_on_an_identical_stalled_request_and_the_leader_goes_on(chain):
    # Two users ask the same first question; the provider stalls for a minute mid-answer (its
    # deadlines are a minute too). The second, waiting on the first's answer, presses Stop: it ends
    # at once, stopped, while the first's answer carries on untouched.
    router, first = stalling(chain, "anthropic")
    follower = router.stream(Q)
    got: list = []
    leader, reader = leader_and_follower(router, lambda: got.extend(follower))
    follower.stop()
    reader.join(30)
    assert not reader.is_alive()
    (done,) = [e for e in got if isinstance(e, Done)]
    assert done.result.stopped and done.result.text == "" and not done.result.complete
    assert len(first.chat_requests()) == 1  # the stopped follower asked no provider
    first.resume()  # the stall ends: the leader was never disturbed
    result = [e for e in leader if isinstance(e, Done)][0].result
    assert result.complete and result.provider == "anthropic-0"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_a_server_slow_to_end_its_body_after_the_answer_costs_the_answer_nothing(kind, chain):
    # The answer's end marker arrives, the bytes that end the HTTP body never do (until the test
    # ends). The answer is whole: it is served at once, not after the read timeout (100 s here,
    # past this test's own limit), and not failed over as a stalled stream.
    router, (server,) = chain(kind, timeouts={"idle_timeout": 100.0, "first_token_timeout": 100.0},
                              server_kw={"end_delay": float("inf")})
    try:
        result = router.ask(ChatRequest.ask("What is a circuit breaker?"))
    finally:
        server.resume()
    assert result.complete and result.provider == f"{kind}-0", result.notice
    assert [a.outcome.value for a in result.attempts] == ["ok"]
    assert result.usage is not None and result.usage.output_tokens  # the usage after the finish is still read
