"""Per-provider circuit breakers: pybreaker's state machine, driven by outcomes we record.

pybreaker's `call()` holds one lock for the whole call, serialising every session behind it, and
it can't see a failure that happens inside a stream (field notes §8). So nothing is called
through it: the router asks `allow()` before an attempt and reports the outcome afterwards, and
pybreaker keeps the state, the failure counter and notifies listeners of each transition.
Time comes from an injectable clock, so tests advance it instead of sleeping.

Each admitted call holds a `Permit`, and reports its outcome with it. In half-open exactly one
permit is the trial, and only that permit's outcome (success, failure, or giving it back when the
call was cancelled) ends the trial: a call admitted earlier, while the breaker was still closed,
can't free the slot by finishing or being cancelled.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import pybreaker

CLOSED, OPEN, HALF_OPEN = pybreaker.STATE_CLOSED, pybreaker.STATE_OPEN, pybreaker.STATE_HALF_OPEN


@dataclass(frozen=True)
class Transition:
    """A breaker changed state: an event for the dashboard and the logs."""

    at: float
    provider: str
    old: str
    new: str
    reason: str
    cooldown_s: float = 0.0


@dataclass(frozen=True, eq=False)  # eq=False: each permit is only ever equal to itself
class Permit:
    """Leave to make one call, returned by `Breaker.allow()`; the call reports its outcome with it."""

    trial: bool  # the half-open trial call


class _Listener(pybreaker.CircuitBreakerListener):
    def __init__(self, owner: Breaker) -> None:
        self.owner = owner

    def state_change(self, cb, old_state, new_state) -> None:
        old = old_state.name if old_state is not None else CLOSED
        if old != new_state.name:
            self.owner._notify(old, new_state.name)


class Breaker:
    """One provider's breaker. All methods are thread-safe and never block on a provider call."""

    def __init__(
        self,
        name: str,
        *,
        fail_max: int = 3,
        reset_timeout: float = 15.0,
        max_cooldown: float = 300.0,
        clock: Callable[[], float],
        on_transition: Callable[[Transition], None] = lambda t: None,
    ) -> None:
        self.name = name
        self.reset_timeout = reset_timeout
        self.max_cooldown = max_cooldown
        self._clock = clock
        self._on_transition = on_transition
        self._lock = threading.Lock()
        self._open_until = 0.0
        self._trial: Permit | None = None  # the half-open trial call in flight
        self._reason = ""
        self._cooldown = 0.0
        self._storage = pybreaker.CircuitMemoryStorage(CLOSED)
        self._cb = pybreaker.CircuitBreaker(fail_max=fail_max, reset_timeout=reset_timeout, name=name,
                                            listeners=[_Listener(self)], state_storage=self._storage)

    # -- reading ---------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        return self._cb.current_state

    @property
    def failures(self) -> int:
        return self._cb.fail_counter

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a trial call through (0 when not open)."""
        with self._lock:
            return max(0.0, self._open_until - self._clock()) if self.state == OPEN else 0.0

    # -- deciding --------------------------------------------------------------------------------
    def allow(self) -> Permit | None:
        """May a call go to this provider now? A permit (report the outcome with it) or None.
        In half-open, exactly one trial call may."""
        with self._lock:
            state = self.state
            if state == CLOSED:
                return Permit(trial=False)
            if state == OPEN:
                if self._clock() < self._open_until:
                    return None
                self._reason = "cooldown over: one trial call"
                self._cb.half_open()
            if self._trial is not None:
                return None
            self._trial = Permit(trial=True)
            return self._trial

    # -- recording -------------------------------------------------------------------------------
    # In half-open only the trial's own permit decides; any other call's outcome is older news.
    def _is_trial(self, permit: Permit | None) -> bool:
        return permit is not None and permit is self._trial

    def success(self, permit: Permit | None = None) -> None:
        with self._lock:
            state = self.state
            if state == HALF_OPEN and not self._is_trial(permit):
                return
            if state != CLOSED:
                self._reason = "trial call succeeded" if state == HALF_OPEN else "a call in flight succeeded"
                self._trial = None
                self._cb.close()
            else:
                # pybreaker counts *consecutive* failures: a success resets the count.
                self._storage.reset_counter()

    def failure(self, reason: str, *, retry_after: float | None = None, permit: Permit | None = None) -> None:
        """A health failure (the provider is sick). A long Retry-After opens the breaker at once."""
        with self._lock:
            now = self._clock()
            cooldown = self.reset_timeout
            if retry_after is not None:
                cooldown = min(self.max_cooldown, max(cooldown, retry_after))
            if self.state == HALF_OPEN:
                if self._is_trial(permit):
                    self._open(now, cooldown, f"trial call failed: {reason}")
                return
            self._storage.increment_counter()
            if self.state == OPEN:
                self._open_until = max(self._open_until, now + cooldown)  # never shorten a cooldown
            elif self._cb.fail_counter >= self._cb.fail_max:
                self._open(now, cooldown, f"{self._cb.fail_counter} failures in a row, last: {reason}")

    def hold_off(self, seconds: float, reason: str, *, permit: Permit | None = None) -> None:
        """Keep the provider out for `seconds` (it asked us to, e.g. a long Retry-After)."""
        with self._lock:
            now = self._clock()
            seconds = min(self.max_cooldown, seconds)
            if self.state == OPEN:
                self._open_until = max(self._open_until, now + seconds)
            elif self.state == CLOSED or self._is_trial(permit):
                self._open(now, seconds, reason)

    def neutral(self, permit: Permit | None = None) -> None:
        """The call ended in a way that says nothing about health (e.g. a bad request or a
        cancelled hedge). If it was the trial, its slot is given back, state unchanged; any other
        call's neutral ending leaves the trial in flight alone."""
        with self._lock:
            if self._is_trial(permit):
                self._trial = None

    def probe_succeeded(self) -> None:
        """An active health probe got through: an open breaker may try a real call right away."""
        with self._lock:
            if self.state == OPEN and self._open_until > self._clock():
                self._open_until = self._clock()

    def reset(self) -> None:
        with self._lock:
            self._trial = None
            self._open_until = 0.0
            self._storage.reset_counter()
            if self.state != CLOSED:
                self._reason = "reset by operator"
                self._cb.close()

    # -- internals -------------------------------------------------------------------------------
    def _open(self, now: float, cooldown: float, reason: str) -> None:
        self._trial = None  # a trial ends when the breaker leaves half-open
        self._open_until = now + cooldown
        self._reason, self._cooldown = reason, cooldown
        if self.state == OPEN:
            return
        self._cb.open()

    def _notify(self, old: str, new: str) -> None:
        # Called by pybreaker, under its lock and ours; the callback only appends an event.
        cooldown = self._cooldown if new == OPEN else 0.0
        self._on_transition(Transition(self._clock(), self.name, old, new, self._reason, cooldown))
