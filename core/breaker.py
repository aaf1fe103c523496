"""Per-provider circuit breakers: closed → open → half-open (one trial call) → closed.

Nothing is called through the breaker. The router asks `allow()` before an attempt and gets a
`Permit` (or None: skip this provider), then reports the attempt's outcome with that permit:
`success`, `failure` (the provider is sick), `neutral` (says nothing about health: a bad request, a
cancelled hedge) or `hold_off` (the provider asked us to stay away). In half-open exactly one
permit is the trial, and only that permit's outcome ends the trial: a call admitted earlier, while
the breaker was still closed, can't free the slot by finishing or being cancelled. A cooldown is
never shortened by a later, shorter one, and never exceeds `max_cooldown`; a successful active
probe (`probe_succeeded`) lets an open breaker try a real call at once. Time comes from an
injectable clock, so tests advance it instead of sleeping. Each change of state is emitted as the
metrics' `TransitionEvent`.

Why not pybreaker (decided in issue 9). Until then this module wrapped pybreaker 1.4.1 but never
called through it: its `call()` holds one lock for the whole call (serialising every session) and
can't see a failure inside a stream, and `with cb.calling()` admits several half-open trials.
So pybreaker kept only a state name, a counter and listener calls, while the rules that matter
here (Retry-After cooldowns, the trial permit, hold-off, probes) lived in fields shadowing it: two
sources of truth for one state. Its storage seam doesn't fit what comes next either: issue 10
shares breakers across replicas ("opened on A is open on B within 1 s", "the fleet sends exactly
ONE half-open trial at a time"). `CircuitRedisStorage` shares only pybreaker's part (state,
counters, opened_at; not our cooldown or the trial's owner), reads Redis on every state access,
has no compare-and-set to claim the trial atomically, runs SETNX in its constructor (so it raises
when Redis is down) and breaks under `decode_responses=True`. So the breaker is our own, and the
seam is ours too:

- The whole state of a breaker is one immutable `BreakerState` record.
- Every operation is a pure function from (record, now) to a new record, applied through
  `BreakerStore.update(name, change)`, which must apply it atomically and may call `change` again
  if another writer got in first.
- `MemoryBreakerStore` (one process) is a dict under a lock. A shared store (issue 10) can serve
  `read` from a local copy that pub/sub keeps fresh, answer an `update` whose `change` leaves the
  record as it is (the common case: a closed breaker admitting a call) without a round trip, and
  write the others with compare-and-set on Redis. Claiming the trial is such a write (`trial`
  goes from None to the permit's token), so exactly one replica wins it. Times in the record are
  on the breaker's clock: replicas sharing a store need a clock they share.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from .metrics import OPERATOR_RESET, TransitionEvent

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


@dataclass(frozen=True)
class BreakerState:
    """Everything a breaker knows; what a shared store shares."""

    state: str = CLOSED
    failures: int = 0  # consecutive health failures while closed
    open_until: float = 0.0  # while open: when the cooldown ends (the breaker's clock)
    cooldown: float = 0.0  # while open: the cooldown it was opened with, for the transition event
    reason: str = ""  # why it entered this state
    trial: str | None = None  # while half-open: the token of the trial permit in flight
    asked_until: float = 0.0  # while open: until when the provider itself asked us to stay away


@dataclass(frozen=True, eq=False)  # eq=False: each permit is only ever equal to itself
class Permit:
    """Leave to make one call, returned by `Breaker.allow()`; the call reports its outcome with it."""

    trial: bool  # the half-open trial call
    token: str | None = None  # names the trial in `BreakerState.trial`


class BreakerStore(Protocol):
    """Where breaker states live. `update` is atomic; `change` is pure and may run more than once."""

    def read(self, name: str) -> BreakerState: ...

    def update(self, name: str, change: Callable[[BreakerState], BreakerState]) -> tuple[BreakerState, BreakerState]:
        """Apply `change` to the current record; return (old, new)."""
        ...


class MemoryBreakerStore:
    """Breaker states in this process."""

    def __init__(self) -> None:
        self._states: dict[str, BreakerState] = {}
        self._lock = threading.Lock()

    def read(self, name: str) -> BreakerState:
        with self._lock:
            return self._states.get(name, _CLOSED)

    def update(self, name: str, change: Callable[[BreakerState], BreakerState]) -> tuple[BreakerState, BreakerState]:
        with self._lock:
            old = self._states.get(name, _CLOSED)
            new = change(old)
            if new is not old:
                self._states[name] = new
            return old, new


_CLOSED = BreakerState()


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
        wall: Callable[[], float],
        on_transition: Callable[[TransitionEvent], None] = lambda t: None,
        store: BreakerStore | None = None,
    ) -> None:
        self.name = name
        self.fail_max = fail_max
        self.reset_timeout = reset_timeout
        self.max_cooldown = max_cooldown
        self._clock = clock
        self._wall = wall  # stamps transition events, like every other metrics event
        self._on_transition = on_transition
        self._store = store or MemoryBreakerStore()
        self._lock = threading.Lock()  # emits this breaker's transitions in the order they happened

    # -- reading ---------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """CLOSED, OPEN or HALF_OPEN. An open breaker whose cooldown is over stays open until the
        next `allow()` makes it half-open."""
        return self._store.read(self.name).state

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a trial call through (0 when not open)."""
        s = self._store.read(self.name)
        return max(0.0, s.open_until - self._clock()) if s.state == OPEN else 0.0

    # -- deciding --------------------------------------------------------------------------------
    def allow(self) -> Permit | None:
        """May a call go to this provider now? A permit (report the outcome with it) or None.
        In half-open, exactly one trial call may."""
        now, token = self._clock(), _new_token()

        def change(s: BreakerState) -> BreakerState:
            if s.state == CLOSED or (s.state == OPEN and now < s.open_until):
                return s
            if s.state == OPEN:
                return BreakerState(HALF_OPEN, reason="cooldown over: one trial call", trial=token)
            return s if s.trial is not None else replace(s, trial=token)

        old, new = self._update(change)
        if new.state == CLOSED:
            return Permit(trial=False)
        return Permit(trial=True, token=token) if new.trial == token else None

    # -- recording -------------------------------------------------------------------------------
    # In half-open only the trial's own permit decides; any other call's outcome is older news.
    def success(self, permit: Permit | None = None) -> None:
        def change(s: BreakerState) -> BreakerState:
            if s.state == HALF_OPEN:
                return BreakerState(reason="trial call succeeded") if _is_trial(permit, s) else s
            if s.state == OPEN:
                return BreakerState(reason="a call in flight succeeded")
            return replace(s, failures=0) if s.failures else s  # failures count *consecutively*

        self._update(change)

    def failure(self, reason: str, *, retry_after: float | None = None, permit: Permit | None = None) -> None:
        """A health failure (the provider is sick). A long Retry-After opens the breaker at once."""
        now = self._clock()
        cooldown = self.reset_timeout
        asked = 0.0
        if retry_after is not None:
            cooldown = min(self.max_cooldown, max(cooldown, retry_after))
            asked = now + min(self.max_cooldown, retry_after)

        def change(s: BreakerState) -> BreakerState:
            if s.state == HALF_OPEN:
                return _opened(now, cooldown, f"trial call failed: {reason}", asked) if _is_trial(permit, s) else s
            if s.state == OPEN:
                return _extended(s, now + cooldown, asked)
            if s.failures + 1 >= self.fail_max:
                return _opened(now, cooldown, f"{s.failures + 1} failures in a row, last: {reason}", asked)
            return replace(s, failures=s.failures + 1)

        self._update(change)

    def hold_off(self, seconds: float, reason: str, *, permit: Permit | None = None) -> None:
        """Keep the provider out for `seconds` (it asked us to, e.g. a long Retry-After)."""
        now = self._clock()
        seconds = min(self.max_cooldown, seconds)

        def change(s: BreakerState) -> BreakerState:
            if s.state == OPEN:
                return _extended(s, now + seconds, now + seconds)
            if s.state == CLOSED or _is_trial(permit, s):
                return _opened(now, seconds, reason, now + seconds)
            return s

        self._update(change)

    def neutral(self, permit: Permit | None = None) -> None:
        """The call ended in a way that says nothing about health (e.g. a bad request or a
        cancelled hedge). If it was the trial, its slot is given back, state unchanged; any other
        call's neutral ending leaves the trial in flight alone."""
        self._update(lambda s: replace(s, trial=None) if _is_trial(permit, s) else s)

    def probe_succeeded(self) -> None:
        """An active health probe got through: an open breaker may try a real call right away,
        except while the provider's own asked-for wait lasts (a probe can't say a limit reset)."""
        now = self._clock()

        def change(s: BreakerState) -> BreakerState:
            until = max(now, s.asked_until)
            return replace(s, open_until=until) if s.state == OPEN and s.open_until > until else s

        self._update(change)

    def reset(self) -> None:
        """Close and forget the failures counted so far (an operator's button). Emitted even when
        the breaker was closed already: health forgets the provider's results from before it."""
        self._update(lambda s: BreakerState(reason=OPERATOR_RESET), announce=True)

    # -- internals -------------------------------------------------------------------------------
    def _update(self, change: Callable[[BreakerState], BreakerState], *, announce: bool = False
                ) -> tuple[BreakerState, BreakerState]:
        with self._lock:
            old, new = self._store.update(self.name, change)
            if old.state != new.state or announce:
                cooldown = new.cooldown if new.state == OPEN else 0.0
                self._on_transition(TransitionEvent(self._wall(), self.name, old.state, new.state, new.reason,
                                                    cooldown))
        return old, new


_TOKENS = itertools.count()
_PROCESS = uuid.uuid4().hex[:12]  # trial tokens are unique across replicas too


def _new_token() -> str:
    return f"{_PROCESS}-{next(_TOKENS)}"


def _is_trial(permit: Permit | None, s: BreakerState) -> bool:
    return permit is not None and s.trial is not None and permit.token == s.trial


def _opened(now: float, cooldown: float, reason: str, asked: float = 0.0) -> BreakerState:
    # A trial ends when the breaker leaves half-open; the failure count starts again once it closes.
    return BreakerState(OPEN, open_until=now + cooldown, cooldown=cooldown, reason=reason, asked_until=asked)


def _extended(s: BreakerState, until: float, asked: float = 0.0) -> BreakerState:
    """An open breaker's cooldown (and the provider's own asked-for wait) is only ever lengthened."""
    if until <= s.open_until and asked <= s.asked_until:
        return s
    return replace(s, open_until=max(until, s.open_until), asked_until=max(asked, s.asked_until))
