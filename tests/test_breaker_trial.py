"""Half-open admits one trial, and only the trial's own outcome ends it (issue 8, item 7).

A call admitted while the breaker was still closed may still be running when the breaker opens
and its cooldown ends; when that call is cancelled (or fails, or succeeds) it must not free the
trial slot, or a second call gets through while the first trial is in flight."""

from __future__ import annotations

import threading

from core.breaker import Breaker
from core.messages import ChatRequest
from core.router import Delta, Done
from core.simulator import Fault
from tests.clock import FakeClock
from tests.test_breaker import make


def opened_with_a_call_in_flight(**kw):
    """A breaker that opened while an earlier call was running, with the cooldown now over."""
    b, clock, events = make(fail_max=1, reset_timeout=5, **kw)
    earlier = b.allow()  # admitted while closed, still running
    b.failure("x")
    clock.now = 5
    return b, clock, earlier


def test_an_unrelated_calls_ending_never_frees_the_trial_slot():
    b, clock, earlier = opened_with_a_call_in_flight()
    trial = b.allow()
    assert trial is not None and trial.trial and b.state == "half-open"
    b.neutral(earlier)  # e.g. the user stopped that earlier request
    assert b.allow() is None
    b.neutral()  # an outcome reported without any permit
    assert b.allow() is None
    b.failure("late error", permit=earlier)
    b.hold_off(60, "late Retry-After", permit=earlier)
    b.success(earlier)
    assert b.state == "half-open" and b.allow() is None  # still the first trial's to decide
    b.success(trial)
    assert b.state == "closed" and b.allow() is not None


def test_the_trial_gives_its_slot_back_when_it_is_cancelled_and_a_late_outcome_is_ignored():
    b, clock, earlier = opened_with_a_call_in_flight()
    first = b.allow()
    b.neutral(first)  # the trial itself was cancelled: its slot goes back
    second = b.allow()
    assert second is not None and second is not first and b.allow() is None
    b.failure("late", permit=first)  # the first trial's permit no longer holds the slot
    assert b.state == "half-open" and b.allow() is None
    b.failure("still down", permit=second)
    assert b.state == "open"


def test_fifty_users_half_open_exactly_one_trial_while_others_end_their_calls():
    b, clock, _ = make(fail_max=1, reset_timeout=5)
    users = 50
    earlier = [b.allow() for _ in range(users)]  # fifty calls admitted while closed
    b.failure("x")
    clock.now = 5
    admitted, barrier = [], threading.Barrier(users)
    lock = threading.Lock()

    def user(i: int) -> None:
        barrier.wait()
        permit = b.allow()
        barrier.wait()
        b.neutral(earlier[i])  # every earlier call is cancelled while the trial is in flight
        barrier.wait()
        again = b.allow()
        with lock:
            admitted.extend(p for p in (permit, again) if p is not None)

    threads = [threading.Thread(target=user, args=(i,)) for i in range(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(admitted) == 1 and admitted[0].trial and b.state == "half-open"


def test_a_cancelled_request_does_not_let_a_second_call_through_during_the_trial(chain):
    clock = FakeClock()
    router, (primary, backup) = chain("openai", "ollama", clock=clock, server_kw={"chunk_delay": 0.02})
    breaker: Breaker = router.breakers["openai-0"]
    earlier = router.stream(ChatRequest.ask("an earlier question"))
    assert isinstance(next(earlier), Delta)  # admitted while closed, mid-answer

    primary.push(Fault.http(429, retry_after=30))  # another request is told to stay away for 30 s
    assert router.ask(ChatRequest.ask("a rate-limited question")).provider == "ollama-1"
    assert breaker.state == "open"
    clock.advance(31)

    trial = router.stream(ChatRequest.ask("the trial question"))
    assert isinstance(next(trial), Delta)  # the trial call is mid-answer on the primary
    assert breaker.state == "half-open"
    sent = len(primary.chat_requests())

    earlier.close()  # the user stops the earlier request: its attempt is cancelled
    during = router.ask(ChatRequest.ask("a question during the trial"))
    assert during.provider == "ollama-1" and during.complete
    assert during.attempts[0].outcome == "skipped" and "trial call is in flight" in during.attempts[0].detail
    assert len(primary.chat_requests()) == sent  # no second call reached the primary

    (done,) = [e for e in trial if isinstance(e, Done)]
    assert done.result.provider == "openai-0" and done.result.complete
    assert breaker.state == "closed"
