"""The breaker state machine, on a clock the test moves."""

from __future__ import annotations

import threading

from core.breaker import Breaker


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def make(**kw):
    clock, events = Clock(), []
    return Breaker("p", clock=clock, on_transition=events.append, **kw), clock, events


def test_opens_after_consecutive_failures_and_a_success_resets_the_count():
    b, clock, events = make(fail_max=3, reset_timeout=10)
    b.failure("x")
    b.failure("x")
    b.success()
    b.failure("x")
    b.failure("x")
    assert b.state == "closed" and b.allow()
    b.failure("x")
    assert b.state == "open" and not b.allow() and b.retry_in() == 10
    assert [(e.old, e.new) for e in events] == [("closed", "open")] and "3 failures" in events[0].reason


def test_half_open_lets_exactly_one_trial_through_even_under_contention():
    b, clock, _ = make(fail_max=1, reset_timeout=5)
    b.failure("x")
    clock.now = 5
    allowed, barrier = [], threading.Barrier(32)

    def try_it():
        barrier.wait()
        allowed.append(b.allow() is not None)

    threads = [threading.Thread(target=try_it) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert allowed.count(True) == 1 and b.state == "half-open"


def test_trial_success_closes_trial_failure_reopens():
    b, clock, events = make(fail_max=1, reset_timeout=5)
    b.failure("x")
    clock.now = 5
    trial = b.allow()
    b.failure("still down", permit=trial)
    assert b.state == "open" and b.retry_in() == 5
    clock.now = 10
    trial = b.allow()
    b.success(trial)
    assert b.state == "closed"
    assert [(e.old, e.new) for e in events] == [("closed", "open"), ("open", "half-open"), ("half-open", "open"),
                                                 ("open", "half-open"), ("half-open", "closed")]


def test_a_neutral_outcome_frees_the_trial_slot_without_deciding():
    b, clock, _ = make(fail_max=1, reset_timeout=5)
    b.failure("x")
    clock.now = 6
    trial = b.allow()
    assert trial and not b.allow()
    b.neutral(trial)  # e.g. the trial was a cancelled hedge
    assert b.state == "half-open" and b.allow()


def test_retry_after_sets_the_cooldown_and_a_cooldown_is_never_shortened():
    b, clock, events = make(fail_max=1, reset_timeout=5, max_cooldown=120)
    b.failure("429", retry_after=60)
    assert b.retry_in() == 60 and events[-1].cooldown_s == 60
    b.failure("later error")  # would be 5 s on its own
    assert b.retry_in() == 60
    b.hold_off(1000, "asked to wait")
    assert b.retry_in() == 120  # capped by max_cooldown


def test_hold_off_opens_a_closed_breaker_at_once():
    b, clock, events = make(fail_max=5, reset_timeout=5)
    b.hold_off(30, "Retry-After 30")
    assert b.state == "open" and b.retry_in() == 30 and events[-1].reason == "Retry-After 30"


def test_a_successful_probe_shortens_the_wait_for_a_trial():
    b, clock, _ = make(fail_max=1, reset_timeout=60)
    b.failure("x")
    b.probe_succeeded()
    assert b.allow() and b.state == "half-open"


def test_reset_closes_and_forgets():
    b, clock, events = make(fail_max=1)
    b.failure("x")
    b.reset()
    assert b.state == "closed" and b.failures == 0 and b.allow()
    assert events[-1].reason == "reset by operator"
