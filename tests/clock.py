"""Time for tests: a clock that stands still until the test moves it, and waiting on state."""

from __future__ import annotations

import random
import sys
import threading
import time


class ManualClock:
    """Give it to a Router (`clock=`) and every duration the router measures or waits for (elapsed_ms,
    breaker cooldowns, retry waits, hedge delays, the request deadline) is exact whatever the machine's
    load: nothing the router waits for on this clock happens until the test advances it."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


class FakeClock:
    """A clock that runs at real speed and that a test can jump forward (breaker cooldowns,
    cache TTLs): waits inside the router still pass, and minutes pass in an instant."""

    def __init__(self) -> None:
        self.offset = 1000.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    @property
    def now(self) -> float:
        return self()

    def advance(self, seconds: float) -> None:
        self.offset += seconds


class NoJitter(random.Random):
    """Backoff jitter of zero, so a retry is due at once even on a clock that stands still."""

    def uniform(self, a: float, b: float) -> float:
        return a


def wait_until(condition, what: str, timeout: float = 30.0) -> None:
    """Wait for state another thread changes. The timeout only turns a hang into a failure."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.005)


def inside(thread: threading.Thread, function) -> bool:
    """Is `thread` running `function` right now (e.g. blocked in it, waiting on a condition)? Reads
    the thread's stack; changes nothing."""
    frame = sys._current_frames().get(thread.ident)
    while frame is not None:
        if frame.f_code is function.__code__:
            return True
        frame = frame.f_back
    return False


def finishes(target, what: str, timeout: float = 30.0):
    """Run `target()` in a thread and return its value; fail (rather than hang) if it never returns,
    e.g. because it waits on a ManualClock that the test never advances."""
    got: list = []
    thread = threading.Thread(target=lambda: got.append(target()), daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"{what} never finished: it waited on the clock"
    return got[0]
