"""The breaker state machine, on a clock the test moves."""

from __future__ import annotations

import threading

from core.breaker import Breaker, MemoryBreakerStore
from core.metrics import TransitionEvent


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def make(**kw):
    clock, events = Clock(), []
    return Breaker("p", clock=clock, wall=lambda: 1000 + clock.now, on_transition=events.append, **kw), clock, events


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
    b, clock, events = make(fail_max=2)
    b.failure("x")
    b.failure("x")
    b.reset()
    assert b.state == "closed" and b.allow()
    assert events[-1].reason == "reset by operator"
    b.failure("x")
    b.reset()  # forgets a count while closed too
    b.failure("x")
    assert b.state == "closed"
    b.failure("x")
    assert b.state == "open"


def test_transitions_are_the_metrics_events_stamped_with_wall_time():
    b, clock, events = make(fail_max=1, reset_timeout=5)
    clock.now = 2
    b.failure("x")
    assert events == [TransitionEvent(1002, "p", "closed", "open", "1 failures in a row, last: x", 5)]


# -- the state-storage seam: breakers of several replicas on one store -------------------------------------

class RacingStore(MemoryBreakerStore):
    """Runs each change once on a stale copy first, as a compare-and-set store does when another
    writer got in first: a change must be pure for the result to stay right."""

    def update(self, name, change):
        change(self.read(name))
        return super().update(name, change)


def replicas(n, store, **kw):
    clock, events = Clock(), []
    return [Breaker("p", clock=clock, wall=clock, on_transition=events.append, store=store, **kw)
            for _ in range(n)], clock, events


def test_a_breaker_opened_on_one_replica_is_open_on_the_others():
    (a, b), clock, _ = replicas(2, MemoryBreakerStore(), fail_max=2, reset_timeout=5)
    a.failure("x")
    b.failure("x")  # the count is shared too
    assert a.state == b.state == "open" and b.allow() is None and b.retry_in() == 5


def test_the_fleet_sends_one_half_open_trial_and_each_transition_is_emitted_once():
    breakers, clock, events = replicas(8, RacingStore(), fail_max=1, reset_timeout=5)
    breakers[0].failure("x")
    clock.now = 5
    barrier = threading.Barrier(32)
    permits = []

    def try_it(b):
        barrier.wait()
        permits.append((b, b.allow()))

    threads = [threading.Thread(target=try_it, args=(breakers[i % 8],)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ((owner, trial),) = [(b, p) for b, p in permits if p is not None]
    other = next(b for b in breakers if b is not owner)
    other.success(trial)  # the trial's outcome may be reported through any replica
    assert owner.state == "closed"
    assert [(e.old, e.new) for e in events] == [("closed", "open"), ("open", "half-open"), ("half-open", "closed")]
